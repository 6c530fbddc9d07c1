package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/registry"
	"github.com/meshd/meshd/registry/zkext"
)

// lightHosts make up the rest of a fleet whose views would not fit in
// this process (each registry holds every host: about 40 GB at 10 000).
// Each is its own session, registered as its meshd leaves it (lease,
// owner, an ephemeral record of its session), and watches as a registry
// does: one persistent recursive watch on the hosts tree, added again
// after every reconnect by a setWatches2 that lists the buckets changed
// meanwhile (with -child-watches, the 256 bucket watches instead, listing
// a bucket again, which re-arms its watch, when the watch fires). They
// keep no view. To ZooKeeper they are hosts - sessions, ephemerals,
// watches, a reconnect after a restart - so the restart phase runs
// against N + M sessions; removals are counted at the N registries,
// which see every light host.
//
// In the churn a light host has the timed change with a registry's
// requests: when the watch names the writer's new record (or, with child
// watches, its listing shows the writer's newest record changed), it
// reads that record once (raw's watchers read the node they are told of);
// a leave it has from the watch's event, or the listing, alone. It does
// none of the registry's work on what it read, so with light hosts the
// fan-out measures ZooKeeper's side of the layout, not the registry's.
type lightHosts struct {
	root  string
	conns []*zk.Conn
	hosts []registry.Host
	// fired carries each session's fired bucket watches (their paths) to
	// its one goroutine: a goroutine per watch would be 2.5 M of them.
	fired []chan string
	// With the persistent watch: each session's events of the hosts tree,
	// and its new connections (the watch is added again).
	events    []chan zk.Event
	connected []chan struct{}
	// catchUp: session i's setWatches2 is in flight (its child watches
	// firing are buckets to list); seen: the zxid session i has every
	// event up to, as a registry keeps it.
	catchUp []atomic.Bool
	seen    []int64
	// dropped counts events a full channel lost (the report says so).
	dropped atomic.Int64
	follows bool            // the persistent watch, not bucket watches
	ctx     context.Context // ends with close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// relists counts listings after a watch fired, for the phase's report;
	// requests and payload every listing and read after a watch fired,
	// and the bytes of names and records they brought, as
	// registry.Stats counts a registry's.
	relists, requests, payload atomic.Int64
	// target is the change being timed, if any; per host, the writer's
	// record node it last read and the change it last reported.
	target   func() *change
	last     []string
	reported []*change
}

// openLight connects m sessions for hosts first .. first+m-1 and
// registers each. Their watches are set by arm, once the registries have
// read them: set earlier, every registry's own registration would make
// all m list a bucket again.
func openLight(ctx context.Context, addrs []string, root string, first, m int, c config, target func() *change) (*lightHosts, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &lightHosts{root: root, conns: make([]*zk.Conn, m), hosts: make([]registry.Host, m),
		fired: make([]chan string, m), ctx: ctx, cancel: cancel, follows: !c.childWatches,
		events: make([]chan zk.Event, m), connected: make([]chan struct{}, m),
		catchUp: make([]atomic.Bool, m), seen: make([]int64, m),
		target: target, last: make([]string, m), reported: make([]*change, m)}
	for i := range m {
		// At most 256 watches are pending per session, one per bucket,
		// so the callback, on the client's receive loop, never blocks.
		l.fired[i] = make(chan string, registry.Buckets)
		l.events[i], l.connected[i] = make(chan zk.Event, 1024), make(chan struct{}, 1)
		hosts := root + "/hosts/"
		queue := func(ev zk.Event) { // never blocks the client's receive loop
			select {
			case l.events[i] <- ev:
			default:
				l.dropped.Add(1)
			}
		}
		conn, _, err := zk.Connect(addrs, c.session, zk.WithLogInfo(false),
			zk.WithMaxBufferSize(fleet.RawBuffer), zk.WithMaxConnBufferSize(fleet.RawBuffer),
			zk.WithEventCallback(func(ev zk.Event) {
				switch {
				case ev.Type == zk.EventNodeChildrenChanged && !l.follows:
					l.fired[i] <- ev.Path
				case ev.Type == zk.EventNodeChildrenChanged && l.catchUp[i].Load():
					queue(ev)
				case ev.Type == zk.EventSession && ev.State == zk.StateHasSession:
					select {
					case l.connected[i] <- struct{}{}:
					default:
					}
				case (ev.Type == zk.EventNodeCreated || ev.Type == zk.EventNodeDeleted) && strings.HasPrefix(ev.Path, hosts):
					queue(ev)
				}
			}))
		if err != nil {
			l.close()
			return nil, fmt.Errorf("light host %d: %w", i, err)
		}
		l.conns[i] = conn
		l.hosts[i] = fleet.Host(first + i)
	}
	if err := fleet.Parents(l.conns[0], root); err != nil {
		l.close()
		return nil, err
	}
	errs := make([]error, m)
	fleet.Each(m, c.parallel, func(i int) {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			return
		}
		// The record is an ephemeral of the host's own session.
		if _, err := fleet.Register(l.conns[i], root, l.hosts[i]); err != nil {
			errs[i] = fmt.Errorf("light host %d: %w", i, err)
		}
	})
	if err := errors.Join(errs...); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// arm sets every session's 256 bucket watches and starts the goroutines
// that list a bucket again when its watch fires.
func (l *lightHosts) arm(parallel int) error {
	if l.follows {
		return l.armTree(parallel)
	}
	ctx := l.ctx
	errs := make([]error, len(l.conns))
	fleet.Each(len(l.conns), parallel, func(i int) {
		for b := range registry.Buckets {
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				return
			}
			if _, _, _, err := l.conns[i].ChildrenW(fleet.Bucket(l.root, b)); err != nil {
				errs[i] = fmt.Errorf("light host %d: watch bucket %02x: %w", i, b, err)
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i := range l.conns {
		l.wg.Add(1)
		go l.follow(i)
	}
	return nil
}

// follow lists each bucket whose watch fired, which arms it again. A
// listing that fails (the connection) armed nothing, so it is tried again
// a moment later; go-zookeeper sets a session's armed watches again
// itself after a reconnect.
func (l *lightHosts) follow(i int) {
	defer l.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case p := <-l.fired[i]:
			children, _, _, err := l.conns[i].ChildrenW(p)
			if err != nil {
				select {
				case <-l.ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				// Its place in the channel is free: p was taken from it.
				l.fired[i] <- p
				continue
			}
			l.relists.Add(1)
			l.requests.Add(1)
			for _, c := range children {
				l.payload.Add(int64(len(c)))
			}
			if ch := l.target(); ch != nil && ch != l.reported[i] && p == fleet.BucketPath(l.root, ch.id) {
				l.had(i, ch, p, children)
			}
		}
	}
}

// had reports change ch at light host i if the listing of its bucket
// shows it, reading the writer's new record first as a registry would.
func (l *lightHosts) had(i int, ch *change, bucket string, children []string) {
	newest := ""
	for _, c := range children {
		if strings.HasPrefix(c, ch.id+"#") && c > newest {
			newest = c
		}
	}
	switch {
	case ch.kind == registry.Removed && newest == "":
	case ch.kind != registry.Removed && newest != "" && newest != l.last[i]:
		data, _, err := l.conns[i].Get(path.Join(bucket, newest))
		l.requests.Add(1)
		if err != nil {
			return // gone meanwhile: its successor fires the watch
		}
		l.payload.Add(int64(len(data)))
		l.last[i] = newest
	default:
		return
	}
	l.reported[i] = ch
	ch.seen()
}

// armTree adds each session's persistent watch on the hosts tree and
// starts the goroutines that follow it.
func (l *lightHosts) armTree(parallel int) error {
	errs := make([]error, len(l.conns))
	fleet.Each(len(l.conns), parallel, func(i int) {
		select {
		case <-l.connected[i]: // the first connection's: the watch is added here
		default:
		}
		z, err := zkext.AddRecursiveWatch(l.conns[i], l.root+"/hosts")
		if err != nil {
			errs[i] = fmt.Errorf("light host %d: watch the hosts tree: %w", i, err)
		}
		l.seen[i] = z
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i := range l.conns {
		l.wg.Add(1)
		go l.followTree(i)
	}
	return nil
}

// followTree has the timed change from the watch's events: the writer's
// new record is read once, a leave taken from its delete. After a
// reconnect it adds the watch again with the buckets' child watches
// relative to the last zxid it has every event of, as a registry does,
// and lists the buckets the server says changed since.
func (l *lightHosts) followTree(i int) {
	defer l.wg.Done()
	buckets := make([]string, registry.Buckets)
	for b := range buckets {
		buckets[b] = fleet.Bucket(l.root, b)
	}
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.connected[i]:
			l.catchUp[i].Store(true)
			z, err := zkext.SetWatches(l.conns[i], l.seen[i], buckets, []string{l.root + "/hosts"})
			l.catchUp[i].Store(false)
			l.requests.Add(1)
			if err == nil {
				l.seen[i] = max(l.seen[i], z)
			}
		case ev := <-l.events[i]:
			l.payload.Add(int64(len(ev.Path)))
			if ev.Type == zk.EventNodeChildrenChanged {
				children, _, err := l.conns[i].Children(ev.Path)
				l.requests.Add(1)
				if err == nil {
					l.relists.Add(1)
					for _, c := range children {
						l.payload.Add(int64(len(c)))
					}
				}
				continue
			}
			ch := l.target()
			if ch == nil || ch == l.reported[i] || !strings.HasPrefix(path.Base(ev.Path), ch.id+"#") {
				continue
			}
			switch {
			case ch.kind == registry.Removed && ev.Type == zk.EventNodeDeleted:
			case ch.kind != registry.Removed && ev.Type == zk.EventNodeCreated:
				data, _, z, err := zkext.Get(l.conns[i], ev.Path)
				l.requests.Add(1)
				if err != nil {
					continue // gone meanwhile: its successor is another event
				}
				l.seen[i] = max(l.seen[i], z)
				l.payload.Add(int64(len(data)))
			default:
				continue
			}
			l.reported[i] = ch
			ch.seen()
		}
	}
}

// count is how many light hosts there are (none: nil).
func (l *lightHosts) count() int {
	if l == nil {
		return 0
	}
	return len(l.conns)
}

// totals are the light hosts' requests and payload bytes (none: 0).
func (l *lightHosts) totals() (req, bytes int64) {
	if l == nil {
		return 0, 0
	}
	return l.requests.Load(), l.payload.Load()
}

// relisted is how many listings followed a fired watch (none: 0).
func (l *lightHosts) relisted() int64 {
	if l == nil {
		return 0
	}
	return l.relists.Load()
}

// notConnected counts the sessions without a session now.
func (l *lightHosts) notConnected() int {
	if l == nil {
		return 0
	}
	n := 0
	for _, c := range l.conns {
		if c.State() != zk.StateHasSession {
			n++
		}
	}
	return n
}

// close ends the sessions, in parallel (each waits for its close request).
func (l *lightHosts) close() {
	l.cancel()
	fleet.Each(len(l.conns), 256, func(i int) {
		if l.conns[i] != nil {
			l.conns[i].Close()
		}
	})
	l.wg.Wait()
}
