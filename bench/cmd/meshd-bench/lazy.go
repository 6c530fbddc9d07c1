package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// lazyExtra is the config block that turns lazy peers on, and eagerExtra
// the one that turns them off: every known peer in the device. Lazy peers
// are meshd's default (issue 17); the bench says which it measures either
// way, so its figures do not change meaning with the default.
const (
	lazyExtra  = "peers:\n  lazy: true\n"
	eagerExtra = "peers:\n  lazy: false\n"
)

// runLazy measures lazy peers (issue 17) on a testbed of its own, so the
// records it injects reach no other step's meshd: one meshd with lazy peers
// is given registered hosts, a hundred of which it then sends a packet to;
// its resident memory, Go heap and CPU are read just after, at rest, and
// settled (4.5 min in).
// The simulated hosts never answer (their addresses exist nowhere), so the
// hundred retry handshakes for WireGuard's 90 s and then rest: the worst
// case for "active".
func runLazy(o options) ([]Measurement, error) {
	logDir, _ := os.MkdirTemp("", "meshd-bench-lazy-")
	tb, err := testbed.New(context.Background(), testbed.Options{Dir: logDir, ZooKeeper: true})
	if err != nil {
		return nil, err
	}
	defer tb.Close()
	h, err := tb.AddHost("vpc")
	if err != nil {
		return nil, err
	}
	m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: o.bin, LogLevel: "warn", InstanceID: h.Name, Extra: lazyExtra})
	if err != nil {
		return nil, err
	}
	defer m.Proc.Stop(10 * time.Second)
	n, active := o.lazyHosts, o.lazyActive
	const window = 10 * time.Second
	start := time.Now()
	own, err := injectHosts(tb, m, n)
	if err != nil {
		return nil, err
	}
	known := time.Since(start)
	time.Sleep(2 * time.Second)
	idle, err := sampleUsage(m, window)
	if err != nil {
		return nil, err
	}
	// One packet to each of the first `active` hosts brings them in.
	var wg sync.WaitGroup
	for i := range active {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.Run(context.Background(), "ping", "-c", "1", "-W", "1", injectedAddr(i, own).String())
		}()
	}
	wg.Wait()
	if err := waitFor(30*time.Second, func() (bool, string) {
		out, _ := h.Run(context.Background(), "wg", "show", m.Iface, "peers")
		got := len(strings.Fields(out))
		return got == active, fmt.Sprintf("%d of %d peers in the device", got, active)
	}); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	join, err := sampleUsage(m, window)
	if err != nil {
		return nil, err
	}
	if wait := 120*time.Second - time.Since(start); wait > 0 && !o.quick {
		time.Sleep(wait) // past WireGuard's 90 s of retries for the hundred
	}
	rest, err := sampleUsage(m, window)
	if err != nil {
		return nil, err
	}
	// Settled: past Go's forced collection (every 2 min) and meshd's
	// return of freed pages (at most once a minute) after the hundred's
	// handshake retries stopped: what the host holds from then on.
	settled := rest
	if !o.quick {
		time.Sleep(270*time.Second - time.Since(start))
		if settled, err = sampleUsage(m, window); err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("lazy peers, %d hosts, %d active", n, active)
	if o.profile != "" {
		if err := saveProfiles(m, o.profile, fmt.Sprintf("meshd-lazy-%d-hosts", n), 10); err != nil {
			return nil, err
		}
	}
	mib := func(kib int) float64 { return float64(kib) / 1024 }
	return []Measurement{
		{Config: name, Metric: "all_known", Value: known.Seconds(), Unit: "s"},
		{Config: name, Metric: "idle_rss", Value: mib(idle.rssKiB), Unit: "MiB"},
		{Config: name, Metric: "idle_cpu", Value: idle.cpu, Unit: "% of a core"},
		{Config: name, Metric: "join_rss", Value: mib(join.rssKiB), Unit: "MiB"},
		{Config: name, Metric: "join_heap", Value: float64(join.heapBytes) / (1 << 20), Unit: "MiB"},
		{Config: name, Metric: "join_cpu", Value: join.cpu, Unit: "% of a core"},
		{Config: name, Metric: "rest_rss", Value: mib(rest.rssKiB), Unit: "MiB"},
		{Config: name, Metric: "rest_heap", Value: float64(rest.heapBytes) / (1 << 20), Unit: "MiB"},
		{Config: name, Metric: "rest_cpu", Value: rest.cpu, Unit: "% of a core"},
		{Config: name, Metric: "settled_rss", Value: mib(settled.rssKiB), Unit: "MiB"},
		{Config: name, Metric: "settled_anon_rss", Value: mib(settled.anonKiB), Unit: "MiB"},
		{Config: name, Metric: "settled_file_rss", Value: mib(settled.fileKiB), Unit: "MiB"},
		{Config: name, Metric: "settled_heap", Value: float64(settled.heapBytes) / (1 << 20), Unit: "MiB"},
		{Config: name, Metric: "settled_cpu", Value: settled.cpu, Unit: "% of a core"},
	}, nil
}

// injectedAddr is the overlay address runInject gives host i: from
// 100.100.200.0 up, stepping over avoid (the real meshd's own address,
// which it leased before the injection: a host claiming it would be
// refused, and the step would wait for it for ever).
func injectedAddr(i int, avoid netip.Addr) netip.Addr {
	a := netip.AddrFrom4([4]byte{100, 100, 200 + byte(i>>8), byte(i)})
	if avoid.Is4() && a.Compare(avoid) >= 0 && avoid.As4()[2] >= 200 {
		a = a.Next()
	}
	return a
}

// waitFor polls cond until it holds or limit passes; the error says the
// last state cond reported.
func waitFor(limit time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %s", limit, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lazyRestartGaps measures the restart gap with lazy peers on, meshd's
// default, on both hosts: the restarted meshd starts with no peer in its
// device, so the flow resumes only once the sender has seen its new start
// time, dropped its session and handshaken again, and the restarted side
// has named the initiator and brought it in.
func lazyRestartGaps(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string) ([]Measurement, error) {
	mb, bst, stop, err := startPair(tb, a, b, o.bin, "enforce", lazyExtra)
	defer stop()
	if err != nil {
		return nil, err
	}
	gaps, err := restartGaps(tb, a, mb, bst.OverlayIP, logDir, o.restarts, o.quick)
	fmt.Fprintf(os.Stderr, "restart pauses seen by the receiver, lazy peers on: %v\n", gaps)
	return restartMeasurements("meshd restart, lazy peers", gaps), err
}
