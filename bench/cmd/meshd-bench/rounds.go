package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
)

// options are the suite's knobs, from the command line.
type options struct {
	secs   int    // length of one iperf3 run
	rounds int    // interleaved rounds of the deciding comparisons
	bin    string // directory with the built meshd
	quick  bool
	peers  int // peers given to one meshd in the scale step
	// lazyHosts hosts registered for one meshd with lazy peers, lazyActive
	// of which it sends to.
	lazyHosts, lazyActive int
	profile               string // where to save meshd's profiles, "" = none
	nebula                string // directory with nebula and nebula-cert, "" = no Nebula
	restarts              int    // meshd restarts the restart gap is measured over
	steps                 string // comma-separated steps of the rounds, "" = all
	// lossFree adds the loss-free 64-byte rate to the firewall off and
	// enforce-10000 steps (lossfree.go).
	lossFree bool
}

// compareRounds runs the comparisons the targets are judged on — meshd
// against bare wireguard-go, and meshd's firewall enforcing against off —
// in interleaved rounds: on a noisy 2-core machine a slow minute then hits
// every configuration alike instead of whichever ran in it. Every
// configuration starts fresh processes and is measured first thing after
// (TCP, then UDP), because the figures also drift within a process's
// life; the order flips each round. Each figure is the median over the
// rounds, the runs kept beside it.
func compareRounds(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string) ([]Measurement, error) {
	steps := []string{"bare", "off", "10", "1000", "10000", "lazy"}
	if o.quick {
		steps = []string{"bare", "off", "10", "10000", "lazy"}
	}
	if o.nebula != "" {
		steps = append(steps, "nebula")
	}
	if o.steps != "" {
		steps = strings.Split(o.steps, ",")
	}
	var all []Measurement
	for r := 0; r < o.rounds; r++ {
		fmt.Fprintf(os.Stderr, "== round %d of %d: %v (bare wireguard-go; meshd, firewall off on both hosts; meshd enforcing with N members)\n", r+1, o.rounds, steps)
		for _, step := range steps {
			ms, err := measureStep(tb, a, b, o, logDir, step)
			all = append(all, ms...)
			if err != nil {
				return all, fmt.Errorf("round %d, %s: %w", r+1, step, err)
			}
		}
		slices.Reverse(steps)
	}
	return medians(all), nil
}

// measureStep measures one configuration of a round: bare wireguard-go,
// meshd with the firewall off on both hosts, or meshd enforcing on both
// with n members in its sets, lazy peers off (the step lazy: on). The
// 10 000-member one gets the full data-plane measurement.
func measureStep(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir, step string) ([]Measurement, error) {
	switch step {
	case "bare":
		return bareWG(tb, a, b, o.secs, logDir)
	case "nebula":
		return nebulaRun(tb, a, b, o, logDir)
	}
	fw, extra := "enforce", eagerExtra
	switch step {
	case "off":
		fw = "off"
	case "lazy":
		extra = lazyExtra
	}
	_, bst, stop, err := startPair(tb, a, b, o.bin, fw, extra)
	defer stop()
	if err != nil {
		return nil, err
	}
	if fw == "off" {
		ms, err := tcpAndUDP(tb, a, b, bst.OverlayIP, o.secs, logDir, "meshd firewall off")
		if err != nil || !o.lossFree {
			return ms, err
		}
		return withLossFree(tb, a, b, bst.OverlayIP, ms, logDir)
	}
	n, _ := strconv.Atoi(step)
	if step == "lazy" {
		n = 10000
	}
	for _, h := range []*testbed.Host{a, b} {
		if err := fillMembers(h, n); err != nil {
			return nil, err
		}
	}
	if step == "lazy" {
		return tcpAndUDP(tb, a, b, bst.OverlayIP, o.secs, logDir, "meshd lazy peers, enforce 10000 members")
	}
	if n != 10000 {
		return tcpAndUDP(tb, a, b, bst.OverlayIP, o.secs, logDir, fmt.Sprintf("meshd enforce %d members", n))
	}
	ms, err := dataPlane(tb, "meshd (enforce, 10k members)", a, b, bst.OverlayIP, o.secs, logDir)
	for _, m := range ms { // the same runs fill the firewall table's row
		if m.Metric == "tcp_1_stream" || m.Metric == "udp_64b_rate" {
			m.Config = "meshd enforce 10000 members"
			ms = append(ms, m)
		}
	}
	if err != nil || !o.lossFree {
		return ms, err
	}
	return withLossFree(tb, a, b, bst.OverlayIP, ms, logDir)
}

// withLossFree adds the loss-free 64-byte rate of the configuration whose
// flood rate ms holds (the firewall table's row) to ms.
func withLossFree(tb *testbed.Testbed, a, b *testbed.Host, addr string, ms []Measurement, logDir string) ([]Measurement, error) {
	var flood Measurement
	for _, m := range ms {
		if m.Metric == "udp_64b_rate" && (m.Config == "meshd firewall off" || m.Config == "meshd enforce 10000 members") {
			flood = m
		}
	}
	m, err := lossFreeRate(tb, a, b, addr, flood.Value, logDir, flood.Config)
	if err != nil {
		return ms, err
	}
	return append(ms, m), nil
}

// startPair starts meshd on a and b, both with firewall mode fw and extra
// config, and waits until a reaches b over the mesh. stop stops whichever
// started and opens their hosts again; it is to be called in every case.
func startPair(tb *testbed.Testbed, a, b *testbed.Host, bin, fw, extra string) (mb *testbed.Meshd, bst admin.Status, stop func(), err error) {
	var started []*testbed.Meshd
	stop = func() {
		for _, m := range slices.Backward(started) {
			stopAndOpen(m, bin)
		}
	}
	for _, h := range []*testbed.Host{a, b} {
		m, err := startMeshdWith(tb, h, bin, fw, extra)
		if err != nil {
			return nil, bst, stop, err
		}
		started = append(started, m)
	}
	mb = started[1]
	if bst, err = mb.Status(); err != nil {
		return mb, bst, stop, err
	}
	return mb, bst, stop, a.WaitPing(bst.OverlayIP, 20*time.Second)
}

// startMeshd starts meshd with lazy peers off: the restart gap and the
// scale step measure a device that holds every known peer.
func startMeshd(tb *testbed.Testbed, h *testbed.Host, bin, fw string) (*testbed.Meshd, error) {
	return startMeshdWith(tb, h, bin, fw, eagerExtra)
}

// startMeshdWith starts meshd with extra config (YAML) appended.
func startMeshdWith(tb *testbed.Testbed, h *testbed.Host, bin, fw, extra string) (*testbed.Meshd, error) {
	return tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin, Firewall: fw, LogLevel: "warn", InstanceID: h.Name, Extra: extra})
}

// stopAndOpen stops a step's meshd and flushes its firewall: a stopped
// meshd leaves its host closed (fail static), and the configurations after
// it in the round need the host open: Nebula's port 4242 is not meshd's.
func stopAndOpen(m *testbed.Meshd, bin string) {
	m.Proc.Stop(10 * time.Second)
	if out, err := m.Host.Run(context.Background(), filepath.Join(bin, "meshd"), "firewall", "flush"); err != nil {
		fmt.Fprintf(os.Stderr, "meshd firewall flush on %s: %v\n%s", m.Host.Name, err, out)
	}
}

// medians folds repeated measurements of one config and metric into their
// median, in the order first seen, keeping every run.
func medians(ms []Measurement) []Measurement {
	type key struct{ config, metric string }
	idx := map[key]int{}
	var out []Measurement
	for _, m := range ms {
		k := key{m.Config, m.Metric}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, Measurement{Config: m.Config, Metric: m.Metric, Unit: m.Unit})
		}
		out[i].Runs = append(out[i].Runs, m.Value)
	}
	for i := range out {
		v := append([]float64{}, out[i].Runs...)
		sort.Float64s(v)
		if n := len(v); n%2 == 1 {
			out[i].Value = v[n/2]
		} else {
			out[i].Value = (v[n/2-1] + v[n/2]) / 2
		}
		if len(out[i].Runs) == 1 {
			out[i].Runs = nil
		}
	}
	return out
}
