// Command fleetsim simulates a fleet against a real ZooKeeper: N hosts,
// each its own session through the real registry package (no device),
// each registered and watching. One more host churns (join, endpoint
// change, leave) and each change is timed until all N have it, in turn
// with a change of the raw ZooKeeper fan-out (N more plain sessions with a
// child watch; one create; each lists and reads once) against the same
// server: issue 17's target is p99 of ours at most 1.25 times the raw p99.
//
// With -restart, once the churn is done and all N sessions are connected
// and in step, ZooKeeper is halted and started again on the same data and
// port; with -ensemble 3 the whole run is against a 3-server ensemble and
// that phase kills its leader instead. The phase counts what every
// watcher lost (removals: the target is none), expired sessions and the
// fleet's requests and ZooKeeper's CPU, and times until the fleet is
// steady again (issue 17: within 60 s).
//
// With -light M, M more hosts join as sessions with their records and
// the 256 bucket watches but no view (light.go): at 10 000 hosts the
// registries' views would outgrow this machine (every view holds every
// host), the sessions and watches ZooKeeper serves do not. The restart
// phase then runs against n+M sessions, and a change is timed until all
// n+M have it (a light host lists and reads as a registry does, without
// the registry's work), against n+M raw sessions: ZooKeeper's side of
// the layout at that size, not the target's ratio.
//
//	go run ./bench/fleetsim -n 1000 -changes 30 -json /tmp/fleetsim.json
//	go run ./bench/fleetsim -n 300,1000 -changes 3 -restart -json /tmp/fleetsim-restart.json
//	go run ./bench/fleetsim -n 300,1000 -changes 3 -ensemble 3 -json /tmp/fleetsim-leader.json
//	go run ./bench/fleetsim -n 100 -light 9900 -changes 30 -restart -session 10s -json /tmp/fleetsim-10k.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
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
	ZKIOBytesPerChange float64 `json:"zk_io_bytes_per_change"`
	ZKCPUmsPerChange   float64 `json:"zk_cpu_ms_per_change"`
	// This process's CPU over the same windows: the N clients' work,
	// which shares the machine's cores with ZooKeeper.
	SimCPUmsPerChange float64  `json:"sim_cpu_ms_per_change"`
	ZKRSSMiB          float64  `json:"zk_rss_mib"` // after the changes
	Each              []Timing `json:"each"`
}

// Timing is one change: its kind, until the first and until all N.
type Timing struct {
	Kind    string  `json:"kind"`
	FirstMs float64 `json:"first_ms"`
	AllMs   float64 `json:"all_ms"`
	// Ours' joins and endpoint changes: until ZooKeeper stamped the
	// writer's new record (ctime, whole milliseconds), the writer's part.
	CommitMs float64 `json:"commit_ms,omitempty"`
}

// Result is one fleet size.
type Result struct {
	Hosts int `json:"hosts"`
	// Light hosts beside them (-light): sessions and watches, no view.
	Light int `json:"light_hosts,omitempty"`
	// LightDropped counts watch events the light hosts' channels had no
	// room for: a change one of them missed is timed out, not faked.
	LightDropped int64 `json:"light_events_dropped,omitempty"`
	// ChildWatches: ours ran with a child watch per bucket (-child-watches).
	ChildWatches bool   `json:"child_watches,omitempty"`
	Error        string `json:"error,omitempty"` // why the run stopped short, if it did
	// Opening N registries (bounded parallel), each leasing and
	// registering, until every view holds all N hosts.
	SetupS    float64 `json:"setup_s"`
	SimRSSMiB float64 `json:"sim_rss_mib"` // this process with N registries open
	ZKHWMMiB  float64 `json:"zk_peak_rss_mib"`
	Raw       Fanout  `json:"raw"`
	Ours      Fanout  `json:"ours"`
	RatioP99  float64 `json:"p99_ratio"` // ours / raw; the target is <= 1.25
	// -raw-spin, in microseconds: raw is then a calibration, not the target's.
	RawSpinUs float64 `json:"raw_spin_us,omitempty"`
	// ZooKeeper restarted (-restart) or its leader killed (-ensemble).
	Restart *RestartResult `json:"restart,omitempty"`
}

type config struct {
	changes, parallel int
	heap              string
	backlog           int
	fsync             bool
	session           time.Duration
	changeTimeout     time.Duration
	setupTimeout      time.Duration
	maxRSS            int64
	// restart: after the churn, halt ZooKeeper and start it again (or,
	// with an ensemble, kill its leader); ensemble: servers, 0 standalone.
	restart       bool
	ensemble      int
	steadyTimeout time.Duration
	// churnProfile: a CPU profile of the timed changes alone (the first sync of
	// the fleet, far longer, would drown it in -cpuprofile).
	churnProfile string
	// light: hosts beyond the registries, each a session with its
	// record and the bucket watches but no view (light.go).
	light int
	// rawSpin: CPU each raw watcher burns per change after its read, to
	// measure what a watcher's CPU costs the fan-out on this machine.
	rawSpin time.Duration
	// childWatches: ours (registries and light hosts) watches each bucket
	// with a child watch and lists it on every change, the shape against
	// ZooKeeper before 3.6, instead of following the hosts tree.
	childWatches bool
}

// Labels on every goroutine of one side, so that -churn-profile can be
// read by side: go tool pprof -tagfocus side=ours (or raw).
var (
	sideOurs = pprof.Labels("side", "ours")
	sideRaw  = pprof.Labels("side", "raw")
)

func main() {
	ns := flag.String("n", "1000", "fleet sizes (watching hosts), comma separated")
	out := flag.String("json", "", "write results as JSON here")
	var c config
	flag.IntVar(&c.changes, "changes", 30, "changes to time, cycling join, endpoint change, leave")
	flag.IntVar(&c.parallel, "parallel", 32, "sessions opened at once")
	flag.StringVar(&c.heap, "zk-heap", "3g", "ZooKeeper's JVM heap (-Xmx)")
	flag.IntVar(&c.backlog, "zk-backlog", 0, "ZooKeeper's client accept queue (clientPortListenBacklog; 0: Java's default of 50)")
	flag.BoolVar(&c.fsync, "zk-fsync", true, "ZooKeeper syncs its transaction log to disk, as in production (false: to see what the disk costs)")
	flag.DurationVar(&c.session, "session", 30*time.Second, "session timeout of every client: the clients share 2 cores with ZooKeeper")
	flag.DurationVar(&c.changeTimeout, "change-timeout", 60*time.Second, "give up on a change not seen by all by then")
	flag.DurationVar(&c.setupTimeout, "setup-timeout", 10*time.Minute, "give up on a fleet not open and in step by then")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile here")
	flag.StringVar(&c.churnProfile, "churn-profile", "", "write a CPU profile of the timed changes alone, raw and ours (the last fleet size's), here; not with -cpuprofile")
	flag.DurationVar(&c.rawSpin, "raw-spin", 0, "each raw watcher spins this long per change after its read (a calibration: what a watcher's CPU costs the fan-out here; 0 for the target's raw)")
	flag.BoolVar(&c.restart, "restart", false, "after the churn, restart ZooKeeper (ensemble: kill its leader) and time until steady")
	flag.IntVar(&c.ensemble, "ensemble", 0, "run against an ensemble of this many servers (0: one standalone server); implies -restart, which then kills the leader")
	flag.DurationVar(&c.steadyTimeout, "steady-timeout", 3*time.Minute, "give up on a fleet not steady again this long after the restart or leader kill")
	flag.IntVar(&c.light, "light", 0, "this many more hosts, each a session registered and watching the hosts as a registry does, but with no view (light.go): a fleet of n+light sessions where n+light full views would not fit; changes are then timed at all n+light, against n+light raw sessions")
	flag.BoolVar(&c.childWatches, "child-watches", false, "ours watches each bucket with a child watch and lists it on every change (the shape against ZooKeeper before 3.6) instead of one persistent recursive watch")
	maxRSS := flag.Int64("max-rss-mib", 12<<10, "stop opening registries when this process is this large")
	flag.Parse()
	c.maxRSS = *maxRSS << 20
	if c.ensemble == 1 || c.ensemble < 0 {
		fmt.Fprintln(os.Stderr, "-ensemble: want 0 (standalone) or at least 2 servers")
		os.Exit(2)
	}
	c.restart = c.restart || c.ensemble > 0
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	// Ctrl-C and SIGTERM end the run through its deferred stops, so no
	// ZooKeeper outlives it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *cpuProfile != "" && c.churnProfile != "" {
		fmt.Fprintln(os.Stderr, "-cpuprofile and -churn-profile: one CPU profile at a time")
		os.Exit(2)
	}
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

	var sizes []int
	for _, f := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "fleet size %q: want a positive number\n", f)
			os.Exit(2)
		}
		if err := enoughFiles(n, c.light, c.changes > 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		sizes = append(sizes, n)
	}
	var results []Result
	failed := false
	for i, n := range sizes {
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
// memory and CPU are this size's alone: the raw fan-out's sessions, then
// the fleet, then their changes in turn.
func run(ctx context.Context, mesh string, n int, c config) (res Result) {
	res.Hosts, res.Light, res.ChildWatches = n, c.light, c.childWatches
	zs, err := startZK(ctx, c)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	zk := &zkProc{pids: zs.pids}
	progress("n=%d: ZooKeeper pids %v, %v", n, zs.pids(), zs.addrs)
	f := &sim{addrs: zs.addrs, mesh: mesh, cfg: c, zk: zk}
	var hwm int64 // an ensemble's summed peak, before a phase kills one
	defer func() {
		res.ZKHWMMiB = fleet.MiB(max(hwm, zk.usage().HWM))
		// ZooKeeper goes first: closing registries while it runs would
		// make each departure a change for all others, O(N^2) on the way out.
		f.close(zs.stop)
	}()
	// Without changes to time (-changes 0: a restart phase alone) raw
	// opens no sessions: at 10 000 hosts both sides would not fit this
	// machine's open-files limit.
	closeRaw := func() {}
	var raw *rawSide
	if c.changes > 0 {
		progress("n=%d: raw fan-out sessions", n)
		raw, err = openRaw(ctx, zs.addrs, "/fleetsim-raw-"+mesh, n+c.light, c, zk)
		if err != nil {
			res.Error = "raw fan-out: " + err.Error()
			return res
		}
		closeRaw = sync.OnceFunc(raw.close)
		defer closeRaw()
	}
	if c.light > 0 {
		progress("n=%d: %d light hosts registering", n, c.light)
		t := time.Now()
		if f.light, err = openLight(ctx, zs.addrs, "/meshd/"+mesh, n+1, c.light, c, f.target.Load); err != nil {
			res.Error = "light hosts: " + err.Error()
			return res
		}
		progress("n=%d: %d light hosts registered after %.1f s", n, c.light, time.Since(t).Seconds())
	}
	progress("n=%d: %d raw sessions watching; opening the fleet", n, n+c.light)
	start := time.Now()
	err = f.open(ctx, n)
	if err == nil && f.light != nil {
		progress("n=%d: fleet in step after %.1f s; the light hosts' watches", n, time.Since(start).Seconds())
		err = f.light.arm(c.parallel)
	}
	res.SetupS = time.Since(start).Seconds()
	if u, uerr := fleet.ReadUsage(0); uerr == nil {
		res.SimRSSMiB = fleet.MiB(u.RSS)
	}
	if err != nil {
		res.Error = "open fleet: " + err.Error()
		return res
	}
	progress("n=%d: fleet in step after %.1f s; changes, raw and ours in turn", n, res.SetupS)
	// This process holds N hosts' views, N times one host's heap: a
	// collection of it takes seconds of both cores, which no host pays and
	// which, begun by the setup's garbage, landed inside the first changes
	// (gctrace: a 4.7 s mark over a 0.3 s change). Collected here, before
	// the clock starts, the next one is further off than the changes' garbage.
	runtime.GC()
	stopProfile := startChurnProfile(c.churnProfile)
	ours := f.churn()
	for i := 0; i < c.changes && res.Error == ""; i++ {
		if ch, err := raw.change(ctx, true); err != nil {
			res.Error = "raw fan-out: " + err.Error()
		} else if och, err := ours.change(ctx, i); err != nil {
			res.Error = "churn: " + err.Error()
		} else {
			progress("change %d: raw all %d in %.1f ms; ours (%v) in %.1f ms", i, n, fleet.Ms(ch.took), och.kind, fleet.Ms(och.took))
		}
	}
	stopProfile()
	if f.light != nil {
		res.LightDropped = f.light.dropped.Load()
	}
	closeRaw() // the restart phase counts the fleet's sessions alone
	if raw != nil {
		res.Raw, res.Ours = raw.fanout(), ours.fanout()
	}
	if res.Raw.P99ms > 0 && res.Ours.P99ms > 0 {
		res.RatioP99 = res.Ours.P99ms / res.Raw.P99ms
		res.RawSpinUs = float64(c.rawSpin.Microseconds())
	}
	if c.restart && res.Error == "" {
		hwm = zk.usage().HWM
		kind := "restart"
		if zs.ensemble != nil {
			kind = "leader kill"
		}
		progress("n=%d: %s with all %d sessions connected", n, kind, n)
		rr, err := f.restart(ctx, zs)
		res.Restart = &rr
		if err != nil {
			res.Error = kind + ": " + err.Error()
		}
	}
	return res
}

// zkServers is what the run needs of its ZooKeeper, standalone or an
// ensemble.
type zkServers struct {
	addrs    []string
	server   *zkserver.Server   // standalone
	ensemble *zkserver.Ensemble // or this
}

func startZK(ctx context.Context, c config) (*zkServers, error) {
	o := zkserver.Options{Heap: c.heap, Fsync: c.fsync, ListenBacklog: c.backlog}
	if c.ensemble > 0 {
		e, err := zkserver.StartEnsemble(ctx, c.ensemble, o)
		if err != nil {
			return nil, err
		}
		return &zkServers{addrs: e.Addrs(), ensemble: e}, nil
	}
	s, err := zkserver.Start(ctx, o)
	if err != nil {
		return nil, err
	}
	return &zkServers{addrs: []string{s.Addr()}, server: s}, nil
}

// pids are the server processes now: a restarted server is a new one.
func (z *zkServers) pids() []int {
	if z.server != nil {
		return []int{z.server.PID()}
	}
	var out []int
	for _, s := range z.ensemble.Servers {
		out = append(out, s.PID())
	}
	return out
}

func (z *zkServers) stop() {
	if z.server != nil {
		z.server.Stop()
	} else {
		z.ensemble.Stop()
	}
}

func printResult(r Result) {
	if r.Light > 0 {
		fmt.Printf("\n%d light hosts beside the registries (sessions, records and watches; no view)", r.Light)
	}
	if r.ChildWatches {
		fmt.Printf("\nours: a child watch per bucket, listed on every change (-child-watches)")
	}
	if r.LightDropped > 0 {
		fmt.Printf("\n%d watch events dropped at light hosts (their channels were full)", r.LightDropped)
	}
	fmt.Printf("\nN = %d  (setup %.1f s, this process %.0f MiB, ZooKeeper peak RSS %.0f MiB)\n", r.Hosts, r.SetupS, r.SimRSSMiB, r.ZKHWMMiB)
	fmt.Printf("%-6s %7s %9s %9s %9s %9s %10s %12s %14s %14s %11s %11s %9s\n", "", "changes", "p50 ms", "p99 ms", "max ms", "first p50", "spread p99",
		"req/change", "payload B/chg", "ZK io B/chg", "ZK CPU ms", "sim CPU ms", "ZK MiB")
	for _, s := range []struct {
		name string
		f    Fanout
	}{{"raw", r.Raw}, {"ours", r.Ours}} {
		f := s.f
		fmt.Printf("%-6s %7d %9.1f %9.1f %9.1f %9.1f %10.1f %12.0f %14.0f %14.0f %11.1f %11.1f %9.0f\n", s.name, f.Changes, f.P50ms, f.P99ms, f.MaxMs,
			f.FirstP50ms, f.SpreadP99ms, f.RequestsPerChange, f.PayloadBytesPerChange, f.ZKIOBytesPerChange, f.ZKCPUmsPerChange, f.SimCPUmsPerChange, f.ZKRSSMiB)
	}
	if r.RatioP99 > 0 && r.RawSpinUs > 0 {
		fmt.Printf("p99 ours / raw = %.2f, raw spinning %.0f us per change (a calibration, not the target's raw)\n", r.RatioP99, r.RawSpinUs)
	} else if r.RatioP99 > 0 && r.Light > 0 {
		fmt.Printf("p99 ours / raw = %.2f over %d sessions each, but %d of ours light: ZooKeeper's side of the layout, not the target's ratio\n", r.RatioP99, r.Hosts+r.Light, r.Light)
	} else if r.RatioP99 > 0 {
		fmt.Printf("p99 ours / raw = %.2f (target <= 1.25)\n", r.RatioP99)
	}
	if x := r.Restart; x != nil && x.SteadyS == 0 {
		fmt.Printf("%s: not steady (below); %d of %d sessions held ephemerals before\n", x.Kind, x.SessionsBefore, r.Hosts)
	} else if x != nil {
		fmt.Printf("%s: %d removals (%d watchers), %d adds, %d of %d sessions expired; steady after %.1f s (ZooKeeper serving after %.1f s, then %.1f s; target: 0 removals, steady within 60 s)\n",
			x.Kind, x.Removals, x.WatchersWithRemoval, x.Adds, x.SessionsExpired, x.SessionsBefore, x.SteadyS, x.ServingS, x.ServingToSteadyS)
		fmt.Printf("  connected again: half after %.1f s, all after %.1f s; %d of %d watchers listed again; %d requests (%.1f per host), %.0f kB read; ZooKeeper CPU %.0f ms (%.0f ms after serving); %d listen-queue overflows; probe join seen by all in %.1f ms\n",
			x.ConnectedP50S, x.ConnectedS, x.Relisted, r.Hosts, x.Requests, float64(x.Requests)/float64(max(r.Hosts, 1)), float64(x.PayloadBytes)/1000, x.ZKCPUms, x.ZKCPUAfterServingMs, x.ListenOverflows, x.ProbeMs)
		if r.Light > 0 {
			fmt.Printf("  %d light hosts: all with their sessions again after %.1f s; %d bucket listings after a watch fired\n", r.Light, x.LightConnectedS, x.LightRelists)
		}
	}
	if r.Error != "" {
		fmt.Printf("stopped: %s\n", r.Error)
	}
}

// enoughFiles says whether this process and ZooKeeper, which inherits
// its limit, may open a socket per session: n registries, as many raw
// sessions as the fleet has hosts, and the light hosts. Past the limit a
// client retries its connection for ever and the setup hangs silently.
func enoughFiles(n, light int, raw bool) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // unknown: try
	}
	sides := uint64(1)
	if raw {
		sides = 2
	}
	need := uint64(n+1) + sides*uint64(n+light) + 512 // and files, pipes, the writer's stamps session
	if lim.Cur < need {
		return fmt.Errorf("fleet of %d (+%d light): about %d sockets, but the open-files limit is %d (hard %d); raise it, e.g. ulimit -n %d", n, light, need, lim.Cur, lim.Max, need)
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
}

// startChurnProfile starts a CPU profile into file (none if empty) and
// returns what stops it.
func startChurnProfile(file string) func() {
	if file == "" {
		return func() {}
	}
	f, err := os.Create(file)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		progress("churn profile: %v", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
