package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/testbed"
)

// ip6Counter is the packet counter of db's IPv6 rule with this comment, as
// ip6tables shows it.
func ip6Counter(t *testing.T, h *testbed.Host, comment string) uint64 {
	t.Helper()
	out, err := h.Run(context.Background(), "ip6tables-save", "-c", "-t", "filter")
	if err != nil {
		t.Fatalf("ip6tables-save: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`^\[(\d+):\d+\] .*--comment "` + regexp.QuoteMeta(comment) + `"`)
	var n uint64
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			c, _ := strconv.ParseUint(m[1], 10, 64)
			n += c
		}
	}
	return n
}

// inSet reports whether ipset lists addr in set on h.
func inSet(t *testing.T, h *testbed.Host, set, addr string) bool {
	t.Helper()
	out, err := h.Run(context.Background(), "ipset", "list", set)
	if err != nil {
		t.Fatalf("ipset list %s: %v\n%s", set, err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == addr {
			return true
		}
	}
	return false
}

// udpProbes sends n datagrams from h to [addr]:port.
func udpProbes(h *testbed.Host, addr string, port, n int) {
	for i := 0; i < n; i++ {
		h.Run(context.Background(), "bash", "-c", fmt.Sprintf("echo probe > /dev/udp/%s/%d", addr, port))
	}
}

// TestFirewallIPv6Members: members publish their IPv6 underlay addresses,
// and db's firewall admits them over IPv6 as over IPv4: the WireGuard port
// from members only, and, with firewall.underlay.members: policy (the
// default), member traffic to db's IPv6 address judged by the group
// policy. A member in the allowed group gets in, one in a denied group
// does not, the rogue's IPv6 stays dropped; and it all holds after db's
// meshd restarts from its snapshot while ZooKeeper is down.
func TestFirewallIPv6Members(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	start := func(groups ...string) *testbed.Meshd {
		return startHost(t, tb, "vpc", testbed.MeshdOptions{Groups: groups})
	}
	db, web, batch := start("db"), start("web"), start("batch")
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	dbst, _ := db.Status()
	if dbst.PrivateIP6 != db.Host.PrivateIP6.String() {
		t.Errorf("db's status private_ip6 = %q, want %s", dbst.PrivateIP6, db.Host.PrivateIP6)
	}
	listen(t, db.Host, "::", 5432)
	listen(t, db.Host, "::", 6000)
	p := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(p, []byte("rules: [{to: db, from: web, ports: [tcp/5432]}]\n"), 0o644)
	if out, err := meshctl(t, db, "policy", "set", p); err != nil {
		t.Fatalf("meshctl policy set: %v\n%s", err, out)
	}
	addr := db.Host.PrivateIP6.String()
	web6, batch6, rogue6 := web.Host.PrivateIP6.String(), batch.Host.PrivateIP6.String(), rogue.PrivateIP6.String()

	// What db's operator sees: the members' IPv6 addresses in the IPv6
	// sets (WireGuard peers, members, their groups) and in meshctl peers.
	waitFor(t, 20*time.Second, "members' IPv6 addresses in db's IPv6 sets", func() error {
		for _, c := range []struct{ set, addr string }{
			{"meshd-peers6", web6}, {"meshd-peers6", batch6}, {"meshd-members6", web6}, {"meshd-g-web6", web6}, {"meshd-g-batch6", batch6},
		} {
			if !inSet(t, db.Host, c.set, c.addr) {
				return fmt.Errorf("%s not in %s", c.addr, c.set)
			}
		}
		return nil
	})
	if inSet(t, db.Host, "meshd-peers6", rogue6) || inSet(t, db.Host, "meshd-members6", rogue6) {
		t.Errorf("the rogue's %s is in db's IPv6 sets", rogue6)
	}
	if inSet(t, db.Host, "meshd-g-web6", batch6) {
		t.Errorf("batch's %s is in the web group's IPv6 set", batch6)
	}
	peers, err := db.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range peers {
		if want := map[string]string{web.Host.Name: web6, batch.Host.Name: batch6}[pr.Name]; pr.PrivateIP6 != want {
			t.Errorf("db's peers: %s private_ip6 = %q, want %q", pr.Name, pr.PrivateIP6, want)
		}
	}
	waitFor(t, 5*time.Second, "policy in force", func() error {
		if tcpOpen(batch.Host, dbst.OverlayIP, 5432) {
			return fmt.Errorf("batch still reaches db over the overlay")
		}
		return nil
	})

	holds := func(when string) {
		t.Helper()
		// A member in the allowed group reaches db's service on db's IPv6
		// address; the policy's ports only.
		waitFor(t, 15*time.Second, when+": web -> ["+addr+"]:5432", func() error {
			if !tcpOpen(web.Host, addr, 5432) {
				return fmt.Errorf("refused")
			}
			return nil
		})
		denyBefore := counter(t, db, firewall.CounterUnderlay)
		for _, c := range []struct {
			what string
			from *testbed.Host
			port int
		}{
			{"web (allowed) on a port the policy does not open", web.Host, 6000},
			{"batch (denied)", batch.Host, 5432},
			{"the rogue", rogue, 5432},
		} {
			if tcpOpen(c.from, addr, c.port) {
				t.Errorf("%s: %s reaches [%s]:%d over IPv6", when, c.what, addr, c.port)
			}
		}
		if got := counter(t, db, firewall.CounterUnderlay) - denyBefore; got < 3 {
			t.Errorf("%s: %d IPv6 connections counted as underlay denied, want at least 3", when, got)
		}

		// The WireGuard port over IPv6: a member's datagrams pass the
		// allowlist (ip6tables counts them as from peers), the rogue's are
		// dropped and counted as from a non-member.
		okBefore, junkBefore := ip6Counter(t, db.Host, "meshd wg from peers"), ip6Counter(t, db.Host, firewall.CounterWGUnknown)
		udpProbes(web.Host, addr, 51820, 5)
		if got := ip6Counter(t, db.Host, "meshd wg from peers") - okBefore; got < 5 {
			t.Errorf("%s: %d of web's 5 IPv6 datagrams to the WireGuard port admitted", when, got)
		}
		if got := ip6Counter(t, db.Host, firewall.CounterWGUnknown) - junkBefore; got != 0 {
			t.Errorf("%s: %d of web's IPv6 datagrams to the WireGuard port dropped as from a non-member", when, got)
		}
		udpProbes(rogue, addr, 51820, 5)
		if got := ip6Counter(t, db.Host, firewall.CounterWGUnknown) - junkBefore; got < 5 {
			t.Errorf("%s: %d of the rogue's 5 IPv6 datagrams to the WireGuard port dropped", when, got)
		}
	}
	holds("policy set")

	// db restarts while ZooKeeper is down: members and their IPv6
	// addresses come from the snapshot, before anything else.
	waitFor(t, 10*time.Second, "web's IPv6 address in db's snapshot", func() error {
		data, err := os.ReadFile(filepath.Join(db.Dir, "registry.json"))
		if err != nil || !strings.Contains(string(data), web6) {
			return fmt.Errorf("not yet: %v", err)
		}
		return nil
	})
	tb.StopZooKeeper()
	db.Proc.Stop(10 * time.Second)
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	holds("restart while ZooKeeper is down")
}
