// Command report turns the benchmark measurements (bench/out/*.json) into
// bench/RESULTS.md, bench/results.json and bench/throughput.png.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

type measurement struct {
	Config string    `json:"config"`
	Metric string    `json:"metric"`
	Value  float64   `json:"value"`
	Unit   string    `json:"unit"`
	Runs   []float64 `json:"runs,omitempty"` // per round, when a median
	// Command and Date name the run that measured this figure when it is
	// not the run the header names (report -merge).
	Command string `json:"command,omitempty"`
	Date    string `json:"date,omitempty"`
}

// results is bench/results.json.
type results struct {
	Date         string        `json:"date"`
	Command      string        `json:"command"`
	Dataplane    []measurement `json:"dataplane"`
	ControlPlane []watchResult `json:"control_plane"`
	// ControlPlaneBy is the command and date of the control-plane figures
	// when they are not the header's (make bench-control-plane).
	ControlPlaneBy string `json:"control_plane_by,omitempty"`
}

// merge replaces in base every configuration that fresh measured, stamping
// the fresh figures with the command and date that produced them.
func merge(base, fresh []measurement, cmd, date string) []measurement {
	measured := map[string]bool{}
	for _, m := range fresh {
		measured[m.Config] = true
	}
	var out []measurement
	for _, m := range base {
		if !measured[m.Config] {
			out = append(out, m)
		}
	}
	for _, m := range fresh {
		m.Command, m.Date = cmd, date
		out = append(out, m)
	}
	return out
}

type watchResult struct {
	Hosts             int     `json:"hosts"`
	Watchers          int     `json:"watchers"`
	Changes           int     `json:"changes"`
	RequestsPerChange float64 `json:"requests_per_change_per_host"`
	BytesPerChange    float64 `json:"bytes_per_change_per_host"`
	P50ms             float64 `json:"p50_ms"`
	P99ms             float64 `json:"p99_ms"`
	WatchesPerHost    int     `json:"watches_per_host"`
}

func main() {
	dp := flag.String("dataplane", "bench/out/dataplane.json", "meshd-bench output (empty with -merge: no fresh data-plane figures)")
	zw := flag.String("zkwatch", "bench/out/zkwatch.json", "zkwatch output")
	cmd := flag.String("command", "make bench", "the command that produced the figures")
	outDir := flag.String("out", "bench", "where RESULTS.md, results.json and throughput.png go")
	mergeInto := flag.String("merge", "", "a results.json whose figures the -dataplane ones replace, per configuration; the rest, the zkwatch figures and the header's command and date stay")
	controlPlane := flag.Bool("control-plane", false, "with -merge: the control-plane figures too are replaced, by -zkwatch's, stamped with -command")
	flag.Parse()
	var ms []measurement
	var ws []watchResult
	var cpBy string // who made the control-plane figures, when not the header's command
	if *dp != "" || *mergeInto == "" {
		if err := load(*dp, &ms); err != nil {
			fail(err)
		}
	}
	date := time.Now().UTC().Format("2006-01-02")
	headCmd, headDate := *cmd, date
	if *mergeInto != "" {
		var old results
		if err := load(*mergeInto, &old); err != nil {
			fail(err)
		}
		ms = merge(old.Dataplane, ms, *cmd, date)
		ws, headCmd, headDate, cpBy = old.ControlPlane, old.Command, old.Date, old.ControlPlaneBy
		if *controlPlane {
			if err := load(*zw, &ws); err != nil {
				fail(err)
			}
			cpBy = fmt.Sprintf("`%s` (%s)", *cmd, date)
		}
	} else if err := load(*zw, &ws); err != nil {
		fail(err)
	}
	fs := figures(ms)
	find, get := fs.find, fs.get
	rounds := len(find("bare wireguard-go", "tcp_1_stream").Runs)
	var b strings.Builder
	fmt.Fprintf(&b, "# meshd benchmark results\n\nCommand: `%s` (%s). Machine: %d cores, Debian 12, %s, ZooKeeper 3.8 from\nDebian, userspace wireguard-go on /dev/net/tun, the namespace testbed (two hosts in\nnetwork vpc, private path). One run; every ratio is taken within it, because\nthese machines are noisy and absolute figures mean little. The comparisons the\ntargets judge (meshd against bare wireguard-go, the firewall on against off) run\nin %d interleaved rounds, so a slow minute hits every configuration alike; every\nconfiguration starts fresh processes and is measured first thing after; each\nfigure is the median over the rounds, and \"per round\" gives the range of the\nratio taken within each round. Raw data: `bench/results.json`; plot:\n`bench/throughput.png`.\n\n", headCmd, headDate, runtime.NumCPU(), runtime.Version(), rounds)

	fmt.Fprintf(&b, "## Data plane\n\n| configuration | TCP 1 stream | TCP 4 streams | UDP 64 B | ping RTT |\n|---|---|---|---|---|\n")
	configs := []string{"raw underlay", "bare wireguard-go", "meshd (enforce, 10k members)"}
	nebula := ""
	for _, m := range ms {
		if strings.HasPrefix(m.Config, "nebula ") {
			nebula = m.Config
		}
	}
	rows := configs
	if nebula != "" {
		rows = append(append([]string{}, configs...), nebula)
	}
	for _, c := range rows {
		fmt.Fprintf(&b, "| %s | %.2f Gbit/s | %.2f Gbit/s | %.0f kpps | %.3f ms |\n", c,
			get(c, "tcp_1_stream"), get(c, "tcp_4_streams"), get(c, "udp_64b_rate"), get(c, "ping_rtt"))
	}
	ratio, both := fs.ratio, fs.both
	fmt.Fprintf(&b, "\n| ratio | TCP 1 | TCP 4 | UDP 64 B |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| bare wireguard-go / raw (b/a) | %s | %s | %s |\n", ratio(configs[1], configs[0], "tcp_1_stream"), ratio(configs[1], configs[0], "tcp_4_streams"), ratio(configs[1], configs[0], "udp_64b_rate"))
	fmt.Fprintf(&b, "| meshd / bare wireguard-go (c/b) | %s | %s | %s |\n", both(configs[2], configs[1], "tcp_1_stream"), both(configs[2], configs[1], "tcp_4_streams"), both(configs[2], configs[1], "udp_64b_rate"))
	fmt.Fprintf(&b, "| meshd, firewall off on both hosts / bare wireguard-go | %s | - | %s |\n", both("meshd firewall off", configs[1], "tcp_1_stream"), both("meshd firewall off", configs[1], "udp_64b_rate"))
	if nebula != "" {
		fmt.Fprintf(&b, "| meshd / %s (peer comparison) | %s | %s | %s |\n", nebula, both(configs[2], nebula, "tcp_1_stream"), both(configs[2], nebula, "tcp_4_streams"), both(configs[2], nebula, "udp_64b_rate"))
	}
	fmt.Fprintf(&b, "\nTarget: meshd >= 1.0x bare wireguard-go. meshd's data path *is* wireguard-go\n(the row with the firewall off: meshd itself costs nothing per packet); what meshd as shipped adds\nper packet is the host firewall on both ends - the rule walk, the set lookups and\nconnection tracking of overlay flows - which is the price of replacing security\ngroups. Full-size packets do not notice it; 64-byte packets, where the kernel's\nper-packet work is a larger share, do (next table).\n\n")

	if nebula != "" {
		fmt.Fprintf(&b, "Peer comparison: %s, built by make bench from its Go module at that tag into\nbench/out (outside the source tree), on the same two hosts in the same rounds:\npeer found through its static host map (no lighthouse), its firewall admitting\nall (a data-path comparison, not of policy), TUN MTU 1420 like WireGuard's, its\ndefault cipher (AES-256-GCM) and one routine. Nebula moves 64-byte packets\nfaster here and full-size TCP far slower; see \"Where wireguard-go's own 64-byte\ntime goes\" below.\n\n", nebula)
	}
	requestResponseSection(&b, fs, rows, configs[2], configs[1], nebula)

	fmt.Fprintf(&b, "## Firewall cost (meshd on both hosts, same run)\n\n| configuration | TCP 1 stream | vs off | UDP 64 B | vs off |\n|---|---|---|---|---|\n")
	off := "meshd firewall off"
	for _, c := range []string{off, "meshd enforce 10 members", "meshd enforce 1000 members", "meshd enforce 10000 members"} {
		if get(c, "tcp_1_stream") == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.2f Gbit/s | %s | %.0f kpps | %s |\n", c, get(c, "tcp_1_stream"), both(c, off, "tcp_1_stream"), get(c, "udp_64b_rate"), both(c, off, "udp_64b_rate"))
	}
	enforce := "meshd enforce 10000 members"
	if get(off, "udp_64b_lossfree") > 0 && get(enforce, "udp_64b_lossfree") > 0 {
		fmt.Fprintf(&b, "\nUDP 64 B above is a flood: iperf3 offers 10-15 times what wireguard-go carries.\nThe loss-free rate (RFC 2544's throughput: the highest offered rate at which a\n3 s trial loses at most 0.1%% of datagrams; a rate fails when two trials do;\n`-lossfree`, a 7-step search) is what a sender that does not overload the path\ngets:\n\n| configuration | UDP 64 B loss-free | vs off |\n|---|---|---|\n")
		for _, c := range []string{off, enforce} {
			fmt.Fprintf(&b, "| %s | %.1f kpps | %s |\n", c, get(c, "udp_64b_lossfree"), both(c, off, "udp_64b_lossfree"))
		}
	}
	fmt.Fprintf(&b, "\nTarget: enforce at 10 000 members >= 0.95x off. The set size does not matter\n(hash:ip lookups); what small packets pay is the kernel's rule walk and\nconnection tracking on both hosts - see \"Where the firewall's 64-byte cost\ngoes\" below.\n\n")

	fmt.Fprintf(&b, "## The seed's ablation: 8 000 linear rules vs one ipset (raw underlay)\n\n| configuration | TCP 1 stream | vs no rules | UDP 64 B | vs no rules |\n|---|---|---|---|---|\n")
	for _, c := range []string{"raw underlay", "8000 linear iptables rules", "one ipset of 8000"} {
		fmt.Fprintf(&b, "| %s | %.2f Gbit/s | %s | %.0f kpps | %s |\n", c, get(c, "tcp_1_stream"), ratio(c, "raw underlay", "tcp_1_stream"), get(c, "udp_64b_rate"), ratio(c, "raw underlay", "udp_64b_rate"))
	}
	fmt.Fprintf(&b, "\nExpected from the seed: about 0.4x TCP and 0.1x small-packet rate for linear\nrules, about 1.0x for the set.\n\n")

	fmt.Fprintf(&b, "## Restart gap\n\n")
	restartSection(&b, "lazy peers off", find("meshd restart", "median_pause"), find("meshd restart", "worst_pause"))
	restartSection(&b, "lazy peers on (the default), on both hosts", find("meshd restart, lazy peers", "median_pause"), find("meshd restart, lazy peers", "worst_pause"))

	for _, m := range ms {
		if m.Metric != "all_in_device" {
			continue
		}
		c := m.Config
		fmt.Fprintf(&b, "## A real meshd with many peers\n\n%s written into ZooKeeper at once (records and leases) for a\nrunning meshd, firewall enforcing: all in its WireGuard device after **%.1f s**.\nThe peers never answer (their addresses exist nowhere), the worst case.\n\n", c, m.Value)
		fmt.Fprintf(&b, "| when | resident per 1 000 peers | Go heap in use per 1 000 peers | CPU |\n|---|---|---|---|\n")
		fmt.Fprintf(&b, "| just after the join (10 s sample) | %.1f MiB | %.1f MiB | %.1f%% of a core |\n", get(c, "join_rss_per_1000_peers"), get(c, "join_heap_per_1000_peers"), get(c, "join_cpu"))
		fmt.Fprintf(&b, "| at rest, 2 min later (10 s sample) | %.1f MiB | %.1f MiB | %.1f%% of a core |\n\n", get(c, "rss_per_1000_peers"), get(c, "heap_per_1000_peers"), get(c, "idle_cpu"))
		fmt.Fprintf(&b, "What the memory is (heap profile, `meshd-bench -only scale -profile DIR`):\nwireguard-go's own per-peer state — two queues of 1 024 slots, two goroutines,\ntimers, about 40 KiB a peer — and, just after the join, one 64 KiB packet buffer\nper peer that has a keepalive queued until its first handshake. The heap counts\nthose buffers whole, the kernel backs only the pages written, so just after the\njoin resident size is the lower figure; it stays high after the heap shrinks\nbecause Go returns freed memory to the system lazily. At rest the CPU is meshd's once-a-second read of the device's peer\nstatistics; the join CPU is WireGuard's handshake retries. Before meshd rested\npeers that answer on no path (and dropped their keepalive), the retries never\nstopped: 16%% of a core and about 100 MiB heap per 1 000 such peers at rest.\n\n")
	}
	lazySection(&b, fs, ms)
	fmt.Fprintf(&b, "## Control plane at scale\n\nN hosts registered in a real ZooKeeper the way meshd writes them, W real\nregistry clients watching; the changes cycle through an endpoint change (a\nnew immutable record node, the old deleted), a leave and a join. Convergence: from the write until every\nwatcher has the event. Cost: ZooKeeper requests and payload bytes each\nwatcher spent per change.\n\n%s| hosts | watchers | changes | p50 | p99 | requests / change / host | bytes / change / host | watches / host |\n|---|---|---|---|---|---|---|---|\n", cpByLine(cpBy))
	for _, w := range ws {
		fmt.Fprintf(&b, "| %d | %d | %d | %.1f ms | %.1f ms | %.1f | %.0f | %d |\n", w.Hosts, w.Watchers, w.Changes, w.P50ms, w.P99ms, w.RequestsPerChange, w.BytesPerChange, w.WatchesPerHost)
	}
	fmt.Fprintf(&b, "\nTargets: p99 <= 1 s at 1 000 hosts; per-change cost flat from 100 to 5 000.\nRequests per change are flat; bytes grow only with the one bucket listed\n(N/256 names), which is why the registry uses 256 buckets (64 measured 2534\nbytes at 5000 hosts).\n\n")

	for _, f := range []string{"bench/PROFILES.md", "bench/RESULTS.tests.md"} {
		text, _ := os.ReadFile(f)
		b.Write(text)
		b.WriteString("\n")
	}
	if err := os.WriteFile(*outDir+"/RESULTS.md", []byte(b.String()), 0o644); err != nil {
		fail(err)
	}
	all := results{Date: headDate, Command: headCmd, Dataplane: ms, ControlPlane: ws, ControlPlaneBy: cpBy}
	data, _ := json.MarshalIndent(all, "", "  ")
	if err := os.WriteFile(*outDir+"/results.json", data, 0o644); err != nil {
		fail(err)
	}
	if err := drawPlot(ms, ws, *outDir+"/throughput.png"); err != nil {
		fail(err)
	}
	fmt.Printf("wrote %[1]s/RESULTS.md, %[1]s/results.json, %[1]s/throughput.png\n", *outDir)
}

// restartSection reports the pause a meshd restart causes, as the receiver
// of a TCP flow saw it, over several restarts, for one configuration.
func restartSection(b *strings.Builder, config string, median, worst measurement) {
	if len(worst.Runs) == 0 {
		fmt.Fprintf(b, "%s: not measured in this run.\n\n", config)
		return
	}
	runs := make([]string, len(worst.Runs))
	for i, r := range worst.Runs {
		runs[i] = fmt.Sprintf("%.1f", r)
	}
	fmt.Fprintf(b, "Pause of a TCP flow (iperf3, 100 Mbit/s) across a restart of the receiving host's\nmeshd, %s, as the receiver saw it: the longest run of the iperf3 server's 100 ms\nintervals that received nothing (the sender's intervals hide a pause: its socket\nbuffer keeps accepting). Over %d restarts, one flow each: median **%.1f s**, worst\n**%.1f s** (each: %s s; target <= 2 s).", config, len(worst.Runs), median.Value, worst.Value, strings.Join(runs, ", "))
	if worst.Command != "" {
		fmt.Fprintf(b, " Measured by `%s` (%s).", worst.Command, worst.Date)
	}
	fmt.Fprintf(b, "\n\n")
}

func load(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

func createFile(path string) (*os.File, error) { return os.Create(path) }

// lazySection reports lazy peers (issue 17): one meshd's cost with many
// hosts registered and few active, and the data plane with lazy peers on
// against off, in the same rounds.
func lazySection(b *strings.Builder, fs figures, ms []measurement) {
	scale := ""
	for _, m := range ms {
		if strings.HasPrefix(m.Config, "lazy peers, ") {
			scale = m.Config
		}
	}
	lazy, shipped := "meshd lazy peers, enforce 10000 members", "meshd (enforce, 10k members)"
	if scale == "" && fs.get(lazy, "tcp_1_stream") == 0 {
		return
	}
	fmt.Fprintf(b, "## Lazy peers\n\nWith `peers.lazy: true` only peers with recent traffic live in wireguard-go's device;\nthe rest are known (records, firewall sets, `meshctl peers` says idle) and come in\nwith their first packet either way.\n\n")
	if scale != "" {
		g := func(metric string) float64 { return fs.get(scale, metric) }
		fmt.Fprintf(b, "%s: one meshd, the hosts written into ZooKeeper at once,\nall known after %.1f s; then one ping to each active host (they never answer: the\nworst case, WireGuard retries each for 90 s).\n\n", scale, g("all_known"))
		fmt.Fprintf(b, "| when | resident | Go heap | CPU |\n|---|---|---|---|\n")
		fmt.Fprintf(b, "| all known, none active (10 s sample) | %.1f MiB | - | %.1f%% of a core |\n", g("idle_rss"), g("idle_cpu"))
		fmt.Fprintf(b, "| just after the active ones came in (10 s sample) | %.1f MiB | %.1f MiB | %.1f%% of a core |\n", g("join_rss"), g("join_heap"), g("join_cpu"))
		fmt.Fprintf(b, "| at rest, 2 min after the hosts were written (10 s sample) | %.1f MiB | %.1f MiB | %.1f%% of a core |\n", g("rest_rss"), g("rest_heap"), g("rest_cpu"))
		if g("settled_rss") != 0 {
			fmt.Fprintf(b, "| settled, 4.5 min after (10 s sample) | %.1f MiB: %.1f anonymous, %.1f of the binary's file | %.1f MiB | %.1f%% of a core |\n",
				g("settled_rss"), g("settled_anon_rss"), g("settled_file_rss"), g("settled_heap"), g("settled_cpu"))
		}
		b.WriteString("\n")
		fmt.Fprintf(b, "Target: 10 000 registered, 100 active: resident <= 64 MiB, CPU at rest <= 1%% of a core.\nOne run's figures; the spread over runs is in bench/PROFILES.md (\"Lazy peers:\none meshd, 10 000 hosts registered, 100 active\").\n\n")
	}
	if fs.get(lazy, "tcp_1_stream") != 0 {
		fmt.Fprintf(b, "| ratio | TCP 1 stream | UDP 64 B |\n|---|---|---|\n| lazy peers on / off (same rounds) | %s | %s |\n\nTarget: >= 0.98x.\n\n",
			fs.both(lazy, shipped, "tcp_1_stream"), fs.both(lazy, shipped, "udp_64b_rate"))
	}
}

// cpByLine names the command behind the control-plane figures when it is
// not the header's.
func cpByLine(by string) string {
	if by == "" {
		return ""
	}
	return "These figures: " + by + ".\n\n"
}
