package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Path names how a peer is reached on the underlay.
type Path string

// Paths, as CONTRACTS.md reports them.
const (
	PathPrivate Path = "private" // same network, private address
	PathLink    Path = "link"    // private address over a direct-connect link
	PathPublic  Path = "public"  // public address, across network boundaries
)

// Location is where a host sits on the underlay: the part of a host record
// that path selection reads.
type Location struct {
	Network   string
	PrivateIP netip.Addr
	PublicIP  netip.Addr // zero when the host has no public address
	Port      uint16
}

// Candidate is one way to reach a peer, with the reason it was chosen in
// words an operator reads in `meshctl peers`.
type Candidate struct {
	Path     Path
	Endpoint netip.AddrPort
	Reason   string
}

// Links is the set of network pairs joined by a private link. Order within a
// pair does not matter.
type Links map[[2]string]bool

// NewLinks builds Links from config or registry pairs; entries that are not
// pairs are ignored (config validation rejects them earlier).
func NewLinks(pairs [][]string) Links {
	l := Links{}
	for _, p := range pairs {
		if len(p) == 2 && p[0] != p[1] {
			l[linkKey(p[0], p[1])] = true
		}
	}
	return l
}

func linkKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Joined reports whether networks a and b are joined by a private link.
func (l Links) Joined(a, b string) bool { return l[linkKey(a, b)] }

// Pairs lists the links in a stable order.
func (l Links) Pairs() [][]string {
	out := make([][]string, 0, len(l))
	for k := range l {
		out = append(out, []string{k[0], k[1]})
	}
	slices.SortFunc(out, func(a, b []string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	return out
}

// Candidates lists the ways self may reach peer, best first. A private path
// (same network, or networks joined by a link) comes first and the public
// address is the fallback; across networks only the public address works.
// When no candidate exists the second result says why, in words.
func Candidates(self, peer Location, links Links) ([]Candidate, string) {
	var out []Candidate
	pub := func(reason string) {
		if peer.PublicIP.IsValid() {
			out = append(out, Candidate{PathPublic, netip.AddrPortFrom(peer.PublicIP, peer.Port), reason})
		}
	}
	switch {
	case self.Network == peer.Network:
		if peer.PrivateIP.IsValid() {
			out = append(out, Candidate{PathPrivate, netip.AddrPortFrom(peer.PrivateIP, peer.Port), "same network " + peer.Network})
		}
		pub("same network " + peer.Network + ", private path failed")
	case links.Joined(self.Network, peer.Network):
		if peer.PrivateIP.IsValid() {
			out = append(out, Candidate{PathLink, netip.AddrPortFrom(peer.PrivateIP, peer.Port),
				fmt.Sprintf("link %s<->%s", self.Network, peer.Network)})
		}
		pub(fmt.Sprintf("link %s<->%s, private path failed", self.Network, peer.Network))
	default:
		pub(fmt.Sprintf("different networks %s and %s", self.Network, peer.Network))
	}
	if len(out) == 0 {
		if self.Network == peer.Network || links.Joined(self.Network, peer.Network) {
			return nil, "peer has neither a private nor a public address"
		}
		return nil, fmt.Sprintf("unreachable: peer in network %s has no public address and %s is not linked to it", peer.Network, self.Network)
	}
	return out, ""
}
