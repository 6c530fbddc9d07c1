package firewall

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

const hooksHelperEnv = "MESHD_FIREWALL_HOOKS_HELPER"

// hookChains is what the hooks test reads back after each step: every
// built-in chain meshd hooks into, as iptables -S prints it.
func hookChains() string {
	var b strings.Builder
	for _, tc := range [][2]string{{"filter", "INPUT"}, {"filter", "FORWARD"}, {"mangle", "FORWARD"}, {"mangle", "POSTROUTING"}, {"raw", "PREROUTING"}, {"raw", "OUTPUT"}} {
		out, _ := exec.Command("iptables", "-t", tc[0], "-S", tc[1]).CombinedOutput()
		fmt.Fprintf(&b, "# %s %s\n%s", tc[0], tc[1], out)
	}
	return b.String()
}

// baseChains lists the chains hooked into the kernel, as "family table
// CHAIN" from nft (iptables-save prints every built-in chain of a table,
// hooked or not): iptables-nft hooks each built-in chain it made, empty or
// not, and every packet walks it.
func baseChains() string {
	text, err := exec.Command("nft", "list", "chains").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("nft list chains: %v: %s", err, text)
	}
	var out []string
	var table, chain string
	for _, l := range strings.Split(string(text), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table = f[1] + " " + f[2]
		case len(f) >= 2 && f[0] == "chain":
			chain = f[1]
		case len(f) >= 1 && f[0] == "type" && strings.Contains(l, " hook "):
			out = append(out, table+" "+chain)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func TestHelperHooks(t *testing.T) {
	if os.Getenv(hooksHelperEnv) == "" {
		t.Skip("helper process for TestFirewallHooksInKernel")
	}
	res := map[string]string{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	exec.Command("ip", "link", "add", "mesh0", "type", "dummy").Run()
	// What an older meshd left: an unconditional MSS hook, and a NOTRACK
	// hook for another listen port.
	for _, args := range [][]string{
		{"-t", "mangle", "-N", "MESHD-MSS"}, {"-t", "mangle", "-I", "POSTROUTING", "-j", "MESHD-MSS"},
		{"-t", "raw", "-N", "MESHD-NOTRACK"}, {"-t", "raw", "-I", "PREROUTING", "-p", "udp", "--dport", "51999", "-j", "MESHD-NOTRACK"},
	} {
		if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
			res["error"] = string(out)
			return
		}
	}
	cfg := Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, step := range []string{"start", "restart"} {
		if err := New(cfg).Start(); err != nil {
			res["error"] = err.Error()
			return
		}
		res[step] = hookChains()
	}
	res["base"] = baseChains()
	New(cfg).Close()
	res["stopped"] = hookChains()
	if err := Flush(cfg.Logger); err != nil {
		res["error"] = err.Error()
		return
	}
	res["closed"] = hookChains()
	res["closed_base"] = baseChains()
	all, _ := exec.Command("iptables-save").CombinedOutput()
	all6, _ := exec.Command("ip6tables-save").CombinedOutput()
	res["left"] = fmt.Sprint(strings.Count(string(all)+string(all6), "MESHD"))
}

// TestFirewallHooksInKernel: meshd's hooks are narrowed to the packets
// their chains concern, replace what an older meshd left (and the built-in
// chains that left empty: each would still cost every packet a walk), stay
// single across a restart, stay when meshd stops, and are all gone after
// Flush.
func TestFirewallHooksInKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root for a network namespace and iptables")
	}
	var res map[string]string
	runHelperInNamespace(t, "TestHelperHooks", hooksHelperEnv, &res)
	if res["error"] != "" {
		t.Fatalf("helper: %s", res["error"])
	}
	want := []string{
		"-A INPUT -j MESHD-INPUT",
		"-A FORWARD -j MESHD-FORWARD",
		"-A FORWARD -o mesh0 -p tcp -j MESHD-MSS",
	}
	for _, step := range []string{"start", "restart"} {
		var hooks []string
		for _, l := range strings.Split(res[step], "\n") {
			if strings.Contains(l, "-j MESHD-") {
				hooks = append(hooks, l)
			}
		}
		if strings.Join(hooks, "\n") != strings.Join(want, "\n") {
			t.Errorf("hooks after %s:\n%s\nwant exactly:\n%s", step, strings.Join(hooks, "\n"), strings.Join(want, "\n"))
		}
	}
	// Only the chains meshd hooks exist: the older meshd's raw chains and
	// mangle POSTROUTING, left empty, are gone.
	if want := "ip filter FORWARD, ip filter INPUT, ip mangle FORWARD, ip6 filter FORWARD, ip6 filter INPUT"; res["base"] != want {
		t.Errorf("built-in chains after start: %s\nwant exactly: %s", res["base"], want)
	}
	// A stopped meshd leaves the host closed: every hook stays.
	for _, h := range want {
		if !strings.Contains(res["stopped"], h) {
			t.Errorf("after Close (meshd stopped) the hook %q is gone:\n%s", h, res["stopped"])
		}
	}
	if strings.Contains(res["closed"], "MESHD") || res["left"] != "0" {
		t.Errorf("after Flush: %s rules or chains named MESHD left:\n%s", res["left"], res["closed"])
	}
	if res["closed_base"] != "" {
		t.Errorf("after Flush: built-in chains left: %s", res["closed_base"])
	}
}

const flowsHelperEnv = "MESHD_FIREWALL_FLOWS_HELPER"

func TestHelperForgetFlows(t *testing.T) {
	if os.Getenv(flowsHelperEnv) == "" {
		t.Skip("helper process for TestLeavingMemberFlowsForgotten")
	}
	res := map[string]string{}
	defer func() { json.NewEncoder(os.Stdout).Encode(res) }()
	exec.Command("ip", "link", "add", "mesh0", "type", "dummy").Run()
	cfg := Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f := New(cfg)
	if err := f.Start(); err != nil {
		res["error"] = err.Error()
		return
	}
	a := Host{ID: "a", OverlayIP: netip.MustParseAddr("100.100.0.5"), Underlay: []netip.Addr{netip.MustParseAddr("198.18.0.5"), netip.MustParseAddr("fd18::5")}}
	b := Host{ID: "b", OverlayIP: netip.MustParseAddr("100.100.0.6"), Underlay: []netip.Addr{netip.MustParseAddr("198.18.0.6")}}
	for _, h := range []Host{a, b} {
		if err := f.SetHost(h); err != nil {
			res["error"] = err.Error()
			return
		}
	}
	// Flows as the kernel tracks them: a's WireGuard flows both ways and
	// in both families, b's, and a flow of a's that is not WireGuard's.
	for _, fl := range []struct {
		src, dst         string
		sport, dport     uint16
		family           netlink.InetFamily
		theirs, expected bool
	}{
		{"198.18.0.5", "198.18.0.1", 51820, 51820, syscall.AF_INET, true, false},
		{"198.18.0.1", "198.18.0.5", 51820, 41000, syscall.AF_INET, false, false},
		{"fd18::5", "fd18::1", 51820, 51820, syscall.AF_INET6, true, false},
		{"198.18.0.6", "198.18.0.1", 51820, 51820, syscall.AF_INET, true, true},
		{"198.18.0.5", "198.18.0.1", 5000, 443, syscall.AF_INET, true, true},
	} {
		src, dst := net.ParseIP(fl.src), net.ParseIP(fl.dst)
		if fl.family == syscall.AF_INET { // netlink encodes an IPv4 address in its 4-byte form only
			src, dst = src.To4(), dst.To4()
		}
		flow := &netlink.ConntrackFlow{FamilyType: uint8(fl.family), TimeOut: 120,
			Forward: netlink.IPTuple{SrcIP: src, DstIP: dst, Protocol: syscall.IPPROTO_UDP, SrcPort: fl.sport, DstPort: fl.dport},
			Reverse: netlink.IPTuple{SrcIP: dst, DstIP: src, Protocol: syscall.IPPROTO_UDP, SrcPort: fl.dport, DstPort: fl.sport}}
		if err := netlink.ConntrackCreate(netlink.ConntrackTable, fl.family, flow); err != nil {
			res["error"] = fmt.Sprintf("conntrack create %s:%d > %s:%d: %v", fl.src, fl.sport, fl.dst, fl.dport, err)
			return
		}
	}
	list := func() string {
		var out []string
		for _, fam := range []netlink.InetFamily{syscall.AF_INET, syscall.AF_INET6} {
			flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
			if err != nil {
				return err.Error()
			}
			for _, fl := range flows {
				out = append(out, fmt.Sprintf("%s:%d>%s:%d", fl.Forward.SrcIP, fl.Forward.SrcPort, fl.Forward.DstIP, fl.Forward.DstPort))
			}
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	res["before"] = list()
	if err := f.RemoveHost("a"); err != nil {
		res["error"] = err.Error()
		return
	}
	res["after_leave"] = list()
	// A resync that drops b forgets b's flow too.
	if err := f.Resync(nil); err != nil {
		res["error"] = err.Error()
		return
	}
	res["after_resync"] = list()
}

// TestLeavingMemberFlowsForgotten: established flows are admitted before
// the WireGuard allowlist is asked, so a member that leaves must lose its
// tracked WireGuard flows with its set entry, or it would keep reaching
// the port. Its other flows, and other members', stay.
func TestLeavingMemberFlowsForgotten(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root for a network namespace, iptables and conntrack")
	}
	var res map[string]string
	runHelperInNamespace(t, "TestHelperForgetFlows", flowsHelperEnv, &res)
	if res["error"] != "" {
		t.Fatalf("helper: %s", res["error"])
	}
	if want := "198.18.0.1:51820>198.18.0.5:41000 198.18.0.5:5000>198.18.0.1:443 198.18.0.5:51820>198.18.0.1:51820 198.18.0.6:51820>198.18.0.1:51820 fd18::5:51820>fd18::1:51820"; res["before"] != want {
		t.Fatalf("flows before the leave: %s\nwant: %s", res["before"], want)
	}
	if want := "198.18.0.5:5000>198.18.0.1:443 198.18.0.6:51820>198.18.0.1:51820"; res["after_leave"] != want {
		t.Errorf("flows after a left: %s\nwant: %s", res["after_leave"], want)
	}
	if want := "198.18.0.5:5000>198.18.0.1:443"; res["after_resync"] != want {
		t.Errorf("flows after a resync without b: %s\nwant: %s", res["after_resync"], want)
	}
}
