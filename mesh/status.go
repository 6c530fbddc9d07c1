package mesh

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer states, as CONTRACTS.md reports them.
const (
	StateUp         = "up"
	StateIdle       = "idle"
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
	// HeldByBreaker: the hold-down is over and the breaker holds it.
	HeldByBreaker bool
	// KeptAlive: its record is gone but WireGuard still hears it, so it
	// stays (stale) until it has been silent for the hold-down.
	KeptAlive bool
	// StaleReason says, in words, why a stale peer is kept.
	StaleReason string
	// The record's IPv6 underlay addresses (zero: none): the firewall
	// admits the peer from them; WireGuard endpoints stay IPv4.
	PrivateIP6, PublicIP6 netip.Addr
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
			PublicKey: p.host.PublicKey, Groups: p.host.Groups, PrivateIP6: p.host.PrivateIP6, PublicIP6: p.host.PublicIP6,
			LastHandshake: p.obs.LastHandshake, RxBytes: p.obs.RxBytes, TxBytes: p.obs.TxBytes,
			RemovalHeld: !p.removeAt.IsZero(), HeldByBreaker: r.breaker.held[p.host.InstanceID],
		}
		switch {
		case p.idle && len(p.cands) > 0:
			ps.Candidates, ps.Path = p.cands, p.cands[0].Path
			ps.State, ps.Reason = StateIdle, "no recent traffic: out of the WireGuard device until a packet or a handshake brings it in"
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
			ps.State = p.path.state(p.obs, now)
		}
		switch {
		case !registryLive:
			ps.State, ps.StaleReason = StateStale, "registry unreachable: kept from the last view (fail static)"
		case !p.goneAt.IsZero():
			ps.State, ps.KeptAlive, ps.StaleReason = StateStale, r.isKeptAlive(p, now), r.staleReason(p, now)
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// isKeptAlive: the record is gone, its hold-down is over, and WireGuard
// still hears the peer.
func (r *Reconciler) isKeptAlive(p *peer, now time.Time) bool {
	return !p.goneAt.IsZero() && !p.retired && !now.Before(p.removeAt) && r.cfg.HoldDown > 0 && r.alive(p, now)
}

func (r *Reconciler) staleReason(p *peer, now time.Time) string {
	gone := fmt.Sprintf("no registry record for %s", now.Sub(p.goneAt).Round(time.Second))
	switch {
	case r.breaker.held[p.host.InstanceID]:
		return gone + "; removal held by the mass-removal breaker"
	case r.alive(p, now):
		return fmt.Sprintf("%s; kept: WireGuard heard it %s ago (the data plane is alive); removed after %s of silence",
			gone, now.Sub(lastHeard(p)).Round(time.Second), r.cfg.HoldDown)
	case !p.lastCall.IsZero():
		return fmt.Sprintf("%s; silent for %s: removed unless it answers a handshake", gone, r.silence(p, now))
	}
	return fmt.Sprintf("%s; in hold-down until %s", gone, p.removeAt.UTC().Format(time.TimeOnly))
}

// Summary is the reconciler's part of `meshctl status`.
type Summary struct {
	Peers    int
	Applied  uint64 // peer changes applied to the device since start
	LastSync time.Time
	Breaker  BreakerState
	Links    [][]string
	Apply    ApplyState
	// KeptAlive counts, by network, peers whose record is gone but whose
	// data plane is alive: a network cut off from the registry shows here.
	KeptAlive map[string]int
}

// Summary reports counters and the breaker.
func (r *Reconciler) Summary() Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := Summary{
		Peers: len(r.peers), Applied: r.applied, LastSync: r.lastSync, Links: r.links.Pairs(),
		Breaker: BreakerState{Tripped: r.breaker.tripped, Held: len(r.breaker.held), Limit: r.breaker.limit(len(r.peers))},
		Apply:   r.applyState(), KeptAlive: map[string]int{},
	}
	now := r.now()
	for _, p := range r.peers {
		if r.isKeptAlive(p, now) {
			sum.KeptAlive[p.host.Network]++
		}
	}
	return sum
}

// KeptAlive returns the peers whose record is gone but whose data plane is
// alive, by instance id: for the fleet report.
func (r *Reconciler) KeptAlive() map[string]PeerStatus {
	out := map[string]PeerStatus{}
	for _, p := range r.Peers(true) {
		if p.KeptAlive {
			out[p.Name] = p
		}
	}
	return out
}

func (r *Reconciler) applyState() ApplyState {
	q := r.pend
	a := ApplyState{Failures: q.failures, LastErrorAt: q.lastErrAt, Pending: q.changes()}
	if q.lastErr != nil {
		a.LastError = q.lastErr.Error()
	}
	if a.Pending > 0 {
		a.RetryAt = q.retryAt
	}
	return a
}

// Members lists every known host as the firewall sees it, for a resync.
func (r *Reconciler) Members() []MemberHost {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]MemberHost, 0, len(r.peers))
	for _, p := range r.peers {
		out = append(out, MemberOf(*p.host))
	}
	return out
}
