package mesh

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/registry"
)

// fakeGate records the device's lazy-peer side.
type fakeGate struct {
	idle       map[netip.Addr]bool
	activated  []netip.Addr
	forgotten  []netip.Addr
	initiators map[wgtypes.Key][]netip.AddrPort
}

func (g *fakeGate) MarkIdle(a netip.Addr) error { g.idle[a] = true; return nil }
func (g *fakeGate) Activate(a netip.Addr) (int, error) {
	delete(g.idle, a)
	g.activated = append(g.activated, a)
	return 1, nil
}
func (g *fakeGate) Forget(a netip.Addr)                          { delete(g.idle, a); g.forgotten = append(g.forgotten, a) }
func (g *fakeGate) SetPeer(k wgtypes.Key, eps ...netip.AddrPort) { g.initiators[k] = eps }
func (g *fakeGate) RemovePeer(k wgtypes.Key)                     { delete(g.initiators, k) }

func newLazyReconciler(t *testing.T) (*Reconciler, *fakeDevice, *fakeGate, *time.Time) {
	dev := newFakeDevice()
	g := &fakeGate{idle: map[netip.Addr]bool{}, initiators: map[wgtypes.Key][]netip.AddrPort{}}
	r := New(Config{Self: rhost("self", "vpc", 1), HoldDown: time.Second, Breaker: BreakerConfig{MaxRemovals: 100, Window: time.Minute},
		Lazy:   &LazyConfig{Gate: g, Initiators: g},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, dev, nil)
	now := time.Unix(1_000_000, 0)
	r.now = func() time.Time { return now }
	return r, dev, g, &now
}

func stateOf(r *Reconciler, id string) string {
	for _, p := range r.Peers(true) {
		if p.Name == id {
			return p.State
		}
	}
	return "absent"
}

// drain handles the asks WantPeer and PeerInitiated queued, as Run would.
func drain(r *Reconciler) {
	for {
		select {
		case w := <-r.wants:
			r.bringIn(w)
		default:
			return
		}
	}
}

func TestLazyPeerLifecycle(t *testing.T) {
	r, dev, g, now := newLazyReconciler(t)
	a, b := rhost("a", "vpc", 10), rhost("b", "classic", 11)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &a}, {Kind: registry.Added, Host: &b}})

	// Known, firewall-visible, but not in the device: no peer, no handshake.
	if len(dev.peers) != 0 || len(dev.handshakes) != 0 {
		t.Fatalf("new peers went into the device: %d peers, %d handshakes", len(dev.peers), len(dev.handshakes))
	}
	if !g.idle[a.OverlayIP] || !g.idle[b.OverlayIP] {
		t.Fatalf("idle addresses %v, want both peers'", g.idle)
	}
	if s := stateOf(r, "a"); s != StateIdle {
		t.Errorf("meshctl peers state %q, want idle", s)
	}
	if eps := g.initiators[b.PublicKey]; !slices.Contains(eps, netip.MustParseAddrPort("198.19.1.11:51820")) {
		t.Errorf("b's initiations are expected from %v, want its public endpoint", eps)
	}

	// A packet to a: in the device, the held packets sent (they start
	// wireguard-go's handshake).
	r.WantPeer(a.OverlayIP)
	drain(r)
	if _, ok := dev.peers[a.PublicKey]; !ok {
		t.Fatalf("a packet to an idle peer did not bring it in: peers %v", dev.peers)
	}
	if !slices.Contains(g.activated, a.OverlayIP) || g.idle[a.OverlayIP] {
		t.Errorf("held packets not released for a: activated %v", g.activated)
	}
	if _, ok := dev.peers[b.PublicKey]; ok {
		t.Error("bringing a in brought b in too")
	}
	// Its keepalive would be traffic for ever: lazy peers have none.
	// b's initiation is handed back once b is in, and no crossing
	// handshake of ours is started.
	redelivered := 0
	r.PeerInitiated(b.PublicKey, func() error { redelivered++; return nil })
	drain(r)
	if p, ok := dev.peers[b.PublicKey]; !ok || p.PersistentKeepalive != 0 {
		t.Fatalf("b's initiation: in device %v, keepalive %s", ok, p.PersistentKeepalive)
	}
	if redelivered != 1 || slices.Contains(dev.handshakes, b.PublicKey) {
		t.Errorf("b's initiation redelivered %d times, our handshake started: %v", redelivered, slices.Contains(dev.handshakes, b.PublicKey))
	}

	// Traffic keeps a in; silence for IdleAfter takes it out again.
	*now = now.Add(DefaultIdleAfter / 2)
	dev.stats[a.PublicKey] = device.PeerStats{TxBytes: 100, RxBytes: 100}
	r.Tick()
	*now = now.Add(DefaultIdleAfter - time.Second)
	r.Tick()
	if _, ok := dev.peers[a.PublicKey]; !ok {
		t.Fatal("a went idle before IdleAfter")
	}
	*now = now.Add(2 * time.Second)
	r.Tick()
	if _, ok := dev.peers[a.PublicKey]; ok {
		t.Fatal("a silent for IdleAfter stayed in the device")
	}
	if !g.idle[a.OverlayIP] || stateOf(r, "a") != StateIdle {
		t.Errorf("reaped a: held %v, state %s", g.idle[a.OverlayIP], stateOf(r, "a"))
	}
	if DefaultIdleAfter <= RejectAfter {
		t.Errorf("default idle time %s does not exceed WireGuard's reject-after %s", DefaultIdleAfter, RejectAfter)
	}

	// A record update while idle keeps it idle; a new overlay address
	// moves the hold.
	moved := a
	moved.OverlayIP = netip.MustParseAddr("100.100.0.99")
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &moved}})
	if _, ok := dev.peers[a.PublicKey]; ok || !g.idle[moved.OverlayIP] || g.idle[a.OverlayIP] {
		t.Errorf("idle peer's new address: in device %v, idle %v", ok, g.idle)
	}
	r.WantPeer(a.OverlayIP) // the old address is no one's now
	drain(r)
	if _, ok := dev.peers[a.PublicKey]; ok {
		t.Error("a packet to a peer's old overlay address brought it in")
	}

	// Gone for good: nothing left held or expected.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &moved}})
	*now = now.Add(2 * time.Second)
	r.Tick()
	if g.idle[moved.OverlayIP] || g.initiators[a.PublicKey] != nil || stateOf(r, "a") != "absent" {
		t.Errorf("removed idle peer left state: idle %v, initiators %v, state %s", g.idle, g.initiators[a.PublicKey], stateOf(r, "a"))
	}
}

// A peer in the device whose key rotates stays in the device: the session
// with its next key is kept.
func TestLazyPeerKeepsDeviceAcrossKeyChange(t *testing.T) {
	r, dev, g, _ := newLazyReconciler(t)
	a := rhost("a", "vpc", 10)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &a}})
	r.WantPeer(a.OverlayIP)
	drain(r)
	k, _ := wgtypes.GeneratePrivateKey()
	rekeyed := a
	rekeyed.PublicKey = k.PublicKey()
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &rekeyed}})
	if _, ok := dev.peers[rekeyed.PublicKey]; !ok {
		t.Fatal("an active peer's new key is not in the device")
	}
	if _, ok := dev.peers[a.PublicKey]; ok {
		t.Error("the old key stayed")
	}
	if g.initiators[a.PublicKey] != nil || g.initiators[rekeyed.PublicKey] == nil {
		t.Errorf("initiators not moved to the new key: %v", g.initiators)
	}
}

// BenchmarkTickAtRest is one tick of a host that knows 10 000 peers and
// talks to 100 (lazy peers): at rest its cost follows the 100.
//
//	go test -run '^$' -bench TickAtRest ./mesh
func BenchmarkTickAtRest(b *testing.B) {
	r, dev, _, _ := newLazyReconciler(&testing.T{})
	var evs []registry.Event
	for i := range 10000 {
		h := rhost(fmt.Sprintf("h%05d", i), "vpc", 0)
		h.OverlayIP = netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)})
		h.PrivateIP = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		evs = append(evs, registry.Event{Kind: registry.Added, Host: &h})
	}
	r.HandleEvents(evs)
	for i := range 100 {
		r.WantPeer(evs[i].Host.OverlayIP)
	}
	drain(r)
	if len(dev.peers) != 100 {
		b.Fatalf("%d peers in the device, want 100", len(dev.peers))
	}
	b.ResetTimer()
	for range b.N {
		r.Tick()
	}
}

// TestPeerRestartedExpiresSessions: a peer in the device whose record comes
// back with a new start time restarted, and its sessions with it; a lazy
// peer would not initiate to this host, so the sessions are expired and
// this host's next packet starts a handshake. Any other record change
// keeps them, and an idle peer's restart costs nothing.
func TestPeerRestartedExpiresSessions(t *testing.T) {
	r, dev, _, _ := newLazyReconciler(t)
	a, b := rhost("a", "vpc", 10), rhost("b", "vpc", 11)
	a.StartTime, b.StartTime = time.Unix(1_000, 0).UTC(), time.Unix(1_000, 0).UTC()
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &a}, {Kind: registry.Added, Host: &b}})
	r.WantPeer(a.OverlayIP)
	drain(r)
	if _, ok := dev.peers[a.PublicKey]; !ok {
		t.Fatal("a packet to a did not bring it in")
	}
	update := func(h registry.Host) {
		r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &h}})
	}
	dev.handshakes = nil
	a2 := a
	a2.Groups = []string{"web", "db"}
	update(a2)
	if len(dev.handshakes) != 0 || len(dev.expired) != 0 {
		t.Errorf("a record change other than a restart started handshakes %v, expired sessions %v", dev.handshakes, dev.expired)
	}
	a3 := a2
	a3.StartTime = time.Unix(2_000, 0).UTC()
	update(a3)
	if len(dev.handshakes) != 0 || !slices.Equal(dev.expired, []wgtypes.Key{a.PublicKey}) {
		t.Errorf("a restarted: handshakes %v, sessions expired %v; want a's expired, no handshake (the next packet starts it)", dev.handshakes, dev.expired)
	}
	dev.handshakes, dev.expired = nil, nil
	b2 := b
	b2.StartTime = time.Unix(2_000, 0).UTC()
	update(b2)
	if _, ok := dev.peers[b.PublicKey]; ok || len(dev.handshakes) != 0 || len(dev.expired) != 0 {
		t.Errorf("idle b restarted: in the device %v, handshakes %v, expired %v; want none of it", ok, dev.handshakes, dev.expired)
	}
}
