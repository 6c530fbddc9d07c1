package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/registry"
)

// lightHosts make up the rest of a fleet whose views would not fit in
// this process (each registry holds every host: about 40 GB at 10 000).
// Each is its own session, registered as its meshd leaves it (lease,
// owner, an ephemeral record of its session), and holds the registry's
// 256 bucket watches, listing a bucket again (re-arming its watch) when
// the watch fires. They keep no view and read no record. To ZooKeeper
// they are hosts - sessions, ephemerals, watches, a reconnect after a
// restart - so the restart phase runs against N + M sessions; removals
// are counted at the N registries, which see every light host.
type lightHosts struct {
	root  string
	conns []*zk.Conn
	hosts []registry.Host
	// fired carries each session's fired bucket watches (their paths) to
	// its one goroutine: a goroutine per watch would be 2.5 M of them.
	fired  []chan string
	ctx    context.Context // ends with close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// relists counts listings after a watch fired, for the phase's report.
	relists atomic.Int64
}

// openLight connects m sessions for hosts first .. first+m-1 and
// registers each. Their watches are set by arm, once the registries have
// read them: set earlier, every registry's own registration would make
// all m list a bucket again.
func openLight(ctx context.Context, addrs []string, root string, first, m int, c config) (*lightHosts, error) {
	ctx, cancel := context.WithCancel(ctx)
	l := &lightHosts{root: root, conns: make([]*zk.Conn, m), hosts: make([]registry.Host, m),
		fired: make([]chan string, m), ctx: ctx, cancel: cancel}
	for i := range m {
		// At most 256 watches are pending per session, one per bucket.
		l.fired[i] = make(chan string, registry.Buckets)
		conn, _, err := zk.Connect(addrs, c.session, zk.WithLogInfo(false),
			zk.WithMaxBufferSize(fleet.RawBuffer), zk.WithMaxConnBufferSize(fleet.RawBuffer),
			zk.WithEventCallback(func(ev zk.Event) {
				if ev.Type == zk.EventNodeChildrenChanged {
					l.fired[i] <- ev.Path
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
		// The lease and owner are persistent: any session may write them.
		if err := fleet.Claim(l.conns[i], root, l.hosts[i]); err != nil {
			errs[i] = fmt.Errorf("light host %d: %w", i, err)
		} else if _, err := fleet.PublishRecord(l.conns[i], root, l.hosts[i]); err != nil {
			errs[i] = fmt.Errorf("light host %d: record: %w", i, err)
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
	ctx := l.ctx
	errs := make([]error, len(l.conns))
	fleet.Each(len(l.conns), parallel, func(i int) {
		for b := range registry.Buckets {
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				return
			}
			if _, _, _, err := l.conns[i].ChildrenW(fmt.Sprintf("%s/hosts/%02x", l.root, b)); err != nil {
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
// listing that fails with the connection is retried when the next watch
// fires; go-zookeeper sets a session's armed watches again itself after a
// reconnect.
func (l *lightHosts) follow(i int) {
	defer l.wg.Done()
	for {
		select {
		case <-l.ctx.Done():
			return
		case p := <-l.fired[i]:
			if _, _, _, err := l.conns[i].ChildrenW(p); err == nil {
				l.relists.Add(1)
			}
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
