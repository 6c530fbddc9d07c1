package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/testbed"
)

// bareWG runs the reference: our device layer alone (wireguard-go on a TUN,
// one peer each side), no meshd.
func bareWG(tb *testbed.Testbed, a, b *testbed.Host, secs int, logDir string) ([]Measurement, error) {
	self, _ := os.Executable()
	ka, _ := wgtypes.GeneratePrivateKey()
	kb, _ := wgtypes.GeneratePrivateKey()
	oa, ob := netip.MustParseAddr("100.100.250.1"), netip.MustParseAddr("100.100.250.2")
	specs := []bareSpec{
		{Name: tb.Prefix + "bw" + a.Name, Key: ka, Address: netip.PrefixFrom(oa, 16), Peer: kb.PublicKey(), Endpoint: netip.AddrPortFrom(b.PrivateIP, 51820), PeerIP: ob},
		{Name: tb.Prefix + "bw" + b.Name, Key: kb, Address: netip.PrefixFrom(ob, 16), Peer: ka.PublicKey(), Endpoint: netip.AddrPortFrom(a.PrivateIP, 51820), PeerIP: oa},
	}
	var procs []*testbed.Process
	for i, h := range []*testbed.Host{a, b} {
		spec, _ := json.Marshal(specs[i])
		p, err := tb.StartProcess(h, logDir+"/bare-"+h.Name+".log", self, "bare-wg", string(spec))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	defer func() {
		for _, p := range procs {
			p.Stop(5 * time.Second)
		}
	}()
	if err := a.WaitPing(ob.String(), 15*time.Second); err != nil {
		return nil, err
	}
	return dataPlane(tb, "bare wireguard-go", a, b, ob.String(), secs, logDir)
}

// fillMembers gives h's sets the n-1 other members a fleet of n would
// have, beside the real peer: each one's overlay address and its underlay
// address (in meshd-members, as underlay.members "policy" judges them, and
// in meshd-peers, where the WireGuard port admits them). The underlay
// ones are made up in 198.18.100.0-198.18.139.255, a range the testbed's
// networks do not use.
func fillMembers(h *testbed.Host, n int) error {
	var b strings.Builder
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&b, "add meshd-members 100.101.%d.%d -exist\n", i/250, 1+i%250)
		fmt.Fprintf(&b, "add meshd-members 198.18.%d.%d -exist\n", 100+i/250, 1+i%250)
		fmt.Fprintf(&b, "add meshd-peers 198.18.%d.%d -exist\n", 100+i/250, 1+i%250)
	}
	cmd := h.Command(context.Background(), "ipset", "restore")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("fill members on %s: %v %s", h.Name, err, out)
	}
	return nil
}

// tcpAndUDP measures TCP 1 stream and UDP 64-byte rate only.
func tcpAndUDP(tb *testbed.Testbed, a, b *testbed.Host, addr string, secs int, logDir, name string) ([]Measurement, error) {
	srv, err := serve(tb, b, addr, logDir)
	if err != nil {
		return nil, err
	}
	defer srv.Stop(2 * time.Second)
	r, err := client(a, addr, secs)
	if err != nil {
		return nil, err
	}
	ms := []Measurement{{Config: name, Metric: "tcp_1_stream", Value: r.End.SumReceived.BitsPerSecond / 1e9, Unit: "Gbit/s"}}
	r, err = client(a, addr, secs, "-u", "-l", "64", "-b", "0")
	if err != nil {
		return ms, err
	}
	pps := (r.End.Sum.Packets - r.End.Sum.LostPackets) / max(r.End.Sum.Seconds, 0.001)
	return append(ms, Measurement{Config: name, Metric: "udp_64b_rate", Value: pps / 1e3, Unit: "kpps"}), nil
}

// restartGaps restarts m's meshd n times, each in the middle of its own
// TCP flow from a to m's host, and returns the pause each restart caused as
// the receiver saw it: the longest run of the iperf3 server's 100 ms
// intervals that received nothing. The sender's intervals would hide a
// pause: they count bytes written into its socket buffer, which keeps
// accepting while the path is down.
func restartGaps(tb *testbed.Testbed, a *testbed.Host, m *testbed.Meshd, addr, logDir string, n int, quick bool) ([]time.Duration, error) {
	srv, err := serve(tb, m.Host, addr, logDir, "-J", "-i", "0.1")
	if err != nil {
		return nil, err
	}
	defer srv.Stop(2 * time.Second)
	secs := 6
	if quick {
		secs = 4
	}
	var gaps []time.Duration
	for i := range n {
		type res struct {
			r   iperfResult
			err error
		}
		done := make(chan res, 1)
		go func() {
			r, err := client(a, addr, secs, "-b", "100M", "--get-server-output")
			done <- res{r, err}
		}()
		time.Sleep(time.Duration(secs) * time.Second / 3) // the flow runs first
		m.Proc.Stop(10 * time.Second)
		if err := m.Start(); err != nil {
			return gaps, fmt.Errorf("restart %d: %w", i+1, err)
		}
		out := <-done
		if out.err != nil {
			return gaps, fmt.Errorf("flow across restart %d: %w", i+1, out.err)
		}
		if out.r.ServerOutput == nil || len(out.r.ServerOutput.Intervals) == 0 {
			return gaps, fmt.Errorf("restart %d: iperf3 returned no receiver intervals", i+1)
		}
		gaps = append(gaps, longestPause(out.r.ServerOutput.Intervals))
	}
	return gaps, nil
}

// restartMeasurements are the median and the worst of the gaps of one
// configuration, each with every restart's figure.
func restartMeasurements(config string, gaps []time.Duration) []Measurement {
	if len(gaps) == 0 {
		return nil
	}
	runs := make([]float64, len(gaps))
	for i, g := range gaps {
		runs[i] = g.Seconds()
	}
	sorted := slices.Clone(runs)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		median = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	return []Measurement{
		{Config: config, Metric: "median_pause", Value: median, Unit: "s", Runs: runs},
		{Config: config, Metric: "worst_pause", Value: sorted[len(sorted)-1], Unit: "s", Runs: runs},
	}
}

// ablation: the seed's lesson on the raw underlay path: 8 000 linear
// iptables source rules in front of the traffic, against one ipset of
// 8 000 members and one rule, against no rules.
func ablation(tb *testbed.Testbed, a, b *testbed.Host, secs int, logDir string) ([]Measurement, error) {
	const n = 8000
	addr := b.PrivateIP.String()
	var rules strings.Builder
	rules.WriteString("*filter\n:ABL - [0:0]\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&rules, "-A ABL -s 198.18.%d.%d/32 -j ACCEPT\n", 100+i/250, 1+i%250)
	}
	rules.WriteString("-A INPUT -j ABL\nCOMMIT\n")
	restore := b.Command(context.Background(), "iptables-restore", "--noflush")
	restore.Stdin = strings.NewReader(rules.String())
	if out, err := restore.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("install linear rules: %v %s", err, out)
	}
	linear, err := tcpAndUDP(tb, a, b, addr, secs, logDir, "8000 linear iptables rules")
	b.Run(context.Background(), "iptables", "-D", "INPUT", "-j", "ABL")
	b.Run(context.Background(), "iptables", "-F", "ABL")
	b.Run(context.Background(), "iptables", "-X", "ABL")
	if err != nil {
		return linear, err
	}
	var set strings.Builder
	set.WriteString("create abl hash:ip\n")
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&set, "add abl 198.18.%d.%d\n", 100+i/250, 1+i%250)
	}
	fmt.Fprintf(&set, "add abl %s\n", a.PrivateIP)
	sr := b.Command(context.Background(), "ipset", "restore")
	sr.Stdin = strings.NewReader(set.String())
	if out, err := sr.CombinedOutput(); err != nil {
		return linear, fmt.Errorf("create set: %v %s", err, out)
	}
	b.Run(context.Background(), "iptables", "-I", "INPUT", "-m", "set", "--match-set", "abl", "src", "-j", "ACCEPT")
	setMs, err := tcpAndUDP(tb, a, b, addr, secs, logDir, "one ipset of 8000")
	b.Run(context.Background(), "iptables", "-D", "INPUT", "-m", "set", "--match-set", "abl", "src", "-j", "ACCEPT")
	b.Run(context.Background(), "ipset", "destroy", "abl")
	return append(linear, setMs...), err
}
