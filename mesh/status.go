package mesh

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer states, as CONTRACTS.md reports them.
const (
	StateUp         = "up"
	StateConnecting = "connecting"
	StateDown       = "down"
	StateStale      = "stale"
)

// upWindow is how recent a handshake must be for a peer to count as up:
// WireGuard rejects sessions older than three minutes.
const upWindow = 3 * time.Minute

// PeerStatus is one peer as the reconciler sees it now.
type PeerStatus struct {
	Name          string
	OverlayIP     netip.Addr
	Network       string
	PublicKey     wgtypes.Key
	Groups        []string
	Endpoint      netip.AddrPort // in use on the device; zero if none
	Path          Path
	Reason        string
	LastHandshake time.Time
	RxBytes       uint64
	TxBytes       uint64
	State         string
	Candidates    []Candidate
	// RemovalHeld is set while the record is gone but the peer stays:
	// during the hold-down or while the breaker holds removals.
	RemovalHeld bool
}

// Peers reports every peer, sorted by name. With registryLive false (the
// registry is unreachable and the view comes from the snapshot) every peer
// is stale.
func (r *Reconciler) Peers(registryLive bool) []PeerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]PeerStatus, 0, len(r.peers))
	for _, p := range r.peers {
		ps := PeerStatus{
			Name: p.host.InstanceID, OverlayIP: p.host.OverlayIP, Network: p.host.Network,
			PublicKey: p.host.PublicKey, Groups: p.host.Groups,
			LastHandshake: p.obs.LastHandshake, RxBytes: p.obs.RxBytes, TxBytes: p.obs.TxBytes,
			RemovalHeld: !p.removeAt.IsZero(),
		}
		switch {
		case p.path == nil:
			ps.State, ps.Reason = StateDown, p.unreachable
		default:
			ps.Candidates = p.path.cands
			cur, _ := p.path.current()
			ps.Endpoint, ps.Path, ps.Reason = cur.Endpoint, cur.Path, p.path.reason()
			// WireGuard may have roamed to where the peer's packets come
			// from; report the endpoint really in use and its path.
			if p.obs.Endpoint.IsValid() && p.obs.Endpoint != cur.Endpoint {
				ps.Endpoint = p.obs.Endpoint
				for _, c := range p.path.cands {
					if c.Endpoint == p.obs.Endpoint {
						ps.Path = c.Path
					}
				}
			}
			switch {
			case !p.obs.LastHandshake.IsZero() && now.Sub(p.obs.LastHandshake) < upWindow:
				ps.State = StateUp
			case p.path.exhausted:
				ps.State = StateDown
			default:
				ps.State = StateConnecting
			}
		}
		if !registryLive {
			ps.State = StateStale
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Summary is the reconciler's part of `meshctl status`.
type Summary struct {
	Peers    int
	Applied  uint64 // peer changes applied to the device since start
	LastSync time.Time
	Breaker  BreakerState
	Links    [][]string
}

// Summary reports counters and the breaker.
func (r *Reconciler) Summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Summary{
		Peers: len(r.peers), Applied: r.applied, LastSync: r.lastSync, Links: r.links.Pairs(),
		Breaker: BreakerState{Tripped: r.breaker.tripped, Held: r.breaker.held, Limit: r.breaker.limit(len(r.peers))},
	}
}

// Members lists every known host as the firewall sees it, for a resync.
func (r *Reconciler) Members() []MemberHost {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]MemberHost, 0, len(r.peers))
	for _, p := range r.peers {
		out = append(out, memberOf(p.host))
	}
	return out
}
