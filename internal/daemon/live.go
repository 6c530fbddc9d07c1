package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/internal/probe"
	"github.com/meshd/meshd/mesh"
)

// upWindow is how recent a handshake must be for a session to work:
// WireGuard rejects sessions older than three minutes.
const upWindow = 3 * time.Minute

// handshakeWait bounds how long explain waits for a handshake it started.
// WireGuard sends at most one initiation per peer every 5 s and retries
// after 5 s (plus up to 1/3 s of jitter): waiting a little longer than one
// retry means a lost or rate-limited first initiation still gets its
// answer in.
const handshakeWait = 6 * time.Second

// livePeer is what the device says about one peer at this moment.
type livePeer struct {
	key      wgtypes.Key
	inDevice bool
	stats    device.PeerStats
}

// up reports whether the peer has a session younger than upWindow.
func (l livePeer) up(now time.Time) bool {
	return !l.stats.LastHandshake.IsZero() && now.Sub(l.stats.LastHandshake) < upWindow
}

// readLive reads p's counters from the device now. The reconciler's view
// (meshctl peers) is refreshed once a second; a command that answers "is
// this peer reachable right now" must not lag behind a handshake that
// completed a moment ago.
func (d *Daemon) readLive(p admin.Peer) (livePeer, error) {
	key, err := wgtypes.ParseKey(p.PublicKey)
	if err != nil {
		return livePeer{}, fmt.Errorf("peer %s: public key %q: %w", p.Name, p.PublicKey, err)
	}
	stats, err := d.dev.Stats()
	if err != nil {
		return livePeer{key: key}, err
	}
	st, ok := stats[key]
	return livePeer{key: key, inDevice: ok, stats: st}, nil
}

// overlay copies the live figures onto p: endpoint, handshake, counters and,
// with a fresh session, the state.
func (l livePeer) overlay(p *admin.Peer, now time.Time) {
	if !l.inDevice {
		return
	}
	if l.stats.Endpoint.IsValid() && l.stats.Endpoint.String() != p.Endpoint {
		// WireGuard roamed to where the peer's packets come from.
		p.Endpoint = l.stats.Endpoint.String()
	}
	if !l.stats.LastHandshake.IsZero() {
		p.LastHandshake = l.stats.LastHandshake.UTC().Format(time.RFC3339)
	}
	p.RxBytes, p.TxBytes = l.stats.RxBytes, l.stats.TxBytes
	if l.up(now) && p.State != mesh.StateStale {
		p.State = mesh.StateUp
	}
}

// awaitHandshake starts a handshake with the peer and polls the device
// until one completes or handshakeWait (or ctx) runs out. It sends one
// initiation as a retry would, so a peer WireGuard gave up on is asked once
// rather than for another 90 s (the reconciler lets such peers rest). A
// peer the device does not hold is sent one echo instead: traffic to a
// peer is what brings it into the device.
func (d *Daemon) awaitHandshake(ctx context.Context, p admin.Peer, l livePeer) livePeer {
	ctx, cancel := context.WithTimeout(ctx, handshakeWait)
	defer cancel()
	if l.inDevice {
		if err := d.dev.HandshakeOnce(l.key); err != nil {
			d.log.Debug("explain: handshake", "peer", p.Name, "err", err)
		}
	} else if addr, err := netip.ParseAddr(p.OverlayIP); err == nil {
		go func() {
			ectx, ecancel := context.WithTimeout(context.Background(), time.Second)
			defer ecancel()
			probe.Echo(ectx, addr)
		}()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return l
		case <-tick.C:
		}
		now, err := d.readLive(p)
		if err != nil {
			continue
		}
		if now.up(time.Now()) {
			return now
		}
		l = now
	}
}
