// Command meshd-bench measures meshd on the namespace testbed: data-plane
// throughput and latency against the raw underlay and bare wireguard-go,
// the firewall's cost, the seed's linear-rules ablation and the restart
// gap. Every comparison is a ratio taken within one run. `make bench` runs
// it with the registry benchmark and writes bench/RESULTS.md,
// bench/results.json and bench/throughput.png.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

func main() {
	if len(os.Args) > 3 && os.Args[1] == "inject" {
		n, _ := strconv.Atoi(os.Args[3])
		if err := runInject(os.Args[2], n); err != nil {
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
	quick := flag.Bool("quick", false, "short runs: a smoke test of the suite, not figures")
	out := flag.String("json", "bench/out/dataplane.json", "write measurements here")
	bin := flag.String("bin", "bin", "directory with the built meshd")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	secs := 5
	if *quick {
		secs = 1
	}
	ms, err := run(secs, *bin, *quick)
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
		fmt.Printf("%-28s %-14s %10.3f %s\n", m.Config, m.Metric, m.Value, m.Unit)
	}
}

func run(secs int, bin string, quick bool) ([]Measurement, error) {
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

	step("raw underlay (the limit)")
	if err := add(dataPlane(tb, "raw underlay", a, b, b.PrivateIP.String(), secs, logDir)); err != nil {
		return all, err
	}
	step("linear iptables rules vs one ipset (the seed's ablation)")
	if err := add(ablation(tb, a, b, secs, logDir)); err != nil {
		return all, err
	}
	step("bare wireguard-go (the reference)")
	if err := add(bareWG(tb, a, b, secs, logDir)); err != nil {
		return all, err
	}
	step("meshd as shipped, firewall enforcing, 10 000 members")
	if err := add(meshdRuns(tb, a, b, secs, bin, logDir, quick)); err != nil {
		return all, err
	}
	return all, nil
}

func waitPing(h *testbed.Host, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := h.Run(context.Background(), "ping", "-c", "1", "-W", "1", addr); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s cannot reach %s", h.Name, addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
