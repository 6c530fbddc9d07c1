package e2e

import (
	"context"
	"fmt"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/testbed"
)

// tcpOpen reports whether h can open a TCP connection to addr:port within
// two seconds.
func tcpOpen(h *testbed.Host, addr string, port int) bool {
	_, err := h.Run(context.Background(), "timeout", "2", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr, port))
	return err == nil
}

func counter(t *testing.T, m *testbed.Meshd, name string) uint64 {
	t.Helper()
	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st.FirewallCounters[name]
}

func meshctl(t *testing.T, m *testbed.Meshd, args ...string) (string, error) {
	out, err := exec.Command(filepath.Join(bin(t), "meshctl"), append([]string{"--socket", m.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

// listen starts a TCP listener on addr:port inside h (iperf3 serves any port).
func listen(t *testing.T, h *testbed.Host, addr string, port int) {
	t.Helper()
	cmd := h.Command(context.Background(), "iperf3", "-s", "-B", addr, "-p", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, 5*time.Second, "listener", func() error {
		out, _ := h.Run(context.Background(), "ss", "-Hltn", fmt.Sprintf("sport = :%d", port))
		if !strings.Contains(out, fmt.Sprint(port)) {
			return fmt.Errorf("not listening on %d", port)
		}
		return nil
	})
}

func TestFirewallKeepsOutsidersOutAndAppliesPolicy(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	start := func(network string, groups ...string) *testbed.Meshd {
		h, err := tb.AddHost(network)
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Groups: groups, Links: [][]string{{"vpc", "dc"}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- log of %s:\n%s", h.Name, m.LogTail(30))
			}
		})
		return m
	}
	web := start("classic", "web")
	db := start("vpc", "db")
	web2 := start("dc", "web")
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	out := tb.Outsider()
	dbst, _ := db.Status()
	webst, _ := web.Status()
	for _, m := range []*testbed.Meshd{web, web2} {
		waitFor(t, 20*time.Second, m.Host.Name+" reaches db over the overlay", func() error {
			_, err := m.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", dbst.OverlayIP)
			return err
		})
	}

	// Outsider and rogue: nothing reaches db's WireGuard port or overlay.
	listen(t, db.Host, "0.0.0.0", 5432)
	before := counter(t, db, "meshd wg from unknown")
	for _, probe := range []struct {
		h  *testbed.Host
		ip string
	}{{out, db.Host.PublicIP.String()}, {rogue, db.Host.PrivateIP.String()}} {
		for i := 0; i < 5; i++ {
			probe.h.Run(context.Background(), "bash", "-c", fmt.Sprintf("echo probe > /dev/udp/%s/51820", probe.ip))
		}
	}
	if got := counter(t, db, "meshd wg from unknown") - before; got < 10 {
		t.Errorf("WireGuard port: %d of 10 probes from outsider and rogue dropped", got)
	}
	// The rogue, next to db on the vpc LAN, routes the overlay to db's
	// private address: the kernel would answer; the firewall must not let it.
	rogue.Run(context.Background(), "ip", "route", "add", "100.100.0.0/16", "via", db.Host.PrivateIP.String())
	if rogue.Ping(mustAddr(dbst.OverlayIP)) || tcpOpen(rogue, dbst.OverlayIP, 5432) {
		t.Error("rogue reached db's overlay address from the underlay")
	}
	if counter(t, db, "meshd overlay via underlay") == 0 {
		t.Error("no drop counted for overlay traffic from the underlay")
	}
	// Members reach each other (no policy yet: all members).
	if !tcpOpen(web.Host, dbst.OverlayIP, 5432) {
		t.Fatal("member cannot reach member with no policy set")
	}
	// `iptables -S` shows meshd's rules once each.
	rules, _ := db.Host.Run(context.Background(), "iptables", "-S")
	if n := strings.Count(rules, "-j MESHD-INPUT"); n != 1 {
		t.Errorf("%d jumps into MESHD-INPUT, want 1:\n%s", n, rules)
	}
	sets, _ := db.Host.Run(context.Background(), "ipset", "list", "meshd-members")
	for _, m := range []*testbed.Meshd{web, web2} {
		st, _ := m.Status()
		if !strings.Contains(sets, st.OverlayIP) {
			t.Errorf("ipset meshd-members lacks %s:\n%s", st.OverlayIP, sets)
		}
	}

	// Policy: db accepts tcp/5432 from web, nothing else.
	listen(t, db.Host, dbst.OverlayIP, 22)
	listen(t, web.Host, webst.OverlayIP, 5432)
	dir := t.TempDir()
	good := filepath.Join(dir, "policy.yaml")
	os.WriteFile(good, []byte("rules:\n  - {to: db, from: web, ports: [tcp/5432]}\n"), 0o644)
	// A long flow web->db:5432 runs across the change and must survive it.
	flow := web.Host.Command(context.Background(), "iperf3", "-c", dbst.OverlayIP, "-p", "5432", "-t", "4", "-b", "5M")
	if err := flow.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := meshctl(t, db, "policy", "set", good); err != nil {
		t.Fatalf("meshctl policy set: %v\n%s", err, out)
	}
	set := time.Now()
	var deniedAt time.Duration
	waitFor(t, 5*time.Second, "policy in force", func() error {
		probe := time.Since(set)
		if tcpOpen(web.Host, dbst.OverlayIP, 22) {
			return fmt.Errorf("web still reaches db:22")
		}
		deniedAt = probe
		return nil
	})
	t.Logf("policy in force: the first probe denied started %s after meshctl policy set returned", deniedAt.Round(time.Millisecond))
	if deniedAt > time.Second {
		t.Errorf("policy took %s to apply, want within a second", deniedAt)
	}
	if !tcpOpen(web.Host, dbst.OverlayIP, 5432) || !tcpOpen(web2.Host, dbst.OverlayIP, 5432) {
		t.Error("web -> db tcp/5432 denied")
	}
	if tcpOpen(db.Host, webst.OverlayIP, 5432) {
		t.Error("db -> web allowed; the policy allows only web -> db")
	}
	if !web.Host.Ping(mustAddr(dbst.OverlayIP)) {
		t.Error("ping between members must stay allowed under a policy")
	}
	if err := flow.Wait(); err != nil {
		t.Errorf("established allowed flow broken by the policy change: %v", err)
	}
	// explain on db shows what the policy lets through each way.
	if out, err := meshctl(t, db, "explain", web.Host.Name); err != nil || !strings.Contains(out, web.Host.Name+" (groups web) -> this host (groups db): tcp/5432") || !strings.Contains(out, "this host -> "+web.Host.Name+": nothing") {
		t.Errorf("explain with a policy: %v\n%s", err, out)
	}
	if out, err := meshctl(t, db, "explain", "nobody"); err == nil || !strings.Contains(out, "nobody has no record") {
		t.Errorf("explain of an unknown host: %v\n%s", err, out)
	}

	// A malformed policy is rejected by meshctl and the old one stays.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("rules:\n  - {to: db, from: wbe, ports: [tcp/99999]}\n"), 0o644)
	out2, err := meshctl(t, db, "policy", "set", bad)
	if err == nil || !strings.Contains(out2, "rules[0].ports[0]") {
		t.Errorf("bad policy: %v\n%s", err, out2)
	}
	if cur, _ := meshctl(t, db, "policy", "get"); !strings.Contains(cur, `"from":"web"`) {
		t.Errorf("policy after a rejected set: %s", cur)
	}

	// Links are fleet-wide: set on one host, read on another.
	if out, err := meshctl(t, db, "links", "set", "vpc:dc", "classic:dc"); err != nil {
		t.Fatalf("links set: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "links on another host", func() error {
		st, _ := web.Status()
		if len(st.Links) != 2 {
			return fmt.Errorf("links %v", st.Links)
		}
		return nil
	})
	if out, err := meshctl(t, db, "links", "set", "vpc:vpc"); err == nil || !strings.Contains(out, "two different networks") {
		t.Errorf("bad link accepted: %s", out)
	}
	// Decommission needs --yes; then the host's peer goes from every device.
	if out, err := meshctl(t, db, "decommission", web2.Host.Name); err == nil || !strings.Contains(out, "--yes") {
		t.Errorf("decommission without --yes: %v %s", err, out)
	}
	w2st, _ := web2.Status()
	web2.Proc.Kill() // a decommissioned host is switched off
	if out, err := meshctl(t, db, "decommission", web2.Host.Name, "--yes"); err != nil {
		t.Fatalf("decommission: %v\n%s", err, out)
	}
	gone := waitFor(t, 10*time.Second, "decommissioned host's key gone from the peers", func() error {
		for _, m := range []*testbed.Meshd{db, web} {
			out, _ := m.Host.Run(context.Background(), "wg", "show", m.Iface, "peers")
			if strings.Contains(out, w2st.PublicKey) {
				return fmt.Errorf("%s still has it", m.Host.Name)
			}
		}
		return nil
	})
	t.Logf("decommissioned host's key gone from every peer %s after meshctl decommission returned", gone.Round(time.Millisecond))
	if gone > time.Second {
		t.Errorf("decommissioned key lingered %s, want within a second", gone)
	}
	// web2's WireGuard flow with db was established, and established flows
	// are admitted before the WireGuard allowlist is asked. Leaving took
	// the flow with the set entry: datagrams on that very flow (web2's
	// WireGuard port to db's) are now new, from a non-member, and dropped.
	waitFor(t, 5*time.Second, "web2 gone from db's peer set", func() error {
		if out, _ := db.Host.Run(context.Background(), "ipset", "test", "meshd-peers", web2.Host.PrivateIP.String()); !strings.Contains(out, "NOT") {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
	wgBefore := counter(t, db, firewall.CounterWGUnknown)
	probe := transferCmd(context.Background(), web2.Host, fmt.Sprintf("udp 51820 %s 5", net.JoinHostPort(db.Host.PrivateIP.String(), "51820")))
	if err := probe.cmd.Run(); err != nil {
		t.Fatalf("datagrams from web2's WireGuard port: %v\n%s", err, probe.out.String())
	}
	if got := counter(t, db, firewall.CounterWGUnknown) - wgBefore; got < 5 {
		t.Errorf("%d of 5 datagrams on the decommissioned web2's old WireGuard flow dropped as from a non-member, want all", got)
	}

	// kill -9 and restart: exactly one copy of every rule and set.
	rulesBefore, _ := db.Host.Run(context.Background(), "iptables-save")
	db.Proc.Kill()
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "db's firewall back with the policy", func() error {
		after, _ := db.Host.Run(context.Background(), "iptables-save")
		if meshdRules(after) != meshdRules(rulesBefore) {
			return fmt.Errorf("rules differ after restart:\n%s\nvs\n%s", meshdRules(after), meshdRules(rulesBefore))
		}
		return nil
	})
	if !tcpOpen(web.Host, dbst.OverlayIP, 5432) || tcpOpen(web.Host, dbst.OverlayIP, 22) {
		t.Error("policy not in force after kill -9 and restart")
	}
	// A clean stop leaves the host closed (TestFirewallFailsClosed).
	db.Proc.Stop(10 * time.Second)
	left, _ := db.Host.Run(context.Background(), "iptables-save")
	if meshdRules(left) != meshdRules(rulesBefore) {
		t.Errorf("rules after stop differ from those in force:\n%s", meshdRules(left))
	}
}

// meshdRules keeps the lines of iptables-save that are meshd's, without
// counters.
func meshdRules(save string) string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.Contains(l, "MESHD") || strings.Contains(l, "meshd") {
			if i := strings.Index(l, "] "); strings.HasPrefix(l, "[") && i > 0 {
				l = l[i+2:]
			}
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFirewallShadowModeCountsDropsNothing: in shadow mode a policy that
// would deny web->db:22 lets it through and counts it.
func TestFirewallShadowModeCountsDropsNothing(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for _, s := range []struct{ net, group string }{{"vpc", "web"}, {"vpc", "db"}} {
		h, _ := tb.AddHost(s.net)
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Groups: []string{s.group}, Firewall: "shadow", Metrics: "127.0.0.1:9474"})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	web, db := ms[0], ms[1]
	dbst, _ := db.Status()
	waitFor(t, 20*time.Second, "web reaches db", func() error {
		_, err := web.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", dbst.OverlayIP)
		return err
	})
	listen(t, db.Host, dbst.OverlayIP, 22)
	p := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(p, []byte("rules: [{to: db, from: web, ports: [tcp/5432]}]\n"), 0o644)
	if out, err := meshctl(t, db, "policy", "set", p); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	before := counter(t, db, "meshd overlay denied")
	waitFor(t, 5*time.Second, "a would-drop counted", func() error {
		if !tcpOpen(web.Host, dbst.OverlayIP, 22) {
			return fmt.Errorf("shadow mode dropped web->db:22")
		}
		if counter(t, db, "meshd overlay denied") <= before {
			return fmt.Errorf("would-drop not counted")
		}
		return nil
	})
	if st, _ := db.Status(); st.Firewall != "shadow" {
		t.Errorf("status firewall = %q", st.Firewall)
	}

	// Shadow mode shadows the underlay default deny too: the rogue gets in
	// and is counted. The anti-spoof rules still drop: routing the overlay
	// to db's private address gets the rogue nowhere.
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	listen(t, db.Host, "0.0.0.0", 5432)
	under := counter(t, db, firewall.CounterUnderlay)
	if !tcpOpen(rogue, db.Host.PrivateIP.String(), 5432) {
		t.Error("shadow mode dropped the rogue's connection to 0.0.0.0:5432")
	}
	if counter(t, db, firewall.CounterUnderlay) <= under {
		t.Error("shadow mode did not count the rogue's would-drop")
	}
	rogue.Run(context.Background(), "ip", "route", "add", "100.100.0.0/16", "via", db.Host.PrivateIP.String())
	if tcpOpen(rogue, dbst.OverlayIP, 5432) {
		t.Error("shadow mode let the rogue reach db's overlay address from the underlay")
	}

	// /metrics parses with the Prometheus text parser and carries the
	// families operators alert on, the would-drop among them.
	raw, err := db.Host.Run(context.Background(), "bash", "-c",
		"exec 3<>/dev/tcp/127.0.0.1/9474 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(raw, "\r\n\r\n")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	for _, f := range []string{"meshd_peers", "meshd_registry_state", "meshd_registry_last_sync_age_seconds", "meshd_firewall_packets_total",
		"meshd_conntrack_max", "meshd_apply_seconds", "meshd_peer_changes_applied_total", "meshd_build_info", "meshd_breaker_held_removals"} {
		if fams[f] == nil {
			t.Errorf("/metrics lacks %s", f)
		}
	}
	found := false
	for _, m := range fams["meshd_firewall_packets_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == "meshd overlay denied" && m.GetCounter().GetValue() > 0 {
				found = true
			}
		}
	}
	if !found {
		t.Error("/metrics does not count the would-drop")
	}
}

// TestFirewallOwnOverlayAddress: a service that calls itself on its own
// overlay address (or lists every host, itself included) works in every
// firewall mode. Such traffic goes over loopback, which the anti-spoof rule
// once matched as "overlay address from an underlay interface".
func TestFirewallOwnOverlayAddress(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	for _, mode := range []string{"enforce", "shadow", "off"} {
		h, err := tb.AddHost("vpc")
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Groups: []string{"web"}, Firewall: mode})
		if err != nil {
			t.Fatal(err)
		}
		st, err := m.Status()
		if err != nil {
			t.Fatal(err)
		}
		listen(t, h, "0.0.0.0", 5432)
		if !tcpOpen(h, st.OverlayIP, 5432) {
			t.Errorf("firewall %s: the host cannot connect to its own overlay address %s:5432", mode, st.OverlayIP)
		}
		if !h.Ping(mustAddr(st.OverlayIP)) {
			t.Errorf("firewall %s: the host cannot ping its own overlay address %s", mode, st.OverlayIP)
		}
	}
}

// TestFirewallUnderlayDefaultDeny: in enforce mode a service listening on
// 0.0.0.0 is closed to everyone who is not let in: the rogue on the same
// LAN and the outsider on the internet are refused; a member of an allowed
// group gets in over the overlay and over the underlay (members: policy);
// a member of a denied group by neither; an underlay.allow port is open to
// the outsider.
func TestFirewallUnderlayDefaultDeny(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	start := func(o testbed.MeshdOptions) *testbed.Meshd { return startHost(t, tb, "vpc", o) }
	db := start(testbed.MeshdOptions{Groups: []string{"db"}, Underlay: `{allow: [{ports: [tcp/8443], from: ["0.0.0.0/0", "::/0"]}]}`})
	web := start(testbed.MeshdOptions{Groups: []string{"web"}})
	other := start(testbed.MeshdOptions{Groups: []string{"batch"}})
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	outsider := tb.Outsider()
	dbst, _ := db.Status()
	for _, m := range []*testbed.Meshd{web, other} {
		waitFor(t, 20*time.Second, m.Host.Name+" reaches db over the overlay", func() error {
			_, err := m.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", dbst.OverlayIP)
			return err
		})
	}
	listen(t, db.Host, "0.0.0.0", 5432)
	listen(t, db.Host, "0.0.0.0", 8443)
	listen(t, db.Host, "0.0.0.0", 6000)
	p := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(p, []byte("rules: [{to: db, from: web, ports: [tcp/5432]}]\n"), 0o644)
	if out, err := meshctl(t, db, "policy", "set", p); err != nil {
		t.Fatalf("meshctl policy set: %v\n%s", err, out)
	}
	priv, pub := db.Host.PrivateIP.String(), db.Host.PublicIP.String()
	waitFor(t, 5*time.Second, "policy in force", func() error {
		if tcpOpen(other.Host, dbst.OverlayIP, 5432) {
			return fmt.Errorf("batch still reaches db over the overlay")
		}
		return nil
	})
	before := counter(t, db, firewall.CounterUnderlay)
	for _, c := range []struct {
		what string
		from *testbed.Host
		addr string
		port int
		want bool
	}{
		{"rogue -> db private address", rogue, priv, 5432, false},
		{"outsider -> db public address", outsider, pub, 5432, false},
		{"web (allowed) -> db over the overlay", web.Host, dbst.OverlayIP, 5432, true},
		{"web (allowed) -> db private address", web.Host, priv, 5432, true},
		{"web (allowed) -> db private address, a port the policy does not open", web.Host, priv, 6000, false},
		{"batch (denied) -> db over the overlay", other.Host, dbst.OverlayIP, 5432, false},
		{"batch (denied) -> db private address", other.Host, priv, 5432, false},
		{"outsider -> db public address, underlay.allow tcp/8443", outsider, pub, 8443, true},
		{"rogue -> db private address, underlay.allow tcp/8443", rogue, priv, 8443, true},
	} {
		if got := tcpOpen(c.from, c.addr, c.port); got != c.want {
			t.Errorf("%s (%s:%d): open=%v, want %v", c.what, c.addr, c.port, got, c.want)
		}
	}
	if got := counter(t, db, firewall.CounterUnderlay) - before; got < 3 {
		t.Errorf("underlay default deny counted %d drops, want at least 3 (rogue, outsider, batch)", got)
	}
	if st, _ := db.Status(); st.FirewallDrops[firewall.DropUnderlay] < 3 || len(st.FirewallDrops) != 4 {
		t.Errorf("status firewall_drops = %v, want every reason and at least 3 underlay_default_deny", st.FirewallDrops)
	}
	if out, err := meshctl(t, db, "status"); err != nil || !strings.Contains(out, " underlay_default_deny") {
		t.Errorf("meshctl status does not name underlay drops: %v\n%s", err, out)
	}
	// The host itself still works: it reaches ZooKeeper, and its peers.
	if st, _ := db.Status(); st.Registry != "connected" {
		t.Errorf("db's registry %s under underlay default deny", st.Registry)
	}
}

// TestFirewallFailsClosed: the policy holds when meshd restarts while
// ZooKeeper is down (it comes from the snapshot), when the policy node is
// deleted, and after meshd stops; breakglass SSH works throughout, and
// `meshd firewall flush` opens the host by hand.
func TestFirewallFailsClosed(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	start := func(o testbed.MeshdOptions) *testbed.Meshd { return startHost(t, tb, "vpc", o) }
	db := start(testbed.MeshdOptions{Groups: []string{"db"}, Breakglass: []string{"198.18.2.0/24"}})
	web := start(testbed.MeshdOptions{Groups: []string{"web"}})
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	dbst, _ := db.Status()
	waitFor(t, 20*time.Second, "web reaches db", func() error {
		_, err := web.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", dbst.OverlayIP)
		return err
	})
	for _, port := range []int{5432, 6000, 22} {
		listen(t, db.Host, "0.0.0.0", port)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	// "analytics" has no live host: accepted, matches nobody, warned about.
	os.WriteFile(p, []byte("rules: [{to: db, from: web, ports: [tcp/5432]}, {to: db, from: analytics, ports: [tcp/6000]}]\n"), 0o644)
	out, err := meshctl(t, db, "policy", "set", p)
	if err != nil || !strings.Contains(out, `group "analytics" has no live host yet`) {
		t.Fatalf("policy naming a group with no live host: %v\n%s", err, out)
	}
	priv := db.Host.PrivateIP.String()
	holds := func(when string) {
		t.Helper()
		waitFor(t, 15*time.Second, when+": web in on tcp/5432", func() error {
			if !tcpOpen(web.Host, dbst.OverlayIP, 5432) {
				return fmt.Errorf("web -> db:5432 refused")
			}
			return nil
		})
		if tcpOpen(web.Host, dbst.OverlayIP, 6000) || tcpOpen(web.Host, priv, 6000) {
			t.Errorf("%s: web reaches db:6000, which the policy does not open", when)
		}
		if tcpOpen(rogue, priv, 5432) {
			t.Errorf("%s: the rogue reaches db:5432", when)
		}
		if !tcpOpen(rogue, priv, 22) {
			t.Errorf("%s: breakglass SSH from the vpc refused", when)
		}
	}
	waitFor(t, 5*time.Second, "policy in force", func() error {
		if tcpOpen(web.Host, dbst.OverlayIP, 6000) {
			return fmt.Errorf("web still reaches db:6000")
		}
		return nil
	})
	holds("policy set")
	waitFor(t, 5*time.Second, "the policy in db's snapshot", func() error {
		data, err := os.ReadFile(filepath.Join(db.Dir, "registry.json"))
		if err != nil || !strings.Contains(string(data), "analytics") {
			return fmt.Errorf("not yet: %v", err)
		}
		return nil
	})

	// Restart db's meshd while ZooKeeper is down: the snapshot's policy.
	tb.StopZooKeeper()
	db.Proc.Stop(10 * time.Second)
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	holds("restart while ZooKeeper is down")
	if err := tb.StartZooKeeper(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "db back on the registry", func() error {
		if st, _ := db.Status(); st.Registry != "connected" {
			return fmt.Errorf("registry %s", st.Registry)
		}
		return nil
	})

	// Delete the policy node: the last policy stays, and status says so.
	inet := &testbed.Host{Name: "inet", Netns: tb.Prefix + "-inet"}
	cmd := inet.Command(context.Background(), "bash", "-c",
		"java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar org.apache.zookeeper.ZooKeeperMain -server 198.19.0.2:2181 >/dev/null 2>&1")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("delete /meshd/%s/policy\nquit\n", tb.Prefix))
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "db notices the missing policy node", func() error {
		if st, _ := db.Status(); !strings.Contains(st.PolicyWarning, "missing") {
			return fmt.Errorf("policy warning %q", st.PolicyWarning)
		}
		return nil
	})
	holds("policy node deleted")

	// Stop meshd: the host stays closed to the rogue, breakglass works.
	db.Proc.Stop(10 * time.Second)
	if tcpOpen(rogue, priv, 5432) {
		t.Error("meshd stopped: the rogue reaches db:5432")
	}
	if !tcpOpen(rogue, priv, 22) {
		t.Error("meshd stopped: breakglass SSH refused")
	}
	// meshd firewall flush opens it by hand, both families.
	if out, err := db.Host.Run(context.Background(), filepath.Join(bin(t), "meshd"), "firewall", "flush"); err != nil {
		t.Fatalf("meshd firewall flush: %v\n%s", err, out)
	}
	if !tcpOpen(rogue, priv, 5432) {
		t.Error("after meshd firewall flush the rogue is still refused")
	}
	left, _ := db.Host.Run(context.Background(), "bash", "-c", "iptables-save; ip6tables-save; ipset list -n")
	if strings.Contains(left, "MESHD") || strings.Contains(left, "meshd") {
		t.Errorf("left after meshd firewall flush:\n%s", left)
	}
}

// TestFirewallIPv6Underlay: the testbed LANs carry IPv6 (fd18::/16); the
// rogue's IPv6 to a member's WireGuard port and to a service on :: is
// dropped and counted, while an underlay.allow port is open over IPv6 (so
// the drop is the firewall's, not a broken IPv6 path).
func TestFirewallIPv6Underlay(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	h, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	db, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Groups: []string{"db"}, Underlay: `{allow: [{ports: [tcp/8443], from: ["::/0"]}]}`})
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	listen(t, db.Host, "::", 5432)
	listen(t, db.Host, "::", 8443)
	addr := db.Host.PrivateIP6.String()
	if !tcpOpen(rogue, addr, 8443) {
		t.Fatalf("underlay.allow tcp/8443 from ::/0 closed to the rogue over IPv6 (%s)", addr)
	}
	wgBefore, denyBefore := counter(t, db, firewall.CounterWGUnknown), counter(t, db, firewall.CounterUnderlay)
	if tcpOpen(rogue, addr, 5432) {
		t.Errorf("the rogue reaches [%s]:5432 over IPv6", addr)
	}
	for i := 0; i < 5; i++ {
		rogue.Run(context.Background(), "bash", "-c", fmt.Sprintf("echo probe > /dev/udp/%s/51820", addr))
	}
	if got := counter(t, db, firewall.CounterWGUnknown) - wgBefore; got < 5 {
		t.Errorf("IPv6 to the WireGuard port: %d of 5 probes dropped", got)
	}
	if got := counter(t, db, firewall.CounterUnderlay) - denyBefore; got == 0 {
		t.Error("IPv6 to tcp/5432: no underlay drop counted")
	}
}

// TestFirewallForwardedTraffic: a port DNAT'd to a "container" behind a
// member (a namespace on a veth, as Docker publishes ports) is judged by
// the policy on its original port: the allowed group gets in, a denied
// group and the rogue do not; the container's own outbound connections
// keep working.
func TestFirewallForwardedTraffic(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for _, g := range []string{"db", "web", "batch"} {
		h, err := tb.AddHost("vpc")
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Groups: []string{g}})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	db, web, batch := ms[0], ms[1], ms[2]
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	// The container: its own namespace behind db, published on db:7000.
	ctr := &testbed.Host{Name: "ctr", Netns: tb.Prefix + "-ctr"}
	if out, err := exec.Command("ip", "netns", "add", ctr.Netns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ctr.Netns).Run() })
	for _, c := range [][]string{
		{"ip", "link", "add", "c0", "netns", db.Host.Netns, "type", "veth", "peer", "eth0", "netns", ctr.Netns},
		{"ip", "netns", "exec", db.Host.Netns, "ip", "addr", "add", "198.18.200.1/30", "dev", "c0"},
		{"ip", "netns", "exec", db.Host.Netns, "ip", "link", "set", "c0", "up"},
		{"ip", "netns", "exec", db.Host.Netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "netns", "exec", db.Host.Netns, "iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "7000", "-j", "DNAT", "--to-destination", "198.18.200.2:5432"},
		{"ip", "netns", "exec", db.Host.Netns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "198.18.200.0/30", "-o", "eth0", "-j", "MASQUERADE"},
		{"ip", "netns", "exec", ctr.Netns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", ctr.Netns, "ip", "addr", "add", "198.18.200.2/30", "dev", "eth0"},
		{"ip", "netns", "exec", ctr.Netns, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", ctr.Netns, "ip", "route", "add", "default", "via", "198.18.200.1"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	listen(t, ctr, "0.0.0.0", 5432)
	listen(t, rogue, "0.0.0.0", 9000) // for the container's outbound connection
	dbst, _ := db.Status()
	for _, m := range []*testbed.Meshd{web, batch} {
		waitFor(t, 20*time.Second, m.Host.Name+" reaches db", func() error {
			_, err := m.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", dbst.OverlayIP)
			return err
		})
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(p, []byte("rules: [{to: db, from: web, ports: [tcp/7000]}]\n"), 0o644)
	if out, err := meshctl(t, db, "policy", "set", p); err != nil {
		t.Fatalf("meshctl policy set: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "policy in force", func() error {
		if tcpOpen(batch.Host, dbst.OverlayIP, 7000) {
			return fmt.Errorf("batch still reaches the container")
		}
		return nil
	})
	priv := db.Host.PrivateIP.String()
	for _, c := range []struct {
		what string
		from *testbed.Host
		addr string
		want bool
	}{
		{"web (allowed) over the overlay", web.Host, dbst.OverlayIP, true},
		{"web (allowed) over the underlay", web.Host, priv, true},
		{"batch (denied) over the overlay", batch.Host, dbst.OverlayIP, false},
		{"batch (denied) over the underlay", batch.Host, priv, false},
		{"the rogue", rogue, priv, false},
	} {
		if got := tcpOpen(c.from, c.addr, 7000); got != c.want {
			t.Errorf("%s -> %s:7000 (DNAT to the container): open=%v, want %v", c.what, c.addr, got, c.want)
		}
	}
	if !tcpOpen(ctr, rogue.PrivateIP.String(), 9000) {
		t.Error("the container's own outbound connection is blocked")
	}
	// The container's SYN-ACK to web left db through the mesh interface,
	// forwarded: the MSS clamp saw it there. Forwarded handshakes are the
	// ones that need it (a container's MTU is not the mesh's); a local
	// socket takes its MSS from the mesh interface's MTU.
	out, err := db.Host.Run(context.Background(), "iptables", "-t", "mangle", "-L", "MESHD-MSS", "-n", "-v", "-x")
	if err != nil {
		t.Fatalf("iptables -L MESHD-MSS: %v\n%s", err, out)
	}
	clamped := -1
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "TCPMSS" {
			clamped, _ = strconv.Atoi(f[0])
		}
	}
	if clamped < 1 {
		t.Errorf("the MSS clamp saw %d forwarded handshakes into the mesh, want at least web's:\n%s", clamped, out)
	}
}
