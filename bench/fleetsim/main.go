// Command fleetsim simulates a fleet against a real ZooKeeper: N hosts,
// each its own session through the real registry package (no device),
// each registered and watching. One more host churns (join, endpoint
// change, leave) and each change is timed until all N have it, beside the
// raw ZooKeeper fan-out measured in the same run (N plain sessions with a
// child watch; one create; each lists and reads once): issue 17's target
// is p99 of ours at most 1.25 times the raw p99.
//
//	go run ./bench/fleetsim -n 1000,10000 -changes 30 -json /tmp/fleetsim.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
)

// Fanout is one side's figures: per change, until all N have it.
type Fanout struct {
	Changes int     `json:"changes"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// Until the first session had it (on our side that is mostly the
	// writer's own requests before its create), and the spread from the
	// first to the last session: the fan-out itself.
	FirstP50ms  float64 `json:"first_p50_ms"`
	SpreadP99ms float64 `json:"spread_p99_ms"`
	// Summed over the N sessions: requests, and bytes of names and
	// records read (registry.Stats; the raw side counts the same way).
	RequestsPerChange     float64 `json:"requests_per_change"`
	PayloadBytesPerChange float64 `json:"payload_bytes_per_change"`
	// ZooKeeper's own accounting over each change's window: bytes through
	// its read(2)/write(2), nearly all its client sockets, and CPU time.
	ZKIOBytesPerChange float64  `json:"zk_io_bytes_per_change"`
	ZKCPUmsPerChange   float64  `json:"zk_cpu_ms_per_change"`
	ZKRSSMiB           float64  `json:"zk_rss_mib"` // after the changes
	Each               []Timing `json:"each"`
}

// Timing is one change: its kind, until the first and until all N.
type Timing struct {
	Kind    string  `json:"kind"`
	FirstMs float64 `json:"first_ms"`
	AllMs   float64 `json:"all_ms"`
}

// Result is one fleet size.
type Result struct {
	Hosts int    `json:"hosts"`
	Error string `json:"error,omitempty"` // why the run stopped short, if it did
	// Opening N registries (bounded parallel), each leasing and
	// registering, until every view holds all N hosts.
	SetupS    float64 `json:"setup_s"`
	SimRSSMiB float64 `json:"sim_rss_mib"` // this process with N registries open
	ZKHWMMiB  float64 `json:"zk_peak_rss_mib"`
	Raw       Fanout  `json:"raw"`
	Ours      Fanout  `json:"ours"`
	RatioP99  float64 `json:"p99_ratio"` // ours / raw; the target is <= 1.25
}

type config struct {
	changes, parallel int
	heap              string
	session           time.Duration
	changeTimeout     time.Duration
	setupTimeout      time.Duration
	maxRSS            int64
}

func main() {
	ns := flag.String("n", "1000", "fleet sizes (watching hosts), comma separated")
	out := flag.String("json", "", "write results as JSON here")
	var c config
	flag.IntVar(&c.changes, "changes", 30, "changes to time, cycling join, endpoint change, leave")
	flag.IntVar(&c.parallel, "parallel", 32, "sessions opened at once")
	flag.StringVar(&c.heap, "zk-heap", "3g", "ZooKeeper's JVM heap (-Xmx)")
	flag.DurationVar(&c.session, "session", 30*time.Second, "session timeout of every client: the clients share 2 cores with ZooKeeper")
	flag.DurationVar(&c.changeTimeout, "change-timeout", 60*time.Second, "give up on a change not seen by all by then")
	flag.DurationVar(&c.setupTimeout, "setup-timeout", 10*time.Minute, "give up on a fleet not open and in step by then")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile here")
	maxRSS := flag.Int64("max-rss-mib", 12<<10, "stop opening registries when this process is this large")
	flag.Parse()
	c.maxRSS = *maxRSS << 20
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	// Ctrl-C and SIGTERM end the run through its deferred stops, so no
	// ZooKeeper outlives it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(pf)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	var results []Result
	failed := false
	for i, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "fleet size %q: want a positive number\n", f)
			os.Exit(2)
		}
		r := run(ctx, fmt.Sprintf("fleet%d", i), n, c)
		results = append(results, r)
		printResult(r)
		if r.Error != "" {
			failed = true
		}
		if *out != "" {
			// After every size: a later, larger one may not finish.
			data, _ := json.MarshalIndent(results, "", "  ")
			if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				failed = true
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if failed {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// run measures one fleet size on a ZooKeeper of its own, so that its
// memory and CPU are this size's alone: first the raw fan-out, then ours.
func run(ctx context.Context, mesh string, n int, c config) (res Result) {
	res.Hosts = n
	zs, err := zkserver.Start(ctx, zkserver.Options{Heap: c.heap})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	zk := &zkProc{pid: zs.PID()}
	progress("n=%d: ZooKeeper pid %d, %s", n, zk.pid, zs.Addr())
	f := &sim{addr: zs.Addr(), mesh: mesh, cfg: c, zk: zk}
	defer func() {
		if u, err := fleet.ReadUsage(zk.pid); err == nil {
			res.ZKHWMMiB = fleet.MiB(u.HWM)
		}
		// ZooKeeper goes first: closing registries while it runs would
		// make each departure a change for all others, O(N^2) on the way out.
		f.close(zs)
	}()
	progress("n=%d: raw fan-out", n)
	if res.Raw, err = rawFanout(ctx, zs.Addr(), "/fleetsim-raw-"+mesh, n, c, zk); err != nil {
		res.Error = "raw fan-out: " + err.Error()
		return res
	}
	progress("n=%d: raw p99 %.0f ms; opening the fleet", n, res.Raw.P99ms)
	start := time.Now()
	err = f.open(ctx, n)
	res.SetupS = time.Since(start).Seconds()
	if u, uerr := fleet.ReadUsage(0); uerr == nil {
		res.SimRSSMiB = fleet.MiB(u.RSS)
	}
	if err != nil {
		res.Error = "open fleet: " + err.Error()
		return res
	}
	progress("n=%d: fleet in step after %.1f s; churn", n, res.SetupS)
	if res.Ours, err = f.churn(ctx); err != nil {
		res.Error = "churn: " + err.Error()
	}
	if res.Raw.P99ms > 0 && res.Ours.P99ms > 0 {
		res.RatioP99 = res.Ours.P99ms / res.Raw.P99ms
	}
	return res
}

func printResult(r Result) {
	fmt.Printf("\nN = %d  (setup %.1f s, this process %.0f MiB, ZooKeeper peak RSS %.0f MiB)\n", r.Hosts, r.SetupS, r.SimRSSMiB, r.ZKHWMMiB)
	fmt.Printf("%-6s %7s %9s %9s %9s %9s %10s %12s %14s %14s %11s %9s\n", "", "changes", "p50 ms", "p99 ms", "max ms", "first p50", "spread p99",
		"req/change", "payload B/chg", "ZK io B/chg", "ZK CPU ms", "ZK MiB")
	for _, s := range []struct {
		name string
		f    Fanout
	}{{"raw", r.Raw}, {"ours", r.Ours}} {
		f := s.f
		fmt.Printf("%-6s %7d %9.1f %9.1f %9.1f %9.1f %10.1f %12.0f %14.0f %14.0f %11.1f %9.0f\n", s.name, f.Changes, f.P50ms, f.P99ms, f.MaxMs,
			f.FirstP50ms, f.SpreadP99ms, f.RequestsPerChange, f.PayloadBytesPerChange, f.ZKIOBytesPerChange, f.ZKCPUmsPerChange, f.ZKRSSMiB)
	}
	if r.RatioP99 > 0 {
		fmt.Printf("p99 ours / raw = %.2f (target <= 1.25)\n", r.RatioP99)
	}
	if r.Error != "" {
		fmt.Printf("stopped: %s\n", r.Error)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}
