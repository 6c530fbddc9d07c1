// Package dns answers names for the mesh: <instance-id>.<domain> and
// <group>.group.<domain> to overlay addresses, and PTR records for the
// overlay pool. It is authoritative for those zones only: everything else
// is REFUSED, nothing is forwarded. The names come from the reconciler's
// view of the mesh through Source; the server answers loopback and members
// only.
//
// Wire parsing and packing is github.com/miekg/dns: a hand-written parser
// facing untrusted packets is the kind of code that should not be ours.
package dns

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Host is one host as the zone names it.
type Host struct {
	Name   string // instance id
	Addr   netip.Addr
	Groups []string
	// Live hosts are named in group answers: up or idle (or their state
	// unknown while the registry is away), never down.
	Live bool
}

// Source is the reconciler's view of the mesh: every known host, this one
// included. The zone reads it at most once per MaxAge, never per query.
type Source interface {
	Hosts() []Host
}

// Config describes the zone.
type Config struct {
	Domain string       // e.g. prod.mesh.internal
	Pool   netip.Prefix // overlay pool: its in-addr.arpa names are ours
	// TTL of every answer and of negative answers (SOA minimum). Short,
	// so a join or a leave shows through caching resolvers within the
	// mesh's convergence time. 1s if zero.
	TTL time.Duration
	// MaxAge is how stale the zone's index may get before a query
	// rebuilds it from Source. 250ms if zero.
	MaxAge time.Duration
}

// Zone answers queries from an index of Source, rebuilt lazily.
type Zone struct {
	origin  string // lower case, fully qualified
	revBits int    // octets of the reverse zone's apex, in bits
	cfg     Config
	ttl     uint32
	src     Source

	rebuild sync.Mutex
	cur     atomic.Pointer[index]
	now     func() time.Time
}

// index is one immutable snapshot of the names; queries share it.
type index struct {
	built  time.Time
	serial uint32
	byName map[string]netip.Addr // lower-case instance id
	byAddr map[netip.Addr]string // also the member set
	groups map[string][]netip.Addr
}

// NewZone returns the zone for cfg answering from src.
func NewZone(cfg Config, src Source) *Zone {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Second
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 250 * time.Millisecond
	}
	return &Zone{
		origin:  dns.CanonicalName(cfg.Domain),
		revBits: (cfg.Pool.Bits() + 7) / 8 * 8,
		cfg:     cfg, ttl: uint32(max(cfg.TTL/time.Second, 1)), src: src, now: time.Now,
	}
}

// Origin is the zone's fully qualified name.
func (z *Zone) Origin() string { return z.origin }

// IsMember reports whether addr is the overlay address of a known host.
func (z *Zone) IsMember(addr netip.Addr) bool {
	_, ok := z.index().byAddr[addr.Unmap()]
	return ok
}

// index returns a snapshot no older than MaxAge. One caller rebuilds; the
// others answer from the previous snapshot meanwhile rather than queue.
func (z *Zone) index() *index {
	idx := z.cur.Load()
	if idx != nil && z.now().Sub(idx.built) < z.cfg.MaxAge {
		return idx
	}
	if idx != nil && !z.rebuild.TryLock() {
		return idx
	}
	if idx == nil {
		z.rebuild.Lock()
	}
	defer z.rebuild.Unlock()
	if idx = z.cur.Load(); idx != nil && z.now().Sub(idx.built) < z.cfg.MaxAge {
		return idx
	}
	idx = build(z.src.Hosts(), z.now())
	z.cur.Store(idx)
	return idx
}

func build(hosts []Host, now time.Time) *index {
	idx := &index{
		built: now, serial: uint32(now.Unix()),
		byName: make(map[string]netip.Addr, len(hosts)), byAddr: make(map[netip.Addr]string, len(hosts)),
		groups: map[string][]netip.Addr{},
	}
	for _, h := range hosts {
		if !h.Addr.IsValid() {
			continue
		}
		name := strings.ToLower(h.Name)
		if _, dup := idx.byName[name]; !dup {
			idx.byName[name] = h.Addr
		}
		idx.byAddr[h.Addr] = h.Name
		for _, g := range h.Groups {
			g = strings.ToLower(g)
			addrs := idx.groups[g] // a group with no live member still exists: NODATA, not NXDOMAIN
			if h.Live {
				addrs = append(addrs, h.Addr)
			}
			idx.groups[g] = addrs
		}
	}
	return idx
}

// Answer builds the reply to req. It never returns nil.
func (z *Zone) Answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	if req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		return m
	}
	if req.IsEdns0() != nil {
		m.SetEdns0(udpSize, false)
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	if dns.IsSubDomain(z.origin, name) {
		m.Authoritative = true
		z.forward(m, q, name)
		return m
	}
	if apex, ok := z.reverseApex(name); ok {
		m.Authoritative = true
		z.reverse(m, q, name, apex)
		return m
	}
	m.Rcode = dns.RcodeRefused // not ours, and meshd never forwards
	return m
}

func wants(q dns.Question, t uint16) bool { return q.Qtype == t || q.Qtype == dns.TypeANY }

// forward answers a name inside <domain>.
func (z *Zone) forward(m *dns.Msg, q dns.Question, name string) {
	idx := z.index()
	rel := strings.TrimSuffix(strings.TrimSuffix(name, z.origin), ".")
	switch {
	case rel == "":
		if wants(q, dns.TypeSOA) {
			m.Answer = append(m.Answer, z.soa(idx, z.origin))
			return
		}
		z.noData(m, idx, z.origin)
	case rel == "group":
		if len(idx.groups) == 0 {
			z.nxDomain(m, idx, z.origin)
			return
		}
		z.noData(m, idx, z.origin)
	case strings.HasSuffix(rel, ".group"):
		addrs, ok := idx.groups[strings.TrimSuffix(rel, ".group")]
		if !ok {
			z.nxDomain(m, idx, z.origin)
			return
		}
		if !wants(q, dns.TypeA) || len(addrs) == 0 {
			z.noData(m, idx, z.origin)
			return
		}
		// Shuffled per answer: clients that take the first address
		// spread over the group.
		order := rand.Perm(len(addrs))
		for _, i := range order {
			m.Answer = append(m.Answer, z.a(q.Name, addrs[i]))
		}
	default:
		addr, ok := idx.byName[rel]
		if !ok {
			z.nxDomain(m, idx, z.origin)
			return
		}
		if !wants(q, dns.TypeA) {
			z.noData(m, idx, z.origin)
			return
		}
		m.Answer = append(m.Answer, z.a(q.Name, addr))
	}
}

// reverseApex reports whether name lies in the pool's in-addr.arpa zone,
// and that zone's apex: the pool rounded out to whole octets.
func (z *Zone) reverseApex(name string) (string, bool) {
	const suffix = ".in-addr.arpa."
	if !strings.HasSuffix(name, suffix) || !z.cfg.Pool.IsValid() {
		return "", false
	}
	labels := dns.SplitDomainName(strings.TrimSuffix(name, suffix))
	var octets [4]byte
	n := 0
	for i := len(labels) - 1; i >= 0 && n < 4; i-- {
		v, err := strconv.Atoi(labels[i])
		if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != labels[i] {
			break
		}
		octets[n] = byte(v)
		n++
	}
	if n*8 < z.revBits {
		return "", false
	}
	p := netip.PrefixFrom(netip.AddrFrom4(octets), z.revBits).Masked()
	if !z.cfg.Pool.Overlaps(p) {
		return "", false
	}
	var apex []string
	for i := z.revBits/8 - 1; i >= 0; i-- {
		apex = append(apex, strconv.Itoa(int(octets[i])))
	}
	return strings.Join(apex, ".") + suffix, true
}

// reverse answers a name inside the pool's reverse zone.
func (z *Zone) reverse(m *dns.Msg, q dns.Question, name, apex string) {
	idx := z.index()
	addr, ok := parseReverse(name)
	if !ok {
		if name == apex && wants(q, dns.TypeSOA) {
			m.Answer = append(m.Answer, z.soa(idx, apex))
			return
		}
		// An empty non-terminal (a /24 of the pool) or a malformed name.
		if len(dns.SplitDomainName(name)) < 6 && dns.IsSubDomain(apex, name) {
			z.noData(m, idx, apex)
			return
		}
		z.nxDomain(m, idx, apex)
		return
	}
	host, ok := idx.byAddr[addr]
	if !ok {
		z.nxDomain(m, idx, apex)
		return
	}
	if !wants(q, dns.TypePTR) {
		z.noData(m, idx, apex)
		return
	}
	m.Answer = append(m.Answer, &dns.PTR{
		Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: z.ttl},
		Ptr: dns.Fqdn(strings.ToLower(host)) + z.origin,
	})
}

// parseReverse reads d.c.b.a.in-addr.arpa. as a.b.c.d.
func parseReverse(name string) (netip.Addr, bool) {
	labels := dns.SplitDomainName(name)
	if len(labels) != 6 {
		return netip.Addr{}, false
	}
	var b [4]byte
	for i := 0; i < 4; i++ {
		v, err := strconv.Atoi(labels[3-i])
		if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != labels[3-i] {
			return netip.Addr{}, false
		}
		b[i] = byte(v)
	}
	return netip.AddrFrom4(b), true
}

func (z *Zone) a(name string, addr netip.Addr) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: z.ttl}, A: addr.AsSlice()}
}

func (z *Zone) soa(idx *index, apex string) dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: z.ttl},
		Ns:  "meshd." + z.origin, Mbox: "hostmaster." + z.origin,
		Serial: idx.serial, Refresh: 60, Retry: 10, Expire: 60,
		Minttl: z.ttl, // the negative-caching TTL: a joining host is not hidden by an old NXDOMAIN
	}
}

func (z *Zone) noData(m *dns.Msg, idx *index, apex string) {
	m.Ns = append(m.Ns, z.soa(idx, apex))
}

func (z *Zone) nxDomain(m *dns.Msg, idx *index, apex string) {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, z.soa(idx, apex))
}

// Groups lists the zone's groups (for status), sorted.
func (z *Zone) Groups() []string {
	idx := z.index()
	out := make([]string, 0, len(idx.groups))
	for g := range idx.groups {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}
