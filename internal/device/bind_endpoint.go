package device

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Endpoint is a peer's address as the Bind sends to it: the destination,
// with the sockaddr and the bytes wireguard-go's cookies hash prepared once,
// and the sticky source (the local address and interface the peer's last
// packet came in on), so replies leave from where the peer sent to.
//
// An Endpoint is immutable but for ClearSrc, so the receive path can hand the
// same one to every packet from the same address and wireguard-go can keep it
// as the peer's endpoint.
type Endpoint struct {
	key     epKey
	sa      [unix.SizeofSockaddrInet6]byte // raw sockaddr_in or sockaddr_in6
	salen   uint32
	dst     []byte      // DstToBytes
	cleared atomic.Bool // ClearSrc was called: send without a source
}

// epKey is what makes two received packets' endpoints the same.
type epKey struct {
	ap    netip.AddrPort
	src   netip.Addr // local address the packet was sent to; invalid if unknown
	ifidx int32
}

func newEndpoint(k epKey, scope uint32) *Endpoint {
	e := &Endpoint{key: k}
	e.dst, _ = k.ap.MarshalBinary()
	a := k.ap.Addr()
	if a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&e.sa[0]))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], k.ap.Port())
		sa.Addr = a.As4()
		e.salen = unix.SizeofSockaddrInet4
	} else {
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&e.sa[0]))
		sa.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], k.ap.Port())
		sa.Addr = a.As16()
		sa.Scope_id = scope
		e.salen = unix.SizeofSockaddrInet6
	}
	return e
}

// ClearSrc forgets the sticky source: wireguard-go calls it when the
// routes changed, and the Bind when the kernel refused the source.
func (e *Endpoint) ClearSrc() { e.cleared.Store(true) }

// SrcIP is the sticky source address, if any.
func (e *Endpoint) SrcIP() netip.Addr {
	if e.cleared.Load() {
		return netip.Addr{}
	}
	return e.key.src
}

// SrcToString is the sticky source address as text ("invalid IP" if none).
func (e *Endpoint) SrcToString() string { return e.SrcIP().String() }

// DstToString is the peer's address, "198.51.100.7:51820".
func (e *Endpoint) DstToString() string { return e.key.ap.String() }

// DstToBytes is the peer's address as wireguard-go's cookie MACs hash it.
// The slice is shared: callers only read it.
func (e *Endpoint) DstToBytes() []byte { return e.dst }

// DstIP is the peer's address.
func (e *Endpoint) DstIP() netip.Addr { return e.key.ap.Addr() }

// AddrPort is the peer's address and port.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.key.ap }

// sticky reports the source to send from, if any.
func (e *Endpoint) sticky() (netip.Addr, int32, bool) {
	if e.cleared.Load() || !e.key.src.IsValid() {
		return netip.Addr{}, 0, false
	}
	return e.key.src, e.key.ifidx, true
}

// epCache hands out one Endpoint per (address, sticky source) without
// allocating. It is bounded: when the current generation is full it becomes
// the old one and the one before is dropped, so a flood from spoofed sources
// costs at most 2×limit entries (and one allocation per spoofed packet, as
// StdNetBind pays for every packet), while active peers are found again in the
// old generation and carried over. Owned by one receiver: not safe for
// concurrent use.
type epCache struct {
	cur, old map[epKey]*Endpoint
	limit    int
	made     *atomic.Uint64
}

func newEPCache(limit int, made *atomic.Uint64) *epCache {
	return &epCache{cur: make(map[epKey]*Endpoint), limit: limit, made: made}
}

// get is the endpoint for k. A cleared endpoint is never handed out again:
// the packet in hand proves the source is current, so a fresh one replaces it
// (wireguard-go keeps the old one as the peer's until this one arrives).
func (c *epCache) get(k epKey, scope uint32) *Endpoint {
	if e, ok := c.cur[k]; ok && !e.cleared.Load() {
		return e
	}
	e, ok := c.old[k]
	if !ok || e.cleared.Load() {
		e = newEndpoint(k, scope)
		c.made.Add(1)
	}
	if len(c.cur) >= c.limit {
		c.old, c.cur = c.cur, make(map[epKey]*Endpoint, c.limit)
	}
	c.cur[k] = e
	return e
}

// len is how many endpoints the cache holds.
func (c *epCache) len() int { return len(c.cur) + len(c.old) }

// zoneOf names a link-local sender's scope the way netip does (an index;
// rare, so the allocation of the string is acceptable).
func zoneOf(a netip.Addr, scope uint32) netip.Addr {
	if scope == 0 || !a.Is6() || !a.IsLinkLocalUnicast() {
		return a
	}
	return a.WithZone(strconv.FormatUint(uint64(scope), 10))
}
