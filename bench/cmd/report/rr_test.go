package main

import (
	"strings"
	"testing"
)

// The section shows every configuration's figures, the ratios the targets
// judge with their range per round, and says by how much a target is
// missed.
func TestRequestResponseSection(t *testing.T) {
	const meshd, bare, nebula = "meshd (enforce, 10k members)", "bare wireguard-go", "nebula v1.9.7"
	fs := figures{
		{Config: "raw underlay", Metric: "memcached_gets", Value: 23},
		{Config: bare, Metric: "memcached_gets", Value: 4, Runs: []float64{4, 5}},
		{Config: meshd, Metric: "memcached_gets", Value: 3.6, Runs: []float64{3, 5}},
		{Config: nebula, Metric: "memcached_gets", Value: 3, Runs: []float64{3, 2}},
		{Config: meshd, Metric: "sockperf_udp_p99", Value: 500, Runs: []float64{400, 600}},
		{Config: nebula, Metric: "sockperf_udp_p99", Value: 400, Runs: []float64{400, 400}},
		{Config: meshd, Metric: "sockperf_tcp_p99", Value: 200, Runs: []float64{200, 200}},
		{Config: nebula, Metric: "sockperf_tcp_p99", Value: 250, Runs: []float64{250, 250}},
		{Config: meshd, Metric: "sockperf_udp_p99.9", Value: 1088.6},
		{Config: meshd, Metric: "sockperf_tcp_under_load", Value: 127.4},
	}
	var b strings.Builder
	requestResponseSection(&b, fs, []string{"raw underlay", bare, meshd, nebula}, meshd, bare, nebula)
	out := b.String()
	for _, want := range []string{
		"| raw underlay | 23.0 k/s |",
		"| " + meshd + " | 3.6 k/s | 0.0 k msg/s | 127.4 k msg/s |",
		"| 1089 µs |",
		"| meshd / bare wireguard-go | 0.90x (per round 0.75–1.00) |",
		"| meshd / nebula v1.9.7 | 1.20x (per round 1.00–2.50) | 1.25x (per round 1.00–1.50) | 0.80x (per round 0.80–0.80) |",
		"meshd >= 1.0x bare wireguard-go: **missed by 10%** (0.90x)",
		"memcached gets/s, meshd >= nebula v1.9.7: met (1.20x)",
		"UDP p99, meshd <= nebula v1.9.7: **missed by 25%** (1.25x: meshd's is higher)",
		"TCP p99, meshd <= nebula v1.9.7: met (0.80x)",
		"Why (bench/PROFILES.md",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("section lacks %q:\n%s", want, out)
		}
	}
}

func TestRequestResponseSectionPartial(t *testing.T) {
	var b strings.Builder
	requestResponseSection(&b, figures{{Config: "raw underlay", Metric: "tcp_1_stream", Value: 17}}, []string{"raw underlay"}, "meshd", "bare", "")
	if !strings.Contains(b.String(), "Not measured in this run.") {
		t.Errorf("a run without the figures:\n%s", b.String())
	}
	b.Reset()
	fs := figures{{Config: "meshd", Metric: "memcached_gets", Value: 3}, {Config: "bare", Metric: "memcached_gets", Value: 3}}
	requestResponseSection(&b, fs, []string{"bare", "meshd"}, "meshd", "bare", "")
	if out := b.String(); !strings.Contains(out, "bare: met (1.00x)") || !strings.Contains(out, "Nebula not measured in this run") {
		t.Errorf("a run without Nebula:\n%s", out)
	}
}
