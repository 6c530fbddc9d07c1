package mesh

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
)

// Lazy peers (issue 17): only peers with recent traffic live in the
// WireGuard device. The rest are known — record, path candidates, firewall
// sets, `meshctl peers` lists them idle — and cost wireguard-go nothing: no
// queues, no goroutines, no timers, no statistics to read each second.
//
// A peer comes in when this host sends to it (the device holds the first
// packets and asks, WantPeer) or when it sends a handshake initiation (the
// device's identifier names it, PeerInitiated). It goes out again after
// LazyConfig.IdleAfter without traffic either way; that must exceed
// WireGuard's reject-after time (180 s), so that by then both sides'
// sessions are dead and neither keeps one the other has dropped.

// RejectAfter is WireGuard's REJECT_AFTER_TIME: a session's keys are
// refused after it, so an idle time above it leaves no live session behind.
const RejectAfter = 180 * time.Second

// DefaultIdleAfter leaves a margin over RejectAfter for clocks and ticks.
const DefaultIdleAfter = 5 * time.Minute

// IdleGate is the device's outbound side of lazy peers: packets to an idle
// peer's overlay address are held until Activate sends them on.
type IdleGate interface {
	MarkIdle(overlay netip.Addr) error
	Activate(overlay netip.Addr) (int, error)
	Forget(overlay netip.Addr)
}

// Initiators is the device's inbound side: who may initiate, and from where
// it is expected (the identifier tries the endpoint before any crypto).
type Initiators interface {
	SetPeer(key wgtypes.Key, endpoints ...netip.AddrPort)
	RemovePeer(key wgtypes.Key)
}

// LazyConfig turns lazy peers on.
type LazyConfig struct {
	IdleAfter  time.Duration // DefaultIdleAfter if zero
	Gate       IdleGate
	Initiators Initiators // nil: only outbound traffic brings peers in
}

func (r *Reconciler) lazy() bool { return r.cfg.Lazy != nil }

// WantPeer asks for the peer at overlay to be brought into the device: the
// device holds packets for it. It never blocks (the device's read path
// calls it); a full queue drops the ask, which the device repeats.
func (r *Reconciler) WantPeer(overlay netip.Addr) {
	select {
	case r.wants <- want{overlay: overlay}:
	default:
	}
}

// PeerInitiated says the peer with this key sent a handshake initiation,
// which wireguard-go will have dropped if the peer was idle. redeliver, if
// not nil, hands that initiation back to the device once the peer is in;
// without it (or if it fails) this host initiates instead, which costs the
// peer a crossed handshake and up to a five-second retry. It never blocks,
// as WantPeer.
func (r *Reconciler) PeerInitiated(key wgtypes.Key, redeliver func() error) {
	select {
	case r.wants <- want{key: key, redeliver: redeliver}:
	default:
	}
}

// want is one ask to bring a peer in, by overlay address or by key.
type want struct {
	overlay   netip.Addr
	key       wgtypes.Key
	redeliver func() error
}

// bringIn puts an idle peer into the device and lets what was held for it
// go: the packets the device held, or the initiation that asked.
func (r *Reconciler) bringIn(w want) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.byOverlay[w.overlay]
	if !w.overlay.IsValid() {
		p = r.byKey[w.key]
	}
	if p == nil || !p.idle || len(p.cands) == 0 {
		return
	}
	now := r.now()
	p.idle, p.activeAt = false, now
	p.path = newPathState(p.cands, now, r.cfg.Timers)
	delta := device.Delta{Upsert: []device.Peer{r.devicePeer(p)}}
	r.setInDevice(p, true)
	// Asked by a packet, our handshake starts with the first held one.
	r.applyDevice(delta, nil)
	by := "packet"
	if !w.overlay.IsValid() {
		by = "initiation"
		if w.redeliver == nil {
			r.handshake([]wgtypes.Key{p.host.PublicKey})
		} else if err := w.redeliver(); err != nil {
			r.log.Debug("lazy peers: initiation not handed back; initiating instead", "peer", p.host.InstanceID, "err", err)
			r.handshake([]wgtypes.Key{p.host.PublicKey})
		}
	}
	n, err := r.cfg.Lazy.Gate.Activate(p.host.OverlayIP)
	if err != nil {
		r.log.Error("lazy peers: send held packets", "peer", p.host.InstanceID, "err", err)
	}
	r.log.Debug("peer brought in", "peer", p.host.InstanceID, "by", by, "held_packets", n)
}

// idleLocked makes p an idle peer: known, not in the device. Packets to it
// are held from before it leaves the device, so none falls in between.
func (r *Reconciler) idleLocked(p *peer, delta *device.Delta) {
	if err := r.cfg.Lazy.Gate.MarkIdle(p.host.OverlayIP); err != nil {
		r.log.Error("lazy peers: mark idle", "peer", p.host.InstanceID, "err", err)
		return
	}
	if p.inDevice {
		delta.Remove = append(delta.Remove, p.host.PublicKey)
		r.setInDevice(p, false)
	}
	p.idle = true
}

// forgetLazy drops what the device keeps for a peer that is going, or
// whose overlay address or key changed (to the old ones).
func (r *Reconciler) forgetLazy(overlay netip.Addr, key wgtypes.Key) {
	if !r.lazy() {
		return
	}
	if overlay.IsValid() {
		r.cfg.Lazy.Gate.Forget(overlay)
	}
	if r.cfg.Lazy.Initiators != nil && key != (wgtypes.Key{}) {
		r.cfg.Lazy.Initiators.RemovePeer(key)
	}
}

// LazyCounts is how many peers the device holds now, and how many known
// peers are idle out of it (whatever state status reports them in: a
// stale peer can be idle too).
func (r *Reconciler) LazyCounts() (inDevice, idle int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.peers {
		if p.idle {
			idle++
		}
	}
	return len(r.inDev), idle
}

// registerInitiator tells the identifier p's key and the endpoints its
// initiations may come from.
func (r *Reconciler) registerInitiator(p *peer) {
	if !r.lazy() || r.cfg.Lazy.Initiators == nil || len(p.cands) == 0 {
		return
	}
	eps := make([]netip.AddrPort, 0, len(p.cands))
	for _, c := range p.cands {
		eps = append(eps, c.Endpoint)
	}
	r.cfg.Lazy.Initiators.SetPeer(p.host.PublicKey, eps...)
}

// reapLocked takes a peer without traffic for IdleAfter out of the device
// and reports whether it did. A vanishing peer is left to the hold-down.
func (r *Reconciler) reapLocked(p *peer, now time.Time, delta *device.Delta) bool {
	if !r.lazy() || !p.inDevice || !p.removeAt.IsZero() || p.activeAt.IsZero() || now.Sub(p.activeAt) < r.cfg.Lazy.IdleAfter {
		return false
	}
	r.idleLocked(p, delta)
	if p.inDevice {
		return false // the gate refused; it stays
	}
	p.path = nil // a new one comes with the peer, from where it is then
	r.log.Debug("peer idle: out of the device", "peer", p.host.InstanceID, "quiet_for", now.Sub(p.activeAt).Round(time.Second))
	return true
}
