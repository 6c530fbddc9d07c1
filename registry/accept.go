package registry

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultMaxGroups is how many groups a record may carry unless
// Options.MaxGroups says otherwise.
const DefaultMaxGroups = 32

// maxVersion bounds the version field: it is shown in tables and logs.
const maxVersion = 64

// Refusal reasons that are not a record's format: metric labels.
const (
	ReasonTooManyGroups = "too_many_groups"
	ReasonUnderlay      = "underlay"
	ReasonOwnAddress    = "own_address"
	ReasonVersion       = "version"
	ReasonDuplicateKey  = "duplicate_key"
	ReasonNextKey       = "next_key"
)

// Refusal is a record refused now: which host, which node, why.
type Refusal struct {
	Host   string // instance id, or the node name when it has none
	Node   string // the ZooKeeper node, or the snapshot
	Reason string
	Detail string
	Since  time.Time
}

// checkUnderlay refuses an underlay address no packet should be sent to:
// anything but a routable unicast address, and the overlay pool (an
// endpoint inside the overlay would loop through the tunnel).
func checkUnderlay(what string, a netip.Addr, pool netip.Prefix) error {
	a = a.Unmap()
	switch {
	case !a.IsValid(), a.IsUnspecified():
		return bad(ReasonUnderlay, "%s address %v is unspecified", what, a)
	case a.IsLoopback():
		return bad(ReasonUnderlay, "%s address %s is loopback", what, a)
	case a.IsMulticast():
		return bad(ReasonUnderlay, "%s address %s is multicast", what, a)
	case a.IsLinkLocalUnicast():
		// 169.254.169.254 included: the cloud's metadata service.
		return bad(ReasonUnderlay, "%s address %s is link-local", what, a)
	case a.Is4() && (thisNetwork.Contains(a) || reserved4.Contains(a)):
		return bad(ReasonUnderlay, "%s address %s is not routable unicast", what, a)
	case pool.Contains(a):
		return bad(ReasonUnderlay, "%s address %s is in the overlay pool %s", what, a, pool)
	}
	return nil
}

var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")   // "this network": never a destination
	reserved4   = netip.MustParsePrefix("240.0.0.0/4") // reserved, and the limited broadcast
)

// checkVersion keeps the version field printable and short.
func checkVersion(v string) error {
	if len(v) > maxVersion {
		return bad(ReasonVersion, "version is %d bytes, at most %d", len(v), maxVersion)
	}
	if !utf8.ValidString(v) {
		return bad(ReasonVersion, "version %q is not UTF-8", v)
	}
	for _, c := range v {
		if !unicode.IsPrint(c) {
			return bad(ReasonVersion, "version %q holds an unprintable character", v)
		}
	}
	return nil
}

// bounds are the checks that depend on this host: its configured group
// limit and its own addresses.
type bounds struct {
	maxGroups int
	self      Host // id, network and underlay addresses of this host
}

// check refuses a record beyond the bounds. This host's own record is
// exempt from the address check: those are its addresses.
func (b bounds) check(h Host) error {
	if len(h.Groups) > b.maxGroups {
		return bad(ReasonTooManyGroups, "%d groups, at most %d", len(h.Groups), b.maxGroups)
	}
	if h.InstanceID == b.self.InstanceID {
		return nil
	}
	mine := func(a netip.Addr) bool {
		return a.IsValid() && (a == b.self.PublicIP || a == b.self.PrivateIP)
	}
	switch {
	case mine(h.PublicIP):
		return bad(ReasonOwnAddress, "public address %s is this host's", h.PublicIP)
	case h.PrivateIP.IsValid() && h.PrivateIP == b.self.PublicIP:
		return bad(ReasonOwnAddress, "private address %s is this host's public address", h.PrivateIP)
	case h.PrivateIP.IsValid() && h.PrivateIP == b.self.PrivateIP && h.Network == b.self.Network:
		// Private ranges overlap between networks; within one network an
		// address is one host's.
		return bad(ReasonOwnAddress, "private address %s in network %s is this host's", h.PrivateIP, h.Network)
	}
	// IPv6 likewise: a public address is this host's anywhere, a private
	// (unique-local) one within its network, since fleets reuse fd00::/8
	// prefixes between networks.
	mine6 := func(a netip.Addr) bool {
		return a.IsValid() && (a == b.self.PublicIP6 || a == b.self.PrivateIP6)
	}
	switch {
	case mine6(h.PublicIP6):
		return bad(ReasonOwnAddress, "public IPv6 address %s is this host's", h.PublicIP6)
	case h.PrivateIP6.IsValid() && h.PrivateIP6 == b.self.PublicIP6:
		return bad(ReasonOwnAddress, "private IPv6 address %s is this host's public address", h.PrivateIP6)
	case h.PrivateIP6.IsValid() && h.PrivateIP6 == b.self.PrivateIP6 && h.Network == b.self.Network:
		return bad(ReasonOwnAddress, "private IPv6 address %s in network %s is this host's", h.PrivateIP6, h.Network)
	}
	return nil
}

// view is the fleet as accepted: each host's newest record that passed the
// checks (its candidate), less those whose keys clash with another's. Two
// records with one public key are both refused, since the registry cannot
// tell the genuine one; a record announcing another host's key as its next
// key is refused. A clash ends when either side goes or changes key, and
// the records are accepted again. Indexes by key keep one change O(1).
//
// A record is held once: cands and hosts point at the same Host, which is
// never changed after put (a new record is a new Host). At 10 000 hosts
// the two copies were 9 MB of a lazy meshd's 48 MB live heap.
type view struct {
	cands  map[string]*Host
	nodes  map[string]string // id -> where its candidate came from
	hosts  map[string]*Host
	clash  map[string]Refusal // id -> why its candidate is refused
	byKey  map[wgtypes.Key][]string
	byNext map[wgtypes.Key][]string
}

// change is one host's change in the accepted view: old nil for an
// addition, cur nil for a removal.
type change struct {
	id       string
	old, cur *Host
}

func newView() *view {
	return &view{cands: map[string]*Host{}, nodes: map[string]string{}, hosts: map[string]*Host{}, clash: map[string]Refusal{},
		byKey: map[wgtypes.Key][]string{}, byNext: map[wgtypes.Key][]string{}}
}

// nextKey is the announced next key, if it differs from the key.
func nextKey(h Host) (wgtypes.Key, bool) {
	if h.NextPublicKey == nil || *h.NextPublicKey == h.PublicKey {
		return wgtypes.Key{}, false
	}
	return *h.NextPublicKey, true
}

// put makes h id's candidate (nil: id is gone) and returns the changes to
// the accepted view, and the clashes that began. The view keeps h itself:
// the caller must not change it afterwards.
func (v *view) put(id string, h *Host, node string, now time.Time) (changes []change, began []Refusal) {
	affected := []string{id}
	touch := func(k wgtypes.Key) {
		affected = append(affected, v.byKey[k]...)
		affected = append(affected, v.byNext[k]...)
	}
	if old, ok := v.cands[id]; ok {
		unindex(v.byKey, old.PublicKey, id)
		touch(old.PublicKey)
		if k, ok := nextKey(*old); ok {
			unindex(v.byNext, k, id)
			touch(k)
		}
		delete(v.cands, id)
		delete(v.nodes, id)
	}
	if h != nil {
		v.cands[id], v.nodes[id] = h, node
		v.byKey[h.PublicKey] = append(v.byKey[h.PublicKey], id)
		touch(h.PublicKey)
		if k, ok := nextKey(*h); ok {
			v.byNext[k] = append(v.byNext[k], id)
			touch(k)
		}
	}
	slices.Sort(affected)
	for _, a := range slices.Compact(affected) {
		c, began1 := v.judge(a, now)
		if c != nil {
			changes = append(changes, *c)
		}
		if began1 != nil {
			began = append(began, *began1)
		}
	}
	return changes, began
}

// judge re-decides one id after a change to a key it holds.
func (v *view) judge(id string, now time.Time) (*change, *Refusal) {
	cand, has := v.cands[id]
	var why *Refusal
	if has {
		why = v.clashOf(id, *cand)
	}
	var began *Refusal
	prev, clashed := v.clash[id]
	switch {
	case why == nil:
		delete(v.clash, id)
	default:
		// A clash that goes on keeps its start; one that begins is news.
		why.Since, why.Node = now, v.nodes[id]
		if clashed {
			why.Since = prev.Since
		} else {
			began = why
		}
		v.clash[id] = *why
	}
	old, had := v.hosts[id]
	switch {
	case has && why == nil:
		v.hosts[id] = cand
		if had {
			return &change{id: id, old: old, cur: cand}, began
		}
		return &change{id: id, cur: cand}, began
	case had:
		delete(v.hosts, id)
		return &change{id: id, old: old}, began
	}
	return nil, began
}

// clashOf says why cand's keys clash with another candidate's, or nil.
func (v *view) clashOf(id string, cand Host) *Refusal {
	if others := except(v.byKey[cand.PublicKey], id); len(others) > 0 {
		return &Refusal{Host: id, Reason: ReasonDuplicateKey,
			Detail: fmt.Sprintf("public key %s is also %s's", cand.PublicKey, others[0])}
	}
	if k, ok := nextKey(cand); ok {
		if others := except(v.byKey[k], id); len(others) > 0 {
			return &Refusal{Host: id, Reason: ReasonNextKey, Detail: fmt.Sprintf("announced next key %s is %s's key", k, others[0])}
		}
		if others := except(v.byNext[k], id); len(others) > 0 {
			return &Refusal{Host: id, Reason: ReasonNextKey, Detail: fmt.Sprintf("announced next key %s is also %s's next key", k, others[0])}
		}
	}
	return nil
}

func unindex(idx map[wgtypes.Key][]string, k wgtypes.Key, id string) {
	ids := idx[k]
	if i := slices.Index(ids, id); i >= 0 {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(idx, k)
	} else {
		idx[k] = ids
	}
}

func except(ids []string, id string) []string {
	if len(ids) == 0 || len(ids) == 1 && ids[0] == id {
		return nil
	}
	out := make([]string, 0, len(ids))
	for _, o := range ids {
		if o != id {
			out = append(out, o)
		}
	}
	return out
}
