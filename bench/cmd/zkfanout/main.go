// Command zkfanout measures what the shape of a ZooKeeper fan-out costs,
// to tell what a registry built on it could reach (issue 17): N sessions
// watch, one change is made, and the time until all N have it is taken,
// for two shapes in turn against one server:
//
//   - list: each session has a child watch on a parent; the change is a
//     create under it; each session lists the parent (re-arming the
//     watch) and reads the new child - two requests, the raw
//     fan-out and the shape of meshd's registry;
//   - data: each session has a data watch on one node; the change is a
//     setData of a record's size; each session reads the node with a
//     watch - one request, which re-arms the watch and carries the data.
//
// Both sides' sessions are open throughout and their changes alternate,
// so a ratio of the two is taken under the same load.
//
//	go run ./bench/cmd/zkfanout -n 1000 -changes 60
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
)

// settle is the pause around each change: its tail lands in its window.
const settle = 500 * time.Millisecond

// round is one change being timed.
type round struct {
	start time.Time
	left  atomic.Int64
	done  chan struct{}
	took  time.Duration
}

func newRound(n int) *round {
	r := &round{done: make(chan struct{})}
	r.left.Store(int64(n))
	return r
}

func (r *round) seen() {
	if r.left.Add(-1) == 0 {
		r.took = time.Since(r.start)
		close(r.done)
	}
}

// side is one shape: its sessions, and how to make a change.
type side struct {
	name   string
	target atomic.Pointer[round]
	change func(i int) error
	lat    []time.Duration
	cpu    time.Duration // ZooKeeper's, over the windows
}

func main() {
	n := flag.Int("n", 1000, "watching sessions per shape")
	changes := flag.Int("changes", 60, "timed changes per shape")
	session := flag.Duration("session", 30*time.Second, "session timeout")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *n, *changes, *session); err != nil {
		fmt.Fprintln(os.Stderr, "zkfanout:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, changes int, session time.Duration) error {
	srv, err := zkserver.Start(ctx, zkserver.Options{Heap: "2g", Fsync: true})
	if err != nil {
		return err
	}
	defer srv.Stop()
	addrs := []string{srv.Addr()}
	w, _, err := zk.Connect(addrs, session, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer w.Close()
	record, _ := json.Marshal(fleet.Host(n)) // a host record's size
	acl := zk.WorldACL(zk.PermAll)
	for _, p := range []string{"/list", "/data"} {
		if _, err := w.Create(p, record, 0, acl); err != nil {
			return err
		}
	}

	list := &side{name: "list (child watch, list, read: 2 requests)"}
	created := 0
	list.change = func(int) error {
		node := fmt.Sprintf("/list/c%05d", created)
		created++
		_, err := w.Create(node, record, 0, acl)
		return err
	}
	lw, err := fleet.WatchRaw(ctx, n, 32, session, func(int) []string { return addrs }, "/list",
		func() (string, func([]string, []byte)) {
			r := list.target.Load()
			if r == nil {
				return "", nil
			}
			return fmt.Sprintf("/list/c%05d", created-1), func([]string, []byte) { r.seen() }
		})
	if err != nil {
		return err
	}
	defer lw.Close()

	data := &side{name: "data (data watch, read: 1 request)"}
	data.change = func(i int) error {
		_, err := w.Set("/data", append(record[:len(record):len(record)], byte('0'+i%10)), -1)
		return err
	}
	closeData, err := watchData(ctx, n, session, addrs, data)
	if err != nil {
		return err
	}
	defer closeData()

	pid := srv.PID()
	sides := []*side{list, data}
	for i := -5; i < changes; i++ { // 5 untimed first: the JIT
		for _, s := range sides {
			time.Sleep(settle)
			before, _ := fleet.ReadUsage(pid)
			r := newRound(n)
			r.start = time.Now()
			s.target.Store(r)
			if err := s.change(i + 5); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			select {
			case <-r.done:
			case <-time.After(time.Minute):
				return fmt.Errorf("%s: %d sessions without change %d after a minute", s.name, r.left.Load(), i)
			case <-ctx.Done():
				return ctx.Err()
			}
			time.Sleep(settle)
			if i >= 0 {
				after, _ := fleet.ReadUsage(pid)
				s.lat = append(s.lat, r.took)
				s.cpu += after.CPU - before.CPU
			}
			s.target.Store(nil)
			if s == list { // one name per listing, as in fleetsim; untimed
				if err := w.Delete(fmt.Sprintf("/list/c%05d", created-1), -1); err != nil {
					return err
				}
			}
		}
	}
	fmt.Printf("N = %d, %d changes per shape, in turn\n", n, changes)
	for _, s := range sides {
		fmt.Printf("%-45s p50 %6.1f ms  p99 %6.1f ms  ZK CPU %5.1f ms per change\n", s.name,
			fleet.Ms(fleet.Quantile(s.lat, 0.5)), fleet.Ms(fleet.Quantile(s.lat, 0.99)), fleet.Ms(s.cpu)/float64(len(s.lat)))
	}
	fmt.Printf("data / list: p50 %.2f, p99 %.2f\n",
		float64(fleet.Quantile(data.lat, 0.5))/float64(fleet.Quantile(list.lat, 0.5)),
		float64(fleet.Quantile(data.lat, 0.99))/float64(fleet.Quantile(list.lat, 0.99)))
	return nil
}

// watchData opens n sessions, each reading /data with a watch, again on
// every change, and reporting the read to s's round.
func watchData(ctx context.Context, n int, session time.Duration, addrs []string, s *side) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	conns := make([]*zk.Conn, n)
	var wg sync.WaitGroup
	var armed atomic.Int64
	errs := make(chan error, n)
	sem := make(chan struct{}, 32) // sessions arming at once: the listen queue holds 50
	for i := range conns {
		c, _, err := zk.Connect(addrs, session, zk.WithLogInfo(false),
			zk.WithMaxBufferSize(fleet.RawBuffer), zk.WithMaxConnBufferSize(fleet.RawBuffer))
		if err != nil {
			cancel()
			return nil, err
		}
		conns[i] = c
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, ev, err := c.GetW("/data")
			<-sem
			if err != nil {
				errs <- err
				return
			}
			armed.Add(1)
			for {
				select {
				case <-ctx.Done():
					return
				case <-ev:
				}
				_, _, next, err := c.GetW("/data")
				if err != nil {
					errs <- err
					return
				}
				if r := s.target.Load(); r != nil {
					r.seen()
				}
				ev = next
			}
		}()
	}
	closeAll := func() {
		cancel()
		fleet.Each(len(conns), 256, func(i int) { conns[i].Close() })
		wg.Wait()
	}
	for armed.Load() < int64(n) {
		select {
		case err := <-errs:
			closeAll()
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
	return closeAll, nil
}
