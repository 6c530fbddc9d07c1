package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/pprof"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
)

// rawSide is the baseline: n plain sessions, each with a child
// watch on one node; per change one create under it, and the time until
// every session got the watch, listed the node once (re-arming the watch)
// and read the new child once. No registry, no buckets, no lease read.
//
// Its sessions stay open while the fleet opens and its changes alternate
// with ours (run in main.go), so that both sides are timed against the
// same server - the fleet's sessions and watches in it - and the same
// client process, heap and load: a ratio of two phases minutes apart
// measured the machine's drift as much as the registry.
type rawSide struct {
	n       int
	parent  string
	cfg     config
	writer  *zk.Conn
	watch   *fleet.RawWatchers
	record  []byte
	target  atomic.Pointer[change]
	win     *windows
	created int
}

// rawWarmup is how many untimed changes come first.
const rawWarmup = 5

func openRaw(ctx context.Context, addrs []string, parent string, n int, c config, z *zkProc) (*rawSide, error) {
	w, _, err := zk.Connect(addrs, c.session, zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	if _, err := w.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		w.Close()
		return nil, fmt.Errorf("create %s: %w", parent, err)
	}
	r := &rawSide{n: n, parent: parent, cfg: c, writer: w}
	// A child as large as a host record: the read moves what ours does.
	r.record, _ = json.Marshal(fleet.Host(n))
	var requests, payload atomic.Int64
	pprof.Do(ctx, sideRaw, func(ctx context.Context) { r.watch, err = r.open(ctx, addrs, &requests, &payload) })
	if err != nil {
		w.Close()
		return nil, err
	}
	r.win = &windows{zk: z, counters: func() (int64, int64) { return requests.Load(), payload.Load() }}
	// The first changes after ZooKeeper starts wait for its JIT: they warm
	// it up, untimed, as the fleet's setup does for ours.
	for range rawWarmup {
		if _, err := r.change(ctx, false); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// open starts the n raw sessions; each reports its listing and read into
// requests and payload.
func (r *rawSide) open(ctx context.Context, addrs []string, requests, payload *atomic.Int64) (*fleet.RawWatchers, error) {
	return fleet.WatchRaw(ctx, r.n, r.cfg.parallel, r.cfg.session, func(int) []string { return addrs }, r.parent,
		func() (string, func([]string, []byte)) {
			ch := r.target.Load()
			if ch == nil {
				return "", nil
			}
			return ch.node, func(children []string, data []byte) {
				for start := time.Now(); time.Since(start) < r.cfg.rawSpin; {
				}
				requests.Add(2) // the listing and the read
				for _, name := range children {
					payload.Add(int64(len(name)))
				}
				payload.Add(int64(len(data)))
				ch.seen()
			}
		})
}

// change times one create until all n sessions have it; timed false
// leaves it out of the figures.
func (r *rawSide) change(ctx context.Context, timed bool) (*change, error) {
	ch := newChange(r.n)
	ch.node = fmt.Sprintf("%s/c%05d", r.parent, r.created)
	ch.id = ch.node
	r.created++
	time.Sleep(settle)
	r.win.begin()
	ch.start = time.Now()
	r.target.Store(ch)
	if _, err := r.writer.Create(ch.node, r.record, 0, zk.WorldACL(zk.PermAll)); err != nil {
		return ch, fmt.Errorf("create %s: %w", ch.node, err)
	}
	werr := ch.wait(ctx, r.cfg.changeTimeout)
	select {
	case err := <-r.watch.Errs():
		werr = errors.Join(werr, err)
	default:
	}
	if werr != nil {
		return ch, werr
	}
	time.Sleep(settle)
	if timed {
		r.win.end(ch)
	}
	// The node goes again, untimed, so that every change's listing holds
	// one name, as the raw fan-out does: left, the 100th change's
	// listing held 100 and the raw side slowed as the run went on.
	r.target.Store(nil)
	if err := r.writer.Delete(ch.node, -1); err != nil {
		return ch, fmt.Errorf("delete %s: %w", ch.node, err)
	}
	return ch, nil
}

func (r *rawSide) fanout() Fanout { return r.win.fanout() }

func (r *rawSide) close() {
	r.watch.Close()
	r.writer.Close()
}
