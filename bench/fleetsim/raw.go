package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
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

const rawBuffer = 64 << 10

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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]*zk.Conn, n)
	// In parallel: each close is a write through ZooKeeper's log.
	defer fleet.Each(n, 256, func(i int) {
		if conns[i] != nil {
			conns[i].Close()
		}
	})
	var wg sync.WaitGroup
	var armed atomic.Int64
	sem := make(chan struct{}, c.parallel)
	errs := make(chan error, n)
	for i := range conns {
		// Packets here are a short listing or one record: buffers of 64 KiB,
		// not the client's 1.5 MiB each way, keep 10 000 sessions small.
		conn, _, err := zk.Connect(addrs, c.session, zk.WithLogInfo(false),
			zk.WithMaxBufferSize(rawBuffer), zk.WithMaxConnBufferSize(rawBuffer))
		if err != nil {
			return Fanout{}, fmt.Errorf("session %d: %w", i, err)
		}
		conns[i] = conn
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, ev, err := conn.ChildrenW(parent)
			<-sem
			if err != nil {
				errs <- fmt.Errorf("session %d: watch %s: %w", i, parent, err)
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
					errs <- fmt.Errorf("session %d: list %s: %w", i, parent, err)
					return
				}
				requests.Add(1)
				for _, name := range children {
					payload.Add(int64(len(name)))
				}
				ch := target.Load()
				data, _, err := conn.Get(ch.node)
				if err != nil {
					errs <- fmt.Errorf("session %d: read %s: %w", i, ch.node, err)
					return
				}
				requests.Add(1)
				payload.Add(int64(len(data)))
				ch.seen()
				ev = next
			}
		}()
	}
	// Every session's watch is set before the first change.
	for armed.Load() < int64(n) {
		select {
		case err := <-errs:
			return Fanout{}, err
		case <-ctx.Done():
			return Fanout{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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
		case err := <-errs:
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
	cancel()
	wg.Wait()
	return win.fanout(), nil
}
