// Command meshd-bench measures meshd on the namespace testbed: data-plane
// throughput and latency against the raw underlay and bare wireguard-go,
// the firewall's cost, the seed's linear-rules ablation, the restart gap,
// and one real meshd given thousands of peers (memory, CPU; -profile saves
// its profiles). Every comparison is a ratio taken within one run, the
// deciding ones in interleaved rounds. `make bench` runs it with the
// registry benchmark and writes bench/RESULTS.md, bench/results.json and
// bench/throughput.png.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

func main() {
	if len(os.Args) > 4 && os.Args[1] == "inject" {
		n, _ := strconv.Atoi(os.Args[3])
		avoid, _ := netip.ParseAddr(os.Args[4])
		if err := runInject(os.Args[2], n, avoid); err != nil {
			fmt.Fprintln(os.Stderr, "inject:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "bare-wg" {
		if err := runBareWG(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bare-wg:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.BoolVar(&o.quick, "quick", false, "short runs: a smoke test of the suite, not figures")
	out := flag.String("json", "bench/out/dataplane.json", "write measurements here")
	flag.StringVar(&o.bin, "bin", "bin", "directory with the built meshd")
	flag.IntVar(&o.rounds, "rounds", 5, "interleaved rounds of meshd vs bare wireguard-go and firewall on vs off")
	flag.IntVar(&o.peers, "peers", 5000, "peers given to one real meshd in the scale step")
	flag.StringVar(&o.profile, "profile", "", "save meshd's CPU and heap profiles with its peers into this directory")
	flag.StringVar(&o.nebula, "nebula", "", "directory with nebula and nebula-cert: add Nebula to the rounds as a peer comparison")
	flag.StringVar(&nebulaVersion, "nebula-version", nebulaVersion, "the Nebula tag in that directory, for the report")
	flag.IntVar(&o.restarts, "restarts", 5, "meshd restarts the restart gap is measured over")
	flag.StringVar(&o.steps, "steps", "", "only these steps of the interleaved rounds, comma-separated: bare, off, 10, 1000, 10000, lazy, nebula")
	flag.IntVar(&o.lazyHosts, "lazy-hosts", 10000, "hosts registered for one meshd with lazy peers (step lazy)")
	flag.IntVar(&o.lazyActive, "lazy-active", 100, "of those, how many it sends a packet to")
	flag.BoolVar(&o.lossFree, "lossfree", true, "also search the loss-free 64-byte UDP rate (at most 0.1% lost) with the firewall off and enforcing 10 000 members, about 25 s each (not with -quick)")
	only := flag.String("only", "", "run one part: dataplane, rounds (the interleaved comparisons alone), restart, scale or lazy (default: all; dataplane includes restart)")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	o.secs = 5
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.secs, o.rounds, o.peers, o.restarts = 1, 1, 200, 2
		o.lossFree = o.lossFree && set["lossfree"]
		if !set["lazy-hosts"] {
			o.lazyHosts = 300
		}
		if !set["lazy-active"] {
			o.lazyActive = 10
		}
	}
	if *only != "" && *only != "dataplane" && *only != "rounds" && *only != "restart" && *only != "scale" && *only != "lazy" {
		fmt.Fprintf(os.Stderr, "meshd-bench: -only %q: want dataplane, rounds, restart, scale or lazy\n", *only)
		os.Exit(2)
	}
	var ms []Measurement
	var err error
	if *only != "lazy" {
		ms, err = run(o, *only)
	}
	if err == nil && (*only == "" || *only == "lazy") {
		var lm []Measurement
		lm, err = runLazy(o)
		ms = append(ms, lm...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshd-bench:", err)
		os.Exit(1)
	}
	os.MkdirAll(filepath.Dir(*out), 0o755)
	data, _ := json.MarshalIndent(ms, "", "  ")
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, m := range ms {
		fmt.Printf("%-28s %-18s %10.3f %s\n", m.Config, m.Metric, m.Value, m.Unit)
	}
}

func run(o options, only string) ([]Measurement, error) {
	logDir, _ := os.MkdirTemp("", "meshd-bench-")
	tb, err := testbed.New(context.Background(), testbed.Options{Dir: logDir, ZooKeeper: true})
	if err != nil {
		return nil, err
	}
	defer tb.Close()
	a, err := tb.AddHost("vpc")
	if err != nil {
		return nil, err
	}
	b, err := tb.AddHost("vpc")
	if err != nil {
		return nil, err
	}
	var all []Measurement
	add := func(ms []Measurement, err error) error {
		all = append(all, ms...)
		return err
	}
	step := func(what string) { fmt.Fprintf(os.Stderr, "== %s\n", what) }

	if only == "rounds" {
		return all, add(compareRounds(tb, a, b, o, logDir))
	}
	if only == "" || only == "dataplane" {
		step("raw underlay (the limit)")
		if err := add(dataPlane(tb, "raw underlay", a, b, b.PrivateIP.String(), o.secs, logDir)); err != nil {
			return all, err
		}
		step("linear iptables rules vs one ipset (the seed's ablation)")
		if err := add(ablation(tb, a, b, o.secs, logDir)); err != nil {
			return all, err
		}
		if err := add(compareRounds(tb, a, b, o, logDir)); err != nil {
			return all, err
		}
	}
	if only == "" || only == "dataplane" || only == "restart" {
		step("meshd, lazy peers on (the default): restart gap")
		if err := add(lazyRestartGaps(tb, a, b, o, logDir)); err != nil {
			return all, err
		}
	}
	step("meshd, lazy peers off: restart gap, then many peers")
	ma, err := startMeshd(tb, a, o.bin, "enforce")
	if err != nil {
		return all, err
	}
	defer ma.Proc.Stop(10 * time.Second)
	if only != "scale" {
		mb, err := startMeshd(tb, b, o.bin, "enforce")
		if err != nil {
			return all, err
		}
		defer mb.Proc.Stop(10 * time.Second)
		bst, _ := mb.Status()
		if err := a.WaitPing(bst.OverlayIP, 20*time.Second); err != nil {
			return all, err
		}
		gaps, err := restartGaps(tb, a, mb, bst.OverlayIP, logDir, o.restarts, o.quick)
		all = append(all, restartMeasurements("meshd restart", gaps)...)
		if err != nil {
			return all, err
		}
		fmt.Fprintf(os.Stderr, "restart pauses seen by the receiver: %v\n", gaps)
	}
	if only == "restart" {
		return all, nil
	}
	return all, add(peersScale(tb, ma, o, logDir))
}
