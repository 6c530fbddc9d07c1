package firewall

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The firewall acts on the namespace of the process that runs it, so the
// kernel tests re-execute this test binary inside a namespace they made.
const kernelHelperEnv = "MESHD_FIREWALL_HELPER"

type scaleResult struct {
	Err            string  `json:"err,omitempty"`
	RulesAt10      int     `json:"rules_at_10"`
	RulesAt10000   int     `json:"rules_at_10000"`
	JoinAt10us     float64 `json:"join_at_10_us"`
	JoinAt10000us  float64 `json:"join_at_10000_us"`
	LeaveAt10us    float64 `json:"leave_at_10_us"`
	LeaveAt10000us float64 `json:"leave_at_10000_us"`
	Members        int     `json:"members"`
	LeftRules      int     `json:"left_rules"`
	LeftSets       int     `json:"left_sets"`
}

func meshdRuleCount() int {
	out, _ := exec.Command("iptables", "-S").CombinedOutput()
	m, _ := exec.Command("iptables", "-t", "mangle", "-S").CombinedOutput()
	r, _ := exec.Command("iptables", "-t", "raw", "-S").CombinedOutput()
	return strings.Count(string(out)+string(m)+string(r), "MESHD")
}

// timeOne returns the median time of n single-host changes.
func timeOne(n int, op func(i int)) float64 {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		op(i)
		ds = append(ds, time.Since(t0))
	}
	for i := range ds { // insertion sort: n is small
		for j := i; j > 0 && ds[j] < ds[j-1]; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
	return float64(ds[len(ds)/2].Nanoseconds()) / 1000
}

func TestHelperFirewallScale(t *testing.T) {
	if os.Getenv(kernelHelperEnv) == "" {
		t.Skip("helper process for TestFirewallScaleInKernel")
	}
	res := scaleResult{}
	fail := func(err error) { res.Err = err.Error(); json.NewEncoder(os.Stdout).Encode(res) }
	exec.Command("ip", "link", "add", "mesh0", "type", "dummy").Run()
	f := New(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := f.Start(); err != nil {
		fail(err)
		return
	}
	for i := 1; i <= 10; i++ {
		if err := f.SetHost(host(i, "web")); err != nil {
			fail(err)
			return
		}
	}
	res.RulesAt10 = meshdRuleCount()
	res.JoinAt10us = timeOne(20, func(i int) { f.SetHost(host(20000+i, "db")) })
	res.LeaveAt10us = timeOne(20, func(i int) { f.RemoveHost(fmt.Sprintf("h%d", 20000+i)) })
	for i := 11; i <= 10000; i++ {
		if err := f.SetHost(host(i, "web")); err != nil {
			fail(err)
			return
		}
	}
	res.RulesAt10000 = meshdRuleCount()
	res.JoinAt10000us = timeOne(20, func(i int) { f.SetHost(host(20000+i, "db")) })
	res.LeaveAt10000us = timeOne(20, func(i int) { f.RemoveHost(fmt.Sprintf("h%d", 20000+i)) })
	out, _ := exec.Command("ipset", "list", "meshd-members", "-t").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Number of entries: "); ok {
			fmt.Sscan(v, &res.Members)
		}
	}
	if err := Flush(nil); err != nil {
		fail(err)
		return
	}
	res.LeftRules = meshdRuleCount()
	sets, _ := exec.Command("ipset", "list", "-n").CombinedOutput()
	res.LeftSets = strings.Count(string(sets), "meshd")
	json.NewEncoder(os.Stdout).Encode(res)
}

// runHelperInNamespace re-executes this test binary as the named helper
// test inside a network namespace made for it (env=1 tells the helper it is
// one), and decodes the last JSON line the helper printed into v.
func runHelperInNamespace(t *testing.T, helper, env string, v any) {
	t.Helper()
	b := make([]byte, 2)
	rand.Read(b)
	ns := "fw" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+helper+"$")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s: %v\n%s", helper, err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "{") {
			line = l
		}
	}
	if err := json.Unmarshal([]byte(line), v); err != nil {
		t.Fatalf("helper %s output %q: %v", helper, out, err)
	}
}

// TestFirewallScaleInKernel: with real ipset and iptables, one member
// joining or leaving costs the same at 10 and at 10 000 members, and the
// number of meshd rules does not change.
func TestFirewallScaleInKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root for a network namespace, ipset and iptables")
	}
	var res scaleResult
	runHelperInNamespace(t, "TestHelperFirewallScale", kernelHelperEnv, &res)
	if res.Err != "" {
		t.Fatal(res.Err)
	}
	t.Logf("members %d; meshd rules at 10: %d, at 10000: %d; join %.0f µs -> %.0f µs, leave %.0f µs -> %.0f µs (median of 20)",
		res.Members, res.RulesAt10, res.RulesAt10000, res.JoinAt10us, res.JoinAt10000us, res.LeaveAt10us, res.LeaveAt10000us)
	if res.Members < 10000 {
		t.Errorf("meshd-members holds %d entries, want >= 10000", res.Members)
	}
	if res.RulesAt10 != res.RulesAt10000 || res.RulesAt10 == 0 {
		t.Errorf("meshd rules: %d at 10 members, %d at 10000", res.RulesAt10, res.RulesAt10000)
	}
	// Constant time: allow noise, not growth (a linear cost would be ~1000x).
	if res.JoinAt10000us > 10*res.JoinAt10us+200 || res.LeaveAt10000us > 10*res.LeaveAt10us+200 {
		t.Errorf("per-member cost grows with the set: join %.0f -> %.0f µs, leave %.0f -> %.0f µs", res.JoinAt10us, res.JoinAt10000us, res.LeaveAt10us, res.LeaveAt10000us)
	}
	if res.LeftRules != 0 || res.LeftSets != 0 {
		t.Errorf("Flush left %d rules and %d sets", res.LeftRules, res.LeftSets)
	}
}

type growthResult struct {
	Err          string `json:"err,omitempty"`
	InitialMax   int    `json:"initial_max"`
	FinalMax     int    `json:"final_max"`
	Entries      int    `json:"entries"`
	Probes       int    `json:"probes"`
	MissedProbes int    `json:"missed_probes"`
}

func TestHelperSetGrowth(t *testing.T) {
	if os.Getenv(kernelHelperEnv) == "" {
		t.Skip("helper process for TestSetGrowthInKernel")
	}
	res := growthResult{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	exec.Command("ip", "link", "add", "mesh0", "type", "dummy").Run()
	f := New(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		FleetSize: 10, MinSetCapacity: 1024, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := f.Start(); err != nil {
		res.Err = err.Error()
		return
	}
	defer Flush(nil)
	if err := f.SetHost(host(1, "web")); err != nil {
		res.Err = err.Error()
		return
	}
	r, err := netlink.IpsetList(setPeers)
	if err != nil {
		res.Err = err.Error()
		return
	}
	res.InitialMax = int(r.MaxElements)
	// While the set grows twice (1024 -> 2048 -> 4096), the first member
	// must be in it at every probe: the swap is atomic.
	first := entry(netip.MustParsePrefix("198.18.0.1/32"))
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ok, err := netlink.IpsetTest(setPeers, first)
			res.Probes++
			if err != nil || !ok {
				res.MissedProbes++
			}
		}
	}()
	for i := 2; i <= 1500; i++ { // 3000 underlay addresses
		if err := f.SetHost(host(i, "web")); err != nil {
			res.Err = err.Error()
			break
		}
	}
	close(stop)
	<-done
	if r, err = netlink.IpsetList(setPeers); err != nil {
		res.Err = err.Error()
		return
	}
	res.FinalMax, res.Entries = int(r.MaxElements), len(r.Entries)
}

// TestSetGrowthInKernel: a set created at maxelem 1024 grows past it as
// members join; every member is in the kernel's set afterwards and an
// early member never went missing while the set was swapped.
func TestSetGrowthInKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root for a network namespace and ipset")
	}
	var res growthResult
	runHelperInNamespace(t, "TestHelperSetGrowth", kernelHelperEnv, &res)
	if res.Err != "" {
		t.Fatal(res.Err)
	}
	t.Logf("meshd-peers: maxelem %d -> %d, %d entries; %d probes of the first member during growth, %d missed", res.InitialMax, res.FinalMax, res.Entries, res.Probes, res.MissedProbes)
	if res.InitialMax != 1024 {
		t.Errorf("initial maxelem %d, want 1024", res.InitialMax)
	}
	if res.Entries != 3000 || res.FinalMax < 3000 {
		t.Errorf("after growth: %d entries (want 3000), maxelem %d", res.Entries, res.FinalMax)
	}
	if res.Probes == 0 || res.MissedProbes != 0 {
		t.Errorf("first member missing in %d of %d probes while the set grew", res.MissedProbes, res.Probes)
	}
}
