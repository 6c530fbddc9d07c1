package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshd/meshd/internal/testbed"
)

// dnsConvergence bounds how long a join or a leave takes to show in DNS:
// the mesh's own join bound (1 s, TestMeshAcrossNetworks) plus the zone's
// index age (250 ms).
const dnsConvergence = 1250 * time.Millisecond

type dnsFleet struct {
	t   *testing.T
	tb  *testbed.Testbed
	dom string
}

func (f *dnsFleet) start(network, extra string, groups ...string) *testbed.Meshd {
	return f.startWith(network, testbed.MeshdOptions{Extra: extra, Groups: groups})
}

func (f *dnsFleet) startWith(network string, o testbed.MeshdOptions) *testbed.Meshd {
	f.t.Helper()
	h, err := f.tb.AddHost(network)
	if err != nil {
		f.t.Fatal(err)
	}
	o.Bin, o.Links = bin(f.t), [][]string{{"vpc", "dc"}}
	o.Extra = "tuning:\n  hold_down: 2s\n  handshake_timeout: 3s\n  path_retry: 5s\n" + o.Extra
	m, err := f.tb.StartMeshd(h, o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		if f.t.Failed() {
			f.t.Logf("--- log of %s:\n%s", h.Name, m.LogTail(30))
		}
	})
	return m
}

func overlayOf(t *testing.T, m *testbed.Meshd) string {
	t.Helper()
	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st.OverlayIP
}

// dig runs dig in h and returns its short answer, sorted.
func dig(h *testbed.Host, server string, args ...string) ([]string, error) {
	out, err := h.Run(context.Background(), "dig", append([]string{"+short", "+time=1", "+tries=1", "@" + server}, args...)...)
	if err != nil {
		return nil, err
	}
	lines := strings.Fields(out)
	slices.Sort(lines)
	return lines, nil
}

func wantDig(h *testbed.Host, server string, want []string, args ...string) error {
	got, err := dig(h, server, args...)
	if err != nil {
		return err
	}
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		return fmt.Errorf("dig %v in %s: %v, want %v", args, h.Name, got, w)
	}
	return nil
}

// useResolver makes h's libc resolve through server: `ip netns exec`
// binds /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
func useResolver(t *testing.T, h *testbed.Host, server string) {
	dir := filepath.Join("/etc/netns", h.Netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := fmt.Sprintf("nameserver %s\noptions timeout:1 attempts:1\n", server)
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nsswitch.conf"), []byte("hosts: files dns\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDNSNamesHostsAndGroups: dig and getent on a host resolve peers,
// groups (live members, this host included) and addresses; meshctl takes
// the names; joins and leaves show within the convergence bound.
func TestDNSNamesHostsAndGroups(t *testing.T) {
	f := &dnsFleet{t: t, tb: testbed.NewForTest(t, testbed.Options{ZooKeeper: true})}
	f.dom = f.tb.Prefix + ".mesh.internal"
	h1 := f.start("classic", "", "web")
	h2 := f.start("vpc", "", "db", "web")
	h3 := f.start("dc", "", "db")
	ip1, ip2, ip3 := overlayOf(t, h1), overlayOf(t, h2), overlayOf(t, h3)
	waitFor(t, 30*time.Second, "h1 and h2 reach h3 over the overlay", func() error {
		for _, m := range []*testbed.Meshd{h1, h2} {
			if _, err := m.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ip3); err != nil {
				return err
			}
		}
		return nil
	})

	// dig: a peer, a group, a reverse lookup, on the host's own server
	// and across the mesh from another member.
	for _, c := range []struct {
		h      *testbed.Host
		server string
		want   []string
		args   []string
	}{
		{h1.Host, ip1, []string{ip2}, []string{"h2." + f.dom}},
		{h1.Host, ip1, []string{ip2, ip3}, []string{"db.group." + f.dom}},
		{h1.Host, ip1, []string{ip1, ip2}, []string{"web.group." + f.dom}}, // this host included
		{h1.Host, ip1, []string{"h3." + f.dom + "."}, []string{"-x", ip3}},
		{h1.Host, "127.0.0.1", nil, []string{"h2." + f.dom}}, // not listening on loopback by default
		{h3.Host, ip1, []string{ip2}, []string{"H2." + strings.ToUpper(f.dom)}},
	} {
		if c.want == nil {
			if got, err := dig(c.h, c.server, c.args...); err == nil {
				t.Errorf("dig @%s %v answered %v; meshd listens on the overlay address only", c.server, c.args, got)
			}
			continue
		}
		if err := wantDig(c.h, c.server, c.want, c.args...); err != nil {
			t.Error(err)
		}
	}
	// Outside the zone: REFUSED, nothing forwarded.
	out, _ := h1.Host.Run(context.Background(), "dig", "+time=1", "+tries=1", "@"+ip1, "example.com")
	if !strings.Contains(out, "status: REFUSED") {
		t.Errorf("dig example.com: want REFUSED:\n%s", out)
	}

	// getent through libc, with the namespace's resolv.conf naming meshd.
	useResolver(t, h1.Host, ip1)
	for _, c := range []struct{ arg, want string }{
		{"h2." + f.dom, ip2 + " +h2\\." + f.dom},
		{ip3, ip3 + " +h3\\." + f.dom},
	} {
		got, err := h1.Host.Run(context.Background(), "getent", "hosts", c.arg)
		if err != nil || !matches(got, c.want) {
			t.Errorf("getent hosts %s: %q (%v), want %s", c.arg, got, err, c.want)
		}
	}
	got, err := h1.Host.Run(context.Background(), "getent", "hosts", "db.group."+f.dom)
	if err != nil || !(matches(got, "^"+ip2+" ") || matches(got, "^"+ip3+" ")) {
		t.Errorf("getent hosts db.group: %q (%v), want %s or %s", got, err, ip2, ip3)
	}
	got, err = h1.Host.Run(context.Background(), "getent", "ahostsv4", "db.group."+f.dom)
	if err != nil || !strings.Contains(got, ip2) || !strings.Contains(got, ip3) {
		t.Errorf("getent ahostsv4 db.group: %q (%v), want %s and %s", got, err, ip2, ip3)
	}

	// meshctl takes the names; status shows the zone and where.
	if out, err := meshctl(t, h1, "ping", "-c", "1", "h2."+f.dom); err != nil || !strings.Contains(out, "h2 ("+ip2+")") {
		t.Errorf("meshctl ping h2.%s: %v\n%s", f.dom, err, out)
	}
	// Its verdict may lag the device by a tick; the name must be taken.
	if out, _ := meshctl(t, h1, "explain", "h3."+f.dom+"."); !strings.Contains(out, "ok   registry record  h3 in network dc") {
		t.Errorf("meshctl explain h3.%s. did not take the name:\n%s", f.dom, out)
	}
	if out, err := meshctl(t, h1, "ping", "db.group."+f.dom); err == nil || !strings.Contains(out, "names the group db") {
		t.Errorf("meshctl ping of a group: %v\n%s", err, out)
	}
	if out, _ := meshctl(t, h1, "status"); !matches(out, "dns: +"+f.dom+" on "+ip1+":53 ") {
		t.Errorf("meshctl status lacks the zone and where it is served:\n%s", out)
	}

	// A join shows within the bound, in names and in its group.
	h4 := f.start("classic", "", "db")
	ip4 := overlayOf(t, h4)
	d := waitFor(t, 10*time.Second, "h4 in DNS on h1", func() error {
		if err := wantDig(h1.Host, ip1, []string{ip4}, "h4."+f.dom); err != nil {
			return err
		}
		return wantDig(h1.Host, ip1, []string{ip2, ip3, ip4}, "db.group."+f.dom)
	})
	t.Logf("join: h4 answered by h1's DNS %s after its admin socket answered", d)
	if d > dnsConvergence {
		t.Errorf("join took %s to show in DNS, want <= %s", d, dnsConvergence)
	}
	// A leave: gone from names, groups and PTR.
	h4.Proc.Stop(5 * time.Second)
	d = waitFor(t, 10*time.Second, "h4 gone from DNS on h1", func() error {
		if got, err := dig(h1.Host, ip1, "h4."+f.dom); err != nil || len(got) != 0 {
			return fmt.Errorf("h4 still %v (%v)", got, err)
		}
		if got, err := dig(h1.Host, ip1, "-x", ip4); err != nil || len(got) != 0 {
			return fmt.Errorf("PTR %s still %v (%v)", ip4, got, err)
		}
		return wantDig(h1.Host, ip1, []string{ip2, ip3}, "db.group."+f.dom)
	})
	t.Logf("leave: h4 gone from h1's DNS %s after its meshd exited", d)
	if d > dnsConvergence {
		t.Errorf("leave took %s to show in DNS, want <= %s", d, dnsConvergence)
	}

	// A policy that names no DNS port: members still get answers.
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte("rules:\n  - {to: db, from: web, ports: [tcp/5432]}\n"), 0o644)
	if out, err := meshctl(t, h1, "policy", "set", policy); err != nil {
		t.Fatalf("policy set: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "h1 applies the policy", func() error {
		out, err := h1.Host.Run(context.Background(), "iptables", "-S", "MESHD-POLICY")
		if err != nil || strings.Contains(out, "no policy") {
			return fmt.Errorf("h1 still admits every member: %s %v", out, err)
		}
		return nil
	})
	if err := wantDig(h3.Host, ip1, []string{ip2, ip3}, "db.group."+f.dom); err != nil {
		t.Errorf("member's query under a policy without port 53: %v", err)
	}
	if out, err := h3.Host.Run(context.Background(), "dig", "+tcp", "+short", "+time=1", "+tries=1", "@"+ip1, "h2."+f.dom); err != nil || strings.TrimSpace(out) != ip2 {
		t.Errorf("member's TCP query under a policy without port 53: %q %v", out, err)
	}
}

func matches(s, re string) bool {
	ok, _ := regexp.MatchString(re, s)
	return ok
}

// TestDNSUnderAbuse: a non-member gets no answer at all; garbage,
// oversized names and 1 000 queries a second for 10 s leave meshd up and
// answering.
func TestDNSUnderAbuse(t *testing.T) {
	f := &dnsFleet{t: t, tb: testbed.NewForTest(t, testbed.Options{ZooKeeper: true})}
	f.dom = f.tb.Prefix + ".mesh.internal"
	// h1 listens everywhere with its firewall off, so that only meshd's
	// own check stands between strangers and its answers.
	h1 := f.startWith("vpc", testbed.MeshdOptions{Extra: "dns:\n  listen: \"0.0.0.0:53\"\n", Groups: []string{"web"}, Firewall: "off"})
	h2 := f.start("vpc", "", "db")
	ip1, ip2 := overlayOf(t, h1), overlayOf(t, h2)
	waitFor(t, 30*time.Second, "h2 reaches h1", func() error {
		_, err := h2.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ip1)
		return err
	})
	if err := wantDig(h2.Host, ip1, []string{ip2}, "h2."+f.dom); err != nil {
		t.Fatal(err)
	}
	if err := wantDig(h1.Host, "127.0.0.1", []string{ip1}, "h1."+f.dom); err != nil {
		t.Fatalf("loopback: %v", err)
	}

	// Non-members: the rogue next to h1 in vpc, the outsider on the
	// internet. No answer, not even REFUSED, over UDP or TCP.
	rogue, err := f.tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := h1.Status()
	before := st.DNS.Dropped
	for _, c := range []struct {
		h      *testbed.Host
		server string
	}{{rogue, h1.Host.PrivateIP.String()}, {f.tb.Outsider(), h1.Host.PublicIP.String()}} {
		for _, proto := range []string{"+notcp", "+tcp"} {
			out, err := c.h.Run(context.Background(), "dig", proto, "+time=1", "+tries=1", "@"+c.server, "h2."+f.dom)
			if err == nil || strings.Contains(out, "status:") {
				t.Errorf("%s (non-member) %s got an answer from %s:\n%s", c.h.Name, proto, c.server, out)
			}
		}
	}
	st, _ = h1.Status()
	if st.DNS.Dropped-before < 4 {
		t.Errorf("dropped counter rose by %d for 4 non-member queries", st.DNS.Dropped-before)
	}

	// Garbage and oversized names from a member: FORMERR or nothing.
	dir := t.TempDir()
	for i, p := range abusePackets() {
		file := filepath.Join(dir, fmt.Sprint(i))
		os.WriteFile(file, p, 0o644)
		if _, err := h2.Host.Run(context.Background(), "bash", "-c", fmt.Sprintf("cat %s > /dev/udp/%s/53", file, ip1)); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("a", 63)
	out, _ := h2.Host.Run(context.Background(), "dig", "+time=1", "+tries=1", "@"+ip1, strings.Join([]string{long, long, long, "x"}, ".")+"."+f.dom)
	if !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("a long name in the zone: want NXDOMAIN:\n%s", out)
	}

	// 1 000 queries a second for 10 s, from h2 across the mesh.
	res := flood(t, h2.Host, ip1+":53", "db.group."+f.dom, 1000, 10*time.Second)
	t.Logf("flood: %s", res)
	select {
	case <-h1.Proc.Exited():
		t.Fatalf("meshd exited under abuse: %v\n%s", h1.Proc.Err(), h1.LogTail(30))
	default:
	}
	if res.sent < 9500 || res.bad > 0 || float64(res.ok) < 0.99*float64(res.sent) {
		t.Errorf("flood: %s; want >= 99%% answered, none wrong", res)
	}
	if err := wantDig(h2.Host, ip1, []string{ip2}, "db.group."+f.dom); err != nil {
		t.Errorf("after abuse: %v", err)
	}
}

// abusePackets are datagrams no resolver sends: empty, short, text, a
// response, a name longer than 255 bytes, a compression loop, a huge count.
func abusePackets() [][]byte {
	hdr := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	oversized := append([]byte{}, hdr...)
	for range 5 {
		oversized = append(oversized, 63)
		oversized = append(oversized, strings.Repeat("b", 63)...)
	}
	oversized = append(oversized, 0, 0, 1, 0, 1)
	loop := append(append([]byte{}, hdr...), 0xc0, 0x0c, 0, 1, 0, 1)
	counts := []byte{0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0}
	resp := append([]byte{}, hdr...)
	resp[2] |= 0x80
	return [][]byte{{0xff}, []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 1400), oversized, loop, counts, resp}
}

type floodResult struct {
	sent, ok, bad int
	p99           time.Duration
}

func (r floodResult) String() string {
	return fmt.Sprintf("%d sent, %d answered right, %d wrong, p99 %s", r.sent, r.ok, r.bad, r.p99)
}

// flood runs this test binary inside h as the load generator (see
// TestMain): rate queries a second for d, then reports.
func flood(t *testing.T, h *testbed.Host, server, name string, rate int, d time.Duration) floodResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("MESHD_DNS_FLOOD=%s,%s,%d,%s", server, name, rate, d))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flood generator: %v\n%s", err, out)
	}
	var r floodResult
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d %d %d %d", &r.sent, &r.ok, &r.bad, &r.p99); err != nil {
		t.Fatalf("flood generator output %q: %v", out, err)
	}
	return r
}

// runFlood sends rate queries a second for d from 20 workers, each with a
// 1 s timeout, and prints "sent ok bad p99(ns)". An answer is right if it
// is NOERROR with at least one A record.
func runFlood(spec string) {
	parts := strings.Split(spec, ",")
	server, name := parts[0], dns.Fqdn(parts[1])
	var rate int
	fmt.Sscan(parts[2], &rate)
	d, _ := time.ParseDuration(parts[3])
	const workers = 20
	type result struct {
		sent, ok, bad int
		lat           []time.Duration
	}
	results := make(chan result, workers)
	deadline := time.Now().Add(d)
	per := time.Duration(workers) * time.Second / time.Duration(rate)
	for w := range workers {
		go func() {
			var r result
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			next := time.Now().Add(time.Duration(w) * per / workers)
			for next.Before(deadline) {
				time.Sleep(time.Until(next))
				next = next.Add(per)
				req := new(dns.Msg)
				req.SetQuestion(name, dns.TypeA)
				r.sent++
				m, rtt, err := c.Exchange(req, server)
				switch {
				case err != nil:
				case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
					r.ok++
					r.lat = append(r.lat, rtt)
				default:
					r.bad++
				}
			}
			results <- r
		}()
	}
	var ok, bad, sent int
	var lat []time.Duration
	for range workers {
		r := <-results
		sent += r.sent
		ok += r.ok
		bad += r.bad
		lat = append(lat, r.lat...)
	}
	slices.Sort(lat)
	var p99 time.Duration
	if len(lat) > 0 {
		p99 = lat[len(lat)*99/100]
	}
	fmt.Printf("%d %d %d %d\n", sent, ok, bad, int64(p99))
}
