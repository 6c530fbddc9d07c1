package testbed

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

func TestTopology(t *testing.T) {
	tb := NewForTest(t, Options{ZooKeeper: true})
	classic, _ := tb.AddHost("classic")
	classic2, _ := tb.AddHost("classic")
	vpc, _ := tb.AddHost("vpc")
	dc, err := tb.AddHost("dc")
	if err != nil {
		t.Fatal(err)
	}
	out := tb.Outsider()

	// Same network: private works.
	if !classic.Ping(classic2.PrivateIP) {
		t.Error("same-network private path broken")
	}
	// Across networks: private is impossible, public works (NAT).
	if classic.Ping(vpc.PrivateIP) {
		t.Error("classic reached vpc's private address")
	}
	if !classic.Ping(vpc.PublicIP) {
		t.Error("classic cannot reach vpc's public address")
	}
	// The receiver sees the sender's public address across networks and the
	// private one over the link.
	if src := sourceSeen(t, tb, classic, vpc, vpc.PublicIP); src != classic.PublicIP {
		t.Errorf("vpc saw classic as %s, want its public %s", src, classic.PublicIP)
	}
	if !vpc.Ping(dc.PrivateIP) {
		t.Error("vpc cannot reach dc's private address over the link")
	}
	if src := sourceSeen(t, tb, vpc, dc, dc.PrivateIP); src != vpc.PrivateIP {
		t.Errorf("dc saw vpc as %s over the link, want its private %s", src, vpc.PrivateIP)
	}
	if classic.Ping(dc.PrivateIP) {
		t.Error("classic reached dc's private address")
	}
	// The outsider reaches no private address, but public ones.
	for _, h := range []*Host{classic, vpc, dc} {
		if out.Ping(h.PrivateIP) {
			t.Errorf("outsider reached %s's private address", h.Name)
		}
	}
	if !out.Ping(dc.PublicIP) {
		t.Error("outsider cannot reach a public address")
	}
	// Every host reaches ZooKeeper through its gateway.
	for _, h := range []*Host{classic, vpc, dc} {
		got, err := h.Run(context.Background(), "bash", "-c", "exec 3<>/dev/tcp/198.19.0.2/2181 && printf ruok >&3 && timeout 2 cat <&3")
		if err != nil || got != "imok" {
			t.Errorf("%s: ruok -> %q %v", h.Name, got, err)
		}
	}
	// Blocking the private path between two same-network hosts.
	if err := tb.BlockPrivate(classic, classic2); err != nil {
		t.Fatal(err)
	}
	if classic.Ping(classic2.PrivateIP) || !classic.Ping(classic2.PublicIP) {
		t.Error("blocked private path: private must fail and public (hairpin) work")
	}
	tb.UnblockPrivate(classic, classic2)
	// Re-homing keeps the name, changes the addresses.
	if err := tb.MoveHost(classic2, "vpc"); err != nil {
		t.Fatal(err)
	}
	if !classic2.PrivateIP.IsValid() || classic2.Network != "vpc" || !vpc.Ping(classic2.PrivateIP) {
		t.Errorf("moved host %+v not reachable in vpc", classic2)
	}
	// The root namespace has no route into the testbed.
	if out, _ := exec.Command("ip", "route", "get", "198.18.1.11").CombinedOutput(); strings.Contains(string(out), tb.Prefix) {
		t.Errorf("root namespace routes into the testbed: %s", out)
	}
}

// sourceSeen pings addr from a and returns the source address b's
// conntrack table recorded for it: what b really saw after any NAT.
func sourceSeen(t *testing.T, tb *Testbed, a, b *Host, addr netip.Addr) netip.Addr {
	t.Helper()
	// Conntrack tracks in a namespace only once a rule there uses it.
	b.Run(context.Background(), "iptables", "-w", "-I", "INPUT", "-p", "icmp", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
	if _, err := a.Run(context.Background(), "ping", "-c", "1", "-W", "1", addr.String()); err != nil {
		t.Fatalf("ping %s: %v", addr, err)
	}
	out, err := b.Run(context.Background(), "conntrack", "-L", "-p", "icmp")
	if err != nil {
		t.Fatalf("conntrack in %s: %v", b.Name, err)
	}
	for _, line := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "src="); ok {
				if ip, err := netip.ParseAddr(v); err == nil && ip != b.PrivateIP {
					return ip
				}
			}
		}
	}
	t.Fatalf("no icmp conntrack entry in %s:\n%s", b.Name, out)
	return netip.Addr{}
}

func TestTeardownRemovesEverything(t *testing.T) {
	tb := NewForTest(t, Options{})
	tb.AddHost("vpc")
	prefix := tb.Prefix
	if err := TeardownFile(tb.StatePath()); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left after teardown:\n%s", out)
	}
}
