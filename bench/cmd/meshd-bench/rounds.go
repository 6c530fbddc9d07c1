package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// options are the suite's knobs, from the command line.
type options struct {
	secs    int    // length of one iperf3 run
	rounds  int    // interleaved rounds of the deciding comparisons
	bin     string // directory with the built meshd
	quick   bool
	peers   int    // peers given to one meshd in the scale step
	profile string // where to save meshd's profiles, "" = none
}

// compareRounds runs the comparisons the targets are judged on — meshd
// against bare wireguard-go, and meshd's firewall enforcing against off —
// in interleaved rounds: on a noisy 2-core machine a slow minute then
// hits every configuration alike instead of whichever ran in it. Each
// figure is the median over the rounds (the runs are kept beside it).
func compareRounds(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string) ([]Measurement, error) {
	var all []Measurement
	for r := 0; r < o.rounds; r++ {
		fmt.Fprintf(os.Stderr, "== round %d of %d: bare wireguard-go, meshd enforce (10k, 10, 1000 members), meshd firewall off\n", r+1, o.rounds)
		ms, err := bareWG(tb, a, b, o.secs, logDir)
		all = append(all, ms...)
		if err != nil {
			return all, err
		}
		ms, err = meshdRound(tb, a, b, o, logDir, r%2 == 1)
		all = append(all, ms...)
		if err != nil {
			return all, err
		}
	}
	return medians(all), nil
}

// meshdRound measures meshd as shipped (enforce, 10 000 members) for the
// data-plane table, then the firewall at 10, 1 000 and 10 000 members and
// off; offFirst flips the order so drift within a round cancels.
func meshdRound(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string, offFirst bool) ([]Measurement, error) {
	ma, err := startMeshd(tb, a, o.bin, "enforce")
	if err != nil {
		return nil, err
	}
	defer ma.Proc.Stop(10 * time.Second)
	var all []Measurement
	phases := []string{"enforce", "off"}
	if offFirst {
		phases = []string{"off", "enforce"}
	}
	for _, fw := range phases {
		mb, err := startMeshd(tb, b, o.bin, fw)
		if err != nil {
			return all, err
		}
		ms, err := firewallPhase(tb, a, b, ma, mb, o, logDir, fw)
		mb.Proc.Stop(10 * time.Second)
		all = append(all, ms...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

func firewallPhase(tb *testbed.Testbed, a, b *testbed.Host, ma, mb *testbed.Meshd, o options, logDir, fw string) ([]Measurement, error) {
	bst, err := mb.Status()
	if err != nil {
		return nil, err
	}
	if err := waitPing(a, bst.OverlayIP, 20*time.Second); err != nil {
		return nil, err
	}
	if fw == "off" {
		return tcpAndUDP(tb, a, b, bst.OverlayIP, o.secs, logDir, "meshd firewall off")
	}
	if err := fillMembers(b, 10000); err != nil {
		return nil, err
	}
	all, err := dataPlane(tb, "meshd (enforce, 10k members)", a, b, bst.OverlayIP, o.secs, logDir)
	if err != nil {
		return all, err
	}
	sizes := []int{10000, 10, 1000}
	if o.quick {
		sizes = []int{10000, 10}
	}
	ast, _ := ma.Status()
	for _, n := range sizes {
		b.Run(context.Background(), "ipset", "flush", "meshd-members")
		b.Run(context.Background(), "ipset", "add", "meshd-members", ast.OverlayIP, "-exist")
		if err := fillMembers(b, n); err != nil {
			return all, err
		}
		ms, err := tcpAndUDP(tb, a, b, bst.OverlayIP, o.secs, logDir, fmt.Sprintf("meshd enforce %d members", n))
		all = append(all, ms...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

func startMeshd(tb *testbed.Testbed, h *testbed.Host, bin, fw string) (*testbed.Meshd, error) {
	return tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin, Firewall: fw, LogLevel: "warn", InstanceID: h.Name})
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
