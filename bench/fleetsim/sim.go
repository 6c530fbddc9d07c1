package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/registry"
)

// settle is the pause after a change is everywhere before the next one:
// its tail traffic lands inside its window, and the next starts quiet.
const settle = 500 * time.Millisecond

// sim is the simulated fleet: N registries, each a host that registered
// itself and watches all others, and a writer, one more host, that makes
// the changes.
type sim struct {
	addrs []string
	mesh  string
	cfg   config
	zk    *zkProc

	mu     sync.Mutex
	hosts  []*watcher
	writer *watcher

	light  *lightHosts            // hosts without a view, if any (-light)
	target atomic.Pointer[change] // the change being timed, if any
	stamps *zk.Conn               // reads when a change's record was made (committed); the churn's alone
}

// watcher is one simulated host: its registry and what its view holds.
type watcher struct {
	reg   *registry.Registry
	host  registry.Host
	known atomic.Int64 // hosts in its view, from its events
	// Events of each kind ever, for the restart phase's counts.
	added, removed atomic.Int64
	stop           chan struct{}
	done           chan struct{}
}

func (s *sim) options(h registry.Host) registry.Options {
	return registry.Options{Servers: s.addrs, Mesh: s.mesh, Pool: fleet.Pool,
		SessionTimeout: s.cfg.session, Self: h, ChildWatches: s.cfg.childWatches}
}

// start opens host i's registry, registers it and follows its events,
// as meshd's reconciler would, with the timed change looked for in them.
func (s *sim) start(ctx context.Context, i int, timed bool) (*watcher, error) {
	h := fleet.Host(i)
	var w *watcher
	var err error
	// Every goroutine started here (the session's, the buckets', the
	// follower) carries the label, so the churn profile splits by side.
	pprof.Do(ctx, sideOurs, func(ctx context.Context) {
		var reg *registry.Registry
		if reg, err = registry.Open(ctx, s.options(h)); err != nil {
			return
		}
		w = &watcher{reg: reg, host: h, stop: make(chan struct{}), done: make(chan struct{})}
		go w.follow(s, timed)
	})
	return w, err
}

func (w *watcher) follow(s *sim, timed bool) {
	defer close(w.done)
	var reported *change
	for {
		select {
		case <-w.stop:
			return
		case ev := <-w.reg.Events():
			switch ev.Kind {
			case registry.Added:
				w.known.Add(1)
				w.added.Add(1)
			case registry.Removed:
				w.known.Add(-1)
				w.removed.Add(1)
			}
			if !timed {
				continue
			}
			if c := s.target.Load(); c != nil && c != reported && c.matches(ev) {
				reported = c
				c.seen()
			}
		}
	}
}

// closeWatcher ends a host: its record goes if ZooKeeper still runs.
func (w *watcher) close() {
	w.reg.Close()
	close(w.stop)
	<-w.done
}

// open starts n hosts, parallel but bounded, each registering itself, and
// waits until every view holds all n. It stops early, saying where, when
// this process outgrows cfg.maxRSS or the setup outlasts cfg.setupTimeout.
func (s *sim) open(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.setupTimeout)
	defer cancel()
	s.hosts = make([]*watcher, n)
	began := time.Now()
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
		opened  atomic.Int64
	)
	fail := func(err error) { errOnce.Do(func() { first = err; cancel() }) }
	sem := make(chan struct{}, s.cfg.parallel)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if i%10 == 0 {
			if u, err := fleet.ReadUsage(0); err == nil && u.RSS > s.cfg.maxRSS {
				fail(fmt.Errorf("stopped at %d of %d hosts: this process holds %.0f MiB (limit %d MiB)", i, n, fleet.MiB(u.RSS), s.cfg.maxRSS>>20))
				break
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w, err := s.start(ctx, i, true)
			if err != nil {
				fail(fmt.Errorf("host %d: %w", i, err))
				return
			}
			// A host that errs after the setup limit ran out says nothing:
			// the limit is the news, said below.
			s.mu.Lock()
			s.hosts[i] = w
			s.mu.Unlock()
			if _, err := w.reg.Register(ctx, w.host, s.cfg.setupTimeout); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("register host %d: %w", i, err))
				return
			} else if err != nil {
				return
			}
			opened.Add(1)
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if ctx.Err() != nil {
		u, _ := fleet.ReadUsage(0)
		return fmt.Errorf("%d of %d hosts registered when the setup limit of %s ran out (this process %.0f MiB): %w",
			opened.Load(), n, s.cfg.setupTimeout, fleet.MiB(u.RSS), ctx.Err())
	}
	progress("all %d registered after %.1f s", n, time.Since(began).Seconds())
	if err := s.inStep(ctx, func() []*watcher { return s.hosts }, n+s.light.count(), "opened"); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%d of %d registered, not in step within %s: %w", opened.Load(), n, s.cfg.setupTimeout, err)
		}
		return err
	}
	return nil
}

// inStep waits until each watcher's view holds want hosts, saying how far
// they are every 10 s.
func (s *sim) inStep(ctx context.Context, ws func() []*watcher, want int, what string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		ready, least := 0, int64(want)
		for _, w := range ws() {
			k := w.known.Load()
			if k >= int64(want) {
				ready++
			}
			least = min(least, k)
		}
		if ready == len(ws()) {
			return nil
		}
		if time.Since(last) > 10*time.Second {
			u, _ := fleet.ReadUsage(0)
			z := s.zk.usage()
			progress("%s: %d of %d views hold all %d hosts (fewest %d); this process %.0f MiB, ZooKeeper %.0f MiB", what, ready, len(ws()), want, least, fleet.MiB(u.RSS), fleet.MiB(z.RSS))
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d views hold all %d hosts (fewest %d): %w", ready, len(ws()), want, least, ctx.Err())
		case <-tick.C:
		}
	}
}

// churn is the writer's side of the timed changes: one more host (index
// n) joins, changes its endpoint, leaves, and again. Before each join it
// has opened and read the fleet, as a starting meshd would, so that the
// timed window holds the change alone.
type churn struct {
	s    *sim
	win  *windows
	host registry.Host
}

func (s *sim) churn() *churn {
	n := len(s.hosts)
	regs := make([]*registry.Registry, n)
	for i, h := range s.hosts {
		regs[i] = h.reg
	}
	return &churn{s: s, win: &windows{zk: s.zk, counters: func() (int64, int64) {
		req, bytes := fleet.Totals(regs)
		lreq, lbytes := s.light.totals()
		return req + lreq, bytes + lbytes
	}}}
}

// change makes and times change c: a join, an endpoint change or a leave
// as c counts up.
func (k *churn) change(ctx context.Context, c int) (*change, error) {
	s, n := k.s, len(k.s.hosts)
	if c%3 == 0 {
		if err := s.openWriter(ctx, n); err != nil {
			return nil, err
		}
		k.host = s.writer.host
	}
	ch := newChange(n + s.light.count())
	ch.id = k.host.InstanceID
	time.Sleep(settle)
	k.win.begin()
	var err error
	switch c % 3 {
	case 0:
		ch.kind = registry.Added
		err = s.timed(ch, func() error { _, err := s.writer.reg.Register(ctx, k.host, 30*time.Second); return err })
	case 1:
		// A new public endpoint each time, in the testbed's range.
		k.host.PublicIP = netip.AddrFrom4([4]byte{198, 19, byte(1 + c/250), byte(1 + c%250)})
		ch.kind, ch.publicIP = registry.Updated, k.host.PublicIP
		err = s.timed(ch, func() error { s.writer.reg.UpdateSelf(k.host); return nil })
	case 2:
		ch.kind = registry.Removed
		err = s.timed(ch, func() error { s.writer.close(); s.writer = nil; return nil })
	}
	if err == nil {
		err = ch.wait(ctx, s.cfg.changeTimeout)
	}
	s.target.Store(nil)
	if err != nil {
		return ch, fmt.Errorf("change %d: %w", c, err)
	}
	time.Sleep(settle)
	k.win.end(ch)
	if ch.kind != registry.Removed {
		k.win.commit(s.committed(ch))
	}
	return ch, nil
}

// committed is how long after ch's start ZooKeeper stamped the writer's
// record node (its ctime, to the millisecond): the writer's part of the
// change - its lease reads and publish, and the server taking the write -
// against the fan-out's after it. Read after the change's window, on a
// session of its own; 0 if it cannot be read.
func (s *sim) committed(ch *change) time.Duration {
	if s.stamps == nil {
		c, _, err := zk.Connect(s.addrs, 10*time.Second, zk.WithLogInfo(false))
		if err != nil {
			return 0
		}
		s.stamps = c
	}
	bucket := fleet.BucketPath("/meshd/"+s.mesh, ch.id)
	names, _, err := s.stamps.Children(bucket)
	if err != nil {
		return 0
	}
	newest := ""
	for _, n := range names {
		if strings.HasPrefix(n, ch.id+"#") && n > newest {
			newest = n
		}
	}
	if newest == "" {
		return 0
	}
	_, st, err := s.stamps.Get(path.Join(bucket, newest))
	if err != nil {
		return 0
	}
	return time.UnixMilli(st.Ctime).Sub(ch.start)
}

func (k *churn) fanout() Fanout { return k.win.fanout() }

// timed makes ch the change looked for, then makes it.
func (s *sim) timed(ch *change, do func() error) error {
	ch.start = time.Now()
	s.target.Store(ch)
	return do()
}

// openWriter starts the writer and waits until it has read the fleet.
func (s *sim) openWriter(ctx context.Context, n int) error {
	if s.writer != nil {
		return nil
	}
	w, err := s.start(ctx, n, false)
	if err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	s.writer = w
	wctx, cancel := context.WithTimeout(ctx, s.cfg.setupTimeout)
	defer cancel()
	return s.inStep(wctx, func() []*watcher { return []*watcher{w} }, n+s.light.count(), "writer")
}

// close stops ZooKeeper, then the registries: with no server a Close
// removes nothing, so the fleet's departure is no storm of changes.
func (s *sim) close(stopZK func()) {
	if s.stamps != nil {
		s.stamps.Close()
	}
	stopZK()
	if s.light != nil {
		s.light.close()
	}
	all := append(s.hosts, s.writer)
	fleet.Each(len(all), 256, func(i int) {
		if all[i] != nil {
			all[i].close()
		}
	})
}
