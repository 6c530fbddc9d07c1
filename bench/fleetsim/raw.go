package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
)

// rawFanout is the baseline: n plain sessions, each with a child
// watch on one node; per change one create under it, and the time until
// every session got the watch, listed the node once (re-arming the watch)
// and read the new child once. No registry, no buckets, no lease read.
// rawWarmup is how many untimed changes come first.
const rawWarmup = 5

func rawFanout(ctx context.Context, addrs []string, parent string, n int, c config, z *zkProc) (Fanout, error) {
	w, _, err := zk.Connect(addrs, c.session, zk.WithLogInfo(false))
	if err != nil {
		return Fanout{}, err
	}
	defer w.Close()
	if _, err := w.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		return Fanout{}, fmt.Errorf("create %s: %w", parent, err)
	}
	// A child as large as a host record: the read moves what ours does.
	record, _ := json.Marshal(fleet.Host(n))

	var target atomic.Pointer[change]
	var requests, payload atomic.Int64
	rw, err := fleet.WatchRaw(ctx, n, c.parallel, c.session, func(int) []string { return addrs }, parent,
		func() (string, func([]string, []byte)) {
			ch := target.Load()
			return ch.node, func(children []string, data []byte) {
				requests.Add(2) // the listing and the read
				for _, name := range children {
					payload.Add(int64(len(name)))
				}
				payload.Add(int64(len(data)))
				ch.seen()
			}
		})
	if err != nil {
		return Fanout{}, err
	}
	defer rw.Close()
	win := &windows{zk: z, counters: func() (int64, int64) { return requests.Load(), payload.Load() }}
	// The first changes after ZooKeeper starts wait for its JIT: they warm
	// it up, untimed, as the fleet's setup does for ours.
	for i := -rawWarmup; i < c.changes; i++ {
		ch := newChange(n)
		ch.node = fmt.Sprintf("%s/c%05d", parent, i+rawWarmup)
		ch.id = ch.node
		time.Sleep(settle)
		win.begin()
		ch.start = time.Now()
		target.Store(ch)
		if _, err := w.Create(ch.node, record, 0, zk.WorldACL(zk.PermAll)); err != nil {
			return win.fanout(), fmt.Errorf("create %s: %w", ch.node, err)
		}
		werr := ch.wait(ctx, c.changeTimeout)
		select {
		case err := <-rw.Errs():
			werr = errors.Join(werr, err)
		default:
		}
		if werr != nil {
			return win.fanout(), werr
		}
		time.Sleep(settle)
		if i >= 0 {
			win.end(ch)
		}
	}
	return win.fanout(), nil
}
