package fleet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// RawBuffer is a raw watcher's client buffer: its packets are a short
// listing or one record, so 64 KiB rather than the client's 1.5 MiB each
// way keeps 10 000 sessions small.
const RawBuffer = 64 << 10

// RawWatchers is the raw ZooKeeper fan-out the registry is measured
// against: n plain sessions, each with a child watch on one parent node.
// Each time its watch fires, a session lists the parent once (re-arming
// the watch) and reads once the node the benchmark names as the change,
// then reports it. No registry, no buckets, no lease read.
type RawWatchers struct {
	conns  []*zk.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// RawChange is what a session reads after its watch fires: the node, and
// what to call with the listing and the node's data once it has them. An
// empty node is no change to report (the benchmark removing its last
// child): the session only lists, which sets its watch again.
type RawChange func() (node string, read func(children []string, data []byte))

// WatchRaw opens the n sessions, session i to addrs(i), at most parallel
// setting their watch at once, and returns when every watch is set. Close
// ends them.
func WatchRaw(ctx context.Context, n, parallel int, session time.Duration, addrs func(i int) []string, parent string, change RawChange) (*RawWatchers, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &RawWatchers{conns: make([]*zk.Conn, n), cancel: cancel, errs: make(chan error, n)}
	var armed atomic.Int64
	sem := make(chan struct{}, parallel)
	for i := range w.conns {
		conn, _, err := zk.Connect(addrs(i), session, zk.WithLogInfo(false),
			zk.WithMaxBufferSize(RawBuffer), zk.WithMaxConnBufferSize(RawBuffer))
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("session %d: %w", i, err)
		}
		w.conns[i] = conn
		sem <- struct{}{}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			_, _, ev, err := conn.ChildrenW(parent)
			<-sem
			if err != nil {
				w.errs <- fmt.Errorf("session %d: watch %s: %w", i, parent, err)
				return
			}
			armed.Add(1)
			for {
				select {
				case <-ctx.Done():
					return
				case <-ev:
				}
				children, _, next, err := conn.ChildrenW(parent)
				if err != nil {
					w.errs <- fmt.Errorf("session %d: list %s: %w", i, parent, err)
					return
				}
				node, read := change()
				if node == "" {
					ev = next // an untimed clean-up: the listing re-armed the watch
					continue
				}
				data, _, err := conn.Get(node)
				if err != nil {
					w.errs <- fmt.Errorf("session %d: read %s: %w", i, node, err)
					return
				}
				read(children, data)
				ev = next
			}
		}()
	}
	// Every session's watch is set before the first change.
	for armed.Load() < int64(n) {
		select {
		case err := <-w.errs:
			w.Close()
			return nil, err
		case <-ctx.Done():
			w.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return w, nil
}

// Errs reports the first failure of each session that failed.
func (w *RawWatchers) Errs() <-chan error { return w.errs }

// Close ends the sessions, in parallel (each close is a write through
// ZooKeeper's log), and waits for their loops: a loop inside a request
// returns with the closed connection's error.
func (w *RawWatchers) Close() {
	w.cancel()
	Each(len(w.conns), 256, func(i int) {
		if w.conns[i] != nil {
			w.conns[i].Close()
		}
	})
	w.wg.Wait()
}
