// Command zkobservers measures how ZooKeeper's fan-out work splits when
// the watching sessions are spread across observers (issue 17, item 3).
//
// The fan-out is fleetsim's raw one: N plain sessions, each with a child
// watch on one node; per change one create under it (by a session on a
// voter), timed until every session got the watch, listed the node once
// (re-arming the watch) and read the new child once. With -observers 0
// the N sessions spread over the voters, as hosts listing the ensemble
// do; with K observers they spread over the observers only, round robin,
// each session knowing one server. Every server's CPU time is read from
// /proc around each change: per server, per change, per session.
//
//	go run ./bench/cmd/zkobservers -n 1000,3000 -observers 0,2,4 -json bench/out/zkobservers.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
)

// Server is one server's share of a run.
type Server struct {
	Role     string `json:"role"` // leader, follower, observer
	Addr     string `json:"addr"`
	Sessions int    `json:"sessions"` // watching sessions placed on it
	// CPU time over the changes' windows, per change, and that divided by
	// the sessions it serves (µs per watching session per change).
	CPUmsPerChange        float64 `json:"cpu_ms_per_change"`
	CPUusPerSessionChange float64 `json:"cpu_us_per_session_change,omitempty"`
	RSSMiB                float64 `json:"rss_mib"` // after the changes
}

// Result is one (sessions, observers) pair.
type Result struct {
	Sessions  int     `json:"sessions"`
	Voters    int     `json:"voters"`
	Observers int     `json:"observers"`
	Error     string  `json:"error,omitempty"`
	Changes   int     `json:"changes"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// All servers together, per change.
	CPUmsPerChange float64  `json:"cpu_ms_per_change"`
	Servers        []Server `json:"servers"`
	LoadAvg        string   `json:"loadavg"` // /proc/loadavg after the run
}

type config struct {
	voters, changes, parallel int
	heap                      string
	session, changeTimeout    time.Duration
}

const (
	warmup = 5                      // untimed changes first: the servers' JIT
	settle = 500 * time.Millisecond // pause around each change, as fleetsim's
)

func main() {
	ns := flag.String("n", "1000,3000", "watching sessions, comma separated")
	ks := flag.String("observers", "0,2,4", "observers, comma separated (0: sessions on the voters)")
	out := flag.String("json", "", "write results as JSON here")
	var c config
	flag.IntVar(&c.voters, "voters", 3, "voting members of the ensemble")
	flag.IntVar(&c.changes, "changes", 20, "changes to time")
	flag.IntVar(&c.parallel, "parallel", 32, "sessions arming their watch at once")
	flag.StringVar(&c.heap, "zk-heap", "512m", "each server's JVM heap (-Xmx)")
	flag.DurationVar(&c.session, "session", 30*time.Second, "session timeout: the clients share the cores with every server")
	flag.DurationVar(&c.changeTimeout, "change-timeout", 60*time.Second, "give up on a change not seen by all by then")
	flag.Parse()
	// Ctrl-C and SIGTERM end the run through its deferred stops, so no
	// ZooKeeper outlives it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var results []Result
	failed := false
	for _, n := range numbers(*ns) {
		for _, k := range numbers(*ks) {
			r := run(ctx, n, k, c)
			results = append(results, r)
			printResult(r)
			failed = failed || r.Error != ""
			if *out != "" {
				data, _ := json.MarshalIndent(results, "", "  ")
				if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
					fmt.Fprintln(os.Stderr, err)
					failed = true
				}
			}
			if ctx.Err() != nil {
				os.Exit(1)
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}

func numbers(list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			fmt.Fprintf(os.Stderr, "%q: want a number >= 0\n", f)
			os.Exit(2)
		}
		out = append(out, v)
	}
	return out
}

// run measures one pair on an ensemble of its own.
func run(ctx context.Context, n, k int, c config) (res Result) {
	res.Sessions, res.Voters, res.Observers = n, c.voters, k
	defer func() {
		data, _ := os.ReadFile("/proc/loadavg")
		res.LoadAvg = strings.TrimSpace(string(data))
	}()
	progress("n=%d observers=%d: starting %d voters and %d observers", n, k, c.voters, k)
	e, err := zkserver.StartEnsemble(ctx, c.voters, zkserver.Options{Observers: k, Heap: c.heap, Fsync: true})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer e.Stop()
	leader, err := e.Leader()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	serving := e.Observers
	if k == 0 {
		serving = e.Servers
	}
	all := append(append([]*zkserver.Server{}, e.Servers...), e.Observers...)
	for _, s := range all {
		role := "observer"
		if s == leader {
			role = "leader"
		} else if len(res.Servers) < c.voters {
			role = "follower"
		}
		res.Servers = append(res.Servers, Server{Role: role, Addr: s.Addr()})
	}
	place := make([]int, n) // session i's server, an index into all
	for i := range place {
		s := serving[i%len(serving)]
		for j := range all {
			if all[j] == s {
				place[i] = j
				res.Servers[j].Sessions++
			}
		}
	}
	used, lat, err := fanout(ctx, e.Addrs()[0], all, place, c)
	res.Changes = len(lat)
	if len(lat) > 0 {
		res.P50ms = fleet.Ms(fleet.Quantile(lat, 0.5))
		res.P99ms = fleet.Ms(fleet.Quantile(lat, 0.99))
		res.MaxMs = fleet.Ms(fleet.Quantile(lat, 1))
		for j, s := range all {
			per := fleet.Ms(used[j]) / float64(len(lat))
			res.Servers[j].CPUmsPerChange = per
			res.CPUmsPerChange += per
			if m := res.Servers[j].Sessions; m > 0 {
				res.Servers[j].CPUusPerSessionChange = per * 1000 / float64(m)
			}
			if u, err := fleet.ReadUsage(s.PID()); err == nil {
				res.Servers[j].RSSMiB = fleet.MiB(u.RSS)
			}
		}
	}
	if err != nil {
		res.Error = err.Error()
		for j, s := range all { // the ensemble's logs go with its Stop
			fmt.Fprintf(os.Stderr, "--- %s %s (pid %d), log tail:\n%s\n", res.Servers[j].Role, s.Addr(), s.PID(), s.LogTail(15))
		}
	}
	return res
}

// fanout opens the sessions, session i on all[place[i]], and times the
// changes: each one's latency, and each server's CPU over the windows.
func fanout(ctx context.Context, writerAddr string, all []*zkserver.Server, place []int, c config) (used []time.Duration, lat []time.Duration, err error) {
	n := len(place)
	const parent = "/zkobservers"
	w, _, err := zk.Connect([]string{writerAddr}, c.session, zk.WithLogInfo(false))
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	if _, err := w.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", parent, err)
	}
	record, _ := json.Marshal(fleet.Host(n)) // a child as large as a host record

	var target atomic.Pointer[round]
	rw, err := fleet.WatchRaw(ctx, n, c.parallel, c.session, func(i int) []string { return []string{all[place[i]].Addr()} }, parent,
		func() (string, func([]string, []byte)) {
			r := target.Load()
			return r.node, func([]string, []byte) { r.seen() }
		})
	if err != nil {
		return nil, nil, err
	}
	defer rw.Close()
	progress("%d sessions watching; %d changes", n, c.changes)
	used = make([]time.Duration, len(all))
	cpu := func() []time.Duration {
		out := make([]time.Duration, len(all))
		for j, s := range all {
			u, _ := fleet.ReadUsage(s.PID()) // zero on error: the figure reads 0
			out[j] = u.CPU
		}
		return out
	}
	for i := -warmup; i < c.changes; i++ {
		r := &round{node: fmt.Sprintf("%s/c%05d", parent, i+warmup), done: make(chan struct{})}
		r.left.Store(int64(n))
		time.Sleep(settle)
		before := cpu()
		r.start = time.Now()
		target.Store(r)
		if _, err := w.Create(r.node, record, 0, zk.WorldACL(zk.PermAll)); err != nil {
			return used, lat, fmt.Errorf("create %s: %w", r.node, err)
		}
		select {
		case <-r.done:
		case err := <-rw.Errs():
			return used, lat, err
		case <-time.After(c.changeTimeout):
			return used, lat, fmt.Errorf("%s: %d sessions without it after %s", r.node, r.left.Load(), c.changeTimeout)
		case <-ctx.Done():
			return used, lat, ctx.Err()
		}
		time.Sleep(settle) // the tail of the change lands in its window
		if i >= 0 {
			for j, v := range cpu() {
				used[j] += v - before[j]
			}
			lat = append(lat, r.took)
		}
	}
	return used, lat, nil
}

// round is one change: the last session to read it stops the clock.
type round struct {
	node  string
	start time.Time
	left  atomic.Int64
	took  time.Duration // written by the last reader, before done closes
	done  chan struct{}
}

func (r *round) seen() {
	if r.left.Add(-1) == 0 {
		r.took = time.Since(r.start)
		close(r.done)
	}
}

func printResult(r Result) {
	fmt.Printf("\nN = %d sessions, %d voters, %d observers: %d changes, p50 %.0f ms, p99 %.0f ms, all servers %.0f ms CPU per change (loadavg %s)\n",
		r.Sessions, r.Voters, r.Observers, r.Changes, r.P50ms, r.P99ms, r.CPUmsPerChange, r.LoadAvg)
	fmt.Printf("  %-9s %-16s %8s %12s %16s %8s\n", "role", "address", "sessions", "CPU ms/chg", "CPU µs/sess/chg", "RSS MiB")
	for _, s := range r.Servers {
		fmt.Printf("  %-9s %-16s %8d %12.1f %16.1f %8.0f\n", s.Role, s.Addr, s.Sessions, s.CPUmsPerChange, s.CPUusPerSessionChange, s.RSSMiB)
	}
	if r.Error != "" {
		fmt.Printf("  stopped: %s\n", r.Error)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}
