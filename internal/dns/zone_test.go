package dns

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeSource is the reconciler's view, as a list the test edits.
type fakeSource struct {
	mu    sync.Mutex
	hosts []Host
	calls int
}

func (f *fakeSource) Hosts() []Host {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return slices.Clone(f.hosts)
}

func (f *fakeSource) set(h []Host) {
	f.mu.Lock()
	f.hosts = h
	f.mu.Unlock()
}

func testZone(t *testing.T) (*Zone, *fakeSource, *time.Time) {
	t.Helper()
	src := &fakeSource{hosts: []Host{
		{Name: "h1", Addr: netip.MustParseAddr("100.100.0.1"), Groups: []string{"web"}, Live: true},
		{Name: "H2", Addr: netip.MustParseAddr("100.100.0.2"), Groups: []string{"db", "web"}, Live: true},
		{Name: "h3", Addr: netip.MustParseAddr("100.100.1.3"), Groups: []string{"db"}, Live: false},
		{Name: "h4", Addr: netip.MustParseAddr("100.100.0.4"), Groups: []string{"db"}, Live: true},
		{Name: "h5", Addr: netip.MustParseAddr("100.100.0.5"), Groups: []string{"cold"}, Live: false},
	}}
	z := NewZone(Config{Domain: "Prod.mesh.internal", Pool: netip.MustParsePrefix("100.100.0.0/16")}, src)
	now := time.Unix(1_700_000_000, 0)
	z.now = func() time.Time { return now }
	return z, src, &now
}

func ask(z *Zone, name string, qtype uint16) *dns.Msg {
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	return z.Answer(req)
}

// rev is addr's in-addr.arpa name.
func rev(addr string) string {
	name, err := dns.ReverseAddr(addr)
	if err != nil {
		panic(err)
	}
	return name
}

func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func TestHostA(t *testing.T) {
	z, _, _ := testZone(t)
	for _, name := range []string{"h1.prod.mesh.internal.", "H1.PROD.Mesh.Internal.", "h2.prod.mesh.internal."} {
		m := ask(z, name, dns.TypeA)
		if m.Rcode != dns.RcodeSuccess || !m.Authoritative || m.RecursionAvailable {
			t.Fatalf("%s: rcode %s aa %v ra %v", name, dns.RcodeToString[m.Rcode], m.Authoritative, m.RecursionAvailable)
		}
		if len(m.Answer) != 1 || m.Answer[0].Header().Name != name || m.Answer[0].Header().Ttl != 1 {
			t.Fatalf("%s: answer %v, want one A for the name as asked with TTL 1", name, m.Answer)
		}
	}
	if got := addrs(ask(z, "h2.prod.mesh.internal.", dns.TypeA)); !slices.Equal(got, []string{"100.100.0.2"}) {
		t.Errorf("h2 = %v", got)
	}
	// A down host still has its name: its address does not change.
	if got := addrs(ask(z, "h3.prod.mesh.internal.", dns.TypeA)); !slices.Equal(got, []string{"100.100.1.3"}) {
		t.Errorf("h3 (down) = %v", got)
	}
}

func TestNegativeAnswers(t *testing.T) {
	z, _, _ := testZone(t)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"h1.prod.mesh.internal.", dns.TypeAAAA, dns.RcodeSuccess},  // NODATA: getent's AAAA must not wait
		{"nope.prod.mesh.internal.", dns.TypeA, dns.RcodeNameError}, // no such host
		{"x.h1.prod.mesh.internal.", dns.TypeA, dns.RcodeNameError}, // nothing below a host
		{"nope.group.prod.mesh.internal.", dns.TypeA, dns.RcodeNameError},
		{"cold.group.prod.mesh.internal.", dns.TypeA, dns.RcodeSuccess}, // group exists, nobody live
		{"group.prod.mesh.internal.", dns.TypeA, dns.RcodeSuccess},
		{"prod.mesh.internal.", dns.TypeA, dns.RcodeSuccess},
		{rev("100.100.0.99"), dns.TypePTR, dns.RcodeNameError}, // in the pool, unleased
		{rev("100.100.0.1"), dns.TypeA, dns.RcodeSuccess},
		{"0.100.100.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess},
		{"x." + rev("100.100.0.1"), dns.TypePTR, dns.RcodeNameError},
	} {
		m := ask(z, c.name, c.qtype)
		if m.Rcode != c.rcode || len(m.Answer) != 0 || !m.Authoritative {
			t.Errorf("%s %s: rcode %s answers %d aa %v, want %s and no answer", c.name, dns.TypeToString[c.qtype],
				dns.RcodeToString[m.Rcode], len(m.Answer), m.Authoritative, dns.RcodeToString[c.rcode])
			continue
		}
		if len(m.Ns) != 1 {
			t.Errorf("%s: authority %v, want the SOA", c.name, m.Ns)
			continue
		}
		// The negative-caching TTL is short too: a host that joins is not
		// hidden behind a cached NXDOMAIN.
		if soa, ok := m.Ns[0].(*dns.SOA); !ok || soa.Minttl != 1 || soa.Hdr.Ttl != 1 {
			t.Errorf("%s: authority %v, want a SOA with minimum 1", c.name, m.Ns[0])
		}
	}
}

func TestOutsideRefused(t *testing.T) {
	z, _, _ := testZone(t)
	for _, name := range []string{"example.com.", "mesh.internal.", "internal.", ".", "h1.prod.mesh.internal.example.com.",
		rev("192.0.2.7"), "100.in-addr.arpa.", rev("100.101.0.1")} {
		m := ask(z, name, dns.TypeA)
		if m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 || m.Authoritative {
			t.Errorf("%s: rcode %s answers %v aa %v, want REFUSED, nothing forwarded", name, dns.RcodeToString[m.Rcode], m.Answer, m.Authoritative)
		}
	}
	req := new(dns.Msg)
	req.SetQuestion("version.bind.", dns.TypeTXT)
	req.Question[0].Qclass = dns.ClassCHAOS
	if m := z.Answer(req); m.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS version.bind: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.SetNotify("prod.mesh.internal.")
	req.Opcode = dns.OpcodeUpdate
	if m := z.Answer(req); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s, want NOTIMP", dns.RcodeToString[m.Rcode])
	}
}

func TestGroupLiveMembersShuffled(t *testing.T) {
	z, _, _ := testZone(t)
	orders := map[string]bool{}
	for range 50 {
		m := ask(z, "db.group.prod.mesh.internal.", dns.TypeA)
		got := addrs(m)
		orders[strings.Join(got, ",")] = true
		slices.Sort(got)
		// h3 is down: never named. h2 and h4 are live.
		if !slices.Equal(got, []string{"100.100.0.2", "100.100.0.4"}) {
			t.Fatalf("db group = %v, want the live members 100.100.0.2 and 100.100.0.4", got)
		}
	}
	if len(orders) < 2 {
		t.Errorf("50 answers for db came in one order only: %v", orders)
	}
	if got := addrs(ask(z, "WEB.group.prod.mesh.internal.", dns.TypeA)); len(got) != 2 {
		t.Errorf("web group = %v, want 2 members", got)
	}
}

func TestPTR(t *testing.T) {
	z, _, _ := testZone(t)
	for addr, want := range map[string]string{"100.100.0.1": "h1.prod.mesh.internal.", "100.100.0.2": "h2.prod.mesh.internal.", "100.100.1.3": "h3.prod.mesh.internal."} {
		name, _ := dns.ReverseAddr(addr)
		m := ask(z, name, dns.TypePTR)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("PTR %s: %s %v", addr, dns.RcodeToString[m.Rcode], m.Answer)
		}
		if got := m.Answer[0].(*dns.PTR).Ptr; got != want {
			t.Errorf("PTR %s = %s, want %s", addr, got, want)
		}
	}
	m := ask(z, "100.100.in-addr.arpa.", dns.TypeSOA)
	if len(m.Answer) != 1 || m.Answer[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("SOA of the reverse apex: %v", m.Answer)
	}
}

// An /11 pool spans many /16s: each is a reverse apex of ours.
func TestPTRWidePool(t *testing.T) {
	src := &fakeSource{hosts: []Host{{Name: "a", Addr: netip.MustParseAddr("100.127.3.4"), Live: true}}}
	z := NewZone(Config{Domain: "m.mesh.internal", Pool: netip.MustParsePrefix("100.96.0.0/11")}, src)
	if m := ask(z, rev("100.127.3.4"), dns.TypePTR); len(m.Answer) != 1 {
		t.Errorf("PTR in a /11 pool: %s %v", dns.RcodeToString[m.Rcode], m.Answer)
	}
	if m := ask(z, rev("100.95.3.4"), dns.TypePTR); m.Rcode != dns.RcodeRefused {
		t.Errorf("PTR just outside the /11: %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
}

// Queries read a snapshot: the source is asked at most once per MaxAge,
// however many queries come, and a join shows once the snapshot ages out.
func TestIndexRebuiltByAgeNotPerQuery(t *testing.T) {
	z, src, now := testZone(t)
	for range 1000 {
		ask(z, "h1.prod.mesh.internal.", dns.TypeA)
		z.IsMember(netip.MustParseAddr("100.100.0.1"))
	}
	if src.calls != 1 {
		t.Fatalf("1000 queries asked the source %d times, want once", src.calls)
	}
	src.set(append(src.Hosts(), Host{Name: "h9", Addr: netip.MustParseAddr("100.100.0.9"), Groups: []string{"db"}, Live: true}))
	src.calls = 0
	*now = now.Add(100 * time.Millisecond)
	if m := ask(z, "h9.prod.mesh.internal.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("h9 visible before the snapshot aged: %v", m.Answer)
	}
	*now = now.Add(200 * time.Millisecond)
	if got := addrs(ask(z, "h9.prod.mesh.internal.", dns.TypeA)); !slices.Equal(got, []string{"100.100.0.9"}) {
		t.Fatalf("h9 after MaxAge = %v", got)
	}
	if got := addrs(ask(z, "db.group.prod.mesh.internal.", dns.TypeA)); len(got) != 3 {
		t.Errorf("db after h9 joined = %v, want 3", got)
	}
	if !z.IsMember(netip.MustParseAddr("100.100.0.9")) || z.IsMember(netip.MustParseAddr("100.100.0.99")) {
		t.Errorf("membership does not follow the source")
	}
	// A leave: gone from names, groups and PTR.
	src.set(src.Hosts()[:5])
	*now = now.Add(time.Second)
	if m := ask(z, "h9.prod.mesh.internal.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("h9 after leaving: %s %v", dns.RcodeToString[m.Rcode], m.Answer)
	}
	if got := addrs(ask(z, "db.group.prod.mesh.internal.", dns.TypeA)); len(got) != 2 {
		t.Errorf("db after h9 left = %v, want 2", got)
	}
}
