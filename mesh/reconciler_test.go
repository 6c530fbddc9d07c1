package mesh

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
	"github.com/meshd/meshd/registry"
)

// fakeDevice records what the reconciler asks of the device.
type fakeDevice struct {
	applies    []device.Delta
	peers      map[wgtypes.Key]device.Peer
	stats      map[wgtypes.Key]device.PeerStats
	handshakes []wgtypes.Key
	once       []wgtypes.Key
	dropped    []wgtypes.Key
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{peers: map[wgtypes.Key]device.Peer{}, stats: map[wgtypes.Key]device.PeerStats{}}
}

func (f *fakeDevice) Apply(d device.Delta) error {
	f.applies = append(f.applies, d)
	for _, k := range d.Remove {
		delete(f.peers, k)
	}
	for _, p := range d.Upsert {
		f.peers[p.PublicKey] = p
	}
	return nil
}
func (f *fakeDevice) Stats() (map[wgtypes.Key]device.PeerStats, error) { return f.stats, nil }
func (f *fakeDevice) Handshake(k wgtypes.Key) error {
	f.handshakes = append(f.handshakes, k)
	return nil
}

func (f *fakeDevice) HandshakeOnce(k wgtypes.Key) error {
	f.once = append(f.once, k)
	return nil
}

func (f *fakeDevice) DropQueued(k wgtypes.Key) error {
	f.dropped = append(f.dropped, k)
	return nil
}

type fakeMembers struct{ set, removed []string }

func (f *fakeMembers) SetHost(h MemberHost) error { f.set = append(f.set, h.ID); return nil }
func (f *fakeMembers) RemoveHost(id string) error { f.removed = append(f.removed, id); return nil }

func rhost(id, network string, n byte) registry.Host {
	k, _ := wgtypes.GeneratePrivateKey()
	h := registry.Host{InstanceID: id, OverlayIP: netip.AddrFrom4([4]byte{100, 100, 0, n}), PublicKey: k.PublicKey(), Network: network,
		ListenPort: 51820, Groups: []string{"web"}}
	nets := map[string]byte{"classic": 1, "vpc": 2, "dc": 3}
	h.PrivateIP = netip.AddrFrom4([4]byte{198, 18, nets[network], n})
	h.PublicIP = netip.AddrFrom4([4]byte{198, 19, nets[network], n})
	return h
}

func newTestReconciler(t *testing.T, hold time.Duration) (*Reconciler, *fakeDevice, *fakeMembers, *time.Time) {
	dev, fw := newFakeDevice(), &fakeMembers{}
	r := New(Config{Self: rhost("self", "vpc", 1), Links: NewLinks([][]string{{"vpc", "dc"}}), HoldDown: hold,
		Breaker: BreakerConfig{MaxRemovals: 3, Window: time.Minute}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, dev, fw)
	now := time.Unix(1_000_000, 0)
	r.now = func() time.Time { return now }
	return r, dev, fw, &now
}

func TestReconcilerAddsOnePeerPerChange(t *testing.T) {
	r, dev, fw, _ := newTestReconciler(t, 0)
	var batch []registry.Event
	for i := 0; i < 100; i++ {
		batch = append(batch, registry.Event{Kind: registry.Added, Host: rhost("h"+string(rune('a'+i%26))+string(rune('a'+i/26)), "classic", byte(10+i))})
	}
	batch = append(batch, registry.Event{Kind: registry.Added, Host: rhost("self", "vpc", 1)}) // own record: skipped
	r.HandleEvents(batch)
	if len(dev.applies) != 1 || len(dev.applies[0].Upsert) != 100 {
		t.Fatalf("a batch of 100 adds must be one device update of 100 peers, got %d updates", len(dev.applies))
	}
	if len(dev.handshakes) != 100 || len(fw.set) != 100 {
		t.Errorf("handshakes %d, firewall sets %d", len(dev.handshakes), len(fw.set))
	}
	// One more host: one peer in one update, nothing else touched.
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: rhost("new", "dc", 200)}})
	last := dev.applies[len(dev.applies)-1]
	if len(last.Upsert) != 1 || len(last.Remove) != 0 {
		t.Fatalf("one join changed %d peers", len(last.Upsert)+len(last.Remove))
	}
	p := last.Upsert[0]
	if p.Endpoint.String() != "198.18.3.200:51820" || p.PersistentKeepalive != 0 {
		t.Errorf("vpc->dc over the link: endpoint %s keepalive %s", p.Endpoint, p.PersistentKeepalive)
	}
	if pub := dev.peers[batch[0].Host.PublicKey]; pub.Endpoint.String() != "198.19.1.10:51820" || pub.PersistentKeepalive != 25*time.Second {
		t.Errorf("vpc->classic: %+v", pub)
	}
}

func TestReconcilerMovedPeerAndNewKey(t *testing.T) {
	r, dev, _, _ := newTestReconciler(t, 0)
	h := rhost("mover", "classic", 5)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: h}})
	moved := h
	moved.Network, moved.PrivateIP, moved.PublicIP = "vpc", netip.MustParseAddr("198.18.2.50"), netip.MustParseAddr("198.19.2.50")
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: moved}})
	last := dev.applies[len(dev.applies)-1]
	if len(last.Upsert) != 1 || last.Upsert[0].Endpoint.String() != "198.18.2.50:51820" || len(last.Remove) != 0 {
		t.Fatalf("moved host: %+v", last)
	}
	rekeyed := moved
	k, _ := wgtypes.GeneratePrivateKey()
	rekeyed.PublicKey = k.PublicKey()
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: rekeyed}})
	last = dev.applies[len(dev.applies)-1]
	if len(last.Remove) != 1 || last.Remove[0] != h.PublicKey || len(last.Upsert) != 1 || last.Upsert[0].PublicKey != rekeyed.PublicKey {
		t.Fatalf("new key: %+v", last)
	}
	// A peer in another network without a public address is unreachable.
	lonely := rhost("lonely", "classic", 6)
	lonely.PublicIP = netip.Addr{}
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: lonely}})
	for _, p := range r.Peers(true) {
		if p.Name == "lonely" && (p.State != StateDown || p.Reason == "") {
			t.Errorf("lonely peer: %+v", p)
		}
	}
}

func TestReconcilerHoldDownAndBreaker(t *testing.T) {
	r, dev, fw, now := newTestReconciler(t, 10*time.Second)
	var hosts []registry.Host
	var added []registry.Event
	for i := 0; i < 10; i++ {
		h := rhost("p"+string(rune('0'+i)), "vpc", byte(20+i))
		hosts = append(hosts, h)
		added = append(added, registry.Event{Kind: registry.Added, Host: h})
	}
	r.HandleEvents(added)
	// One removal: held for the hold-down, then removed.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: hosts[0]}})
	r.Tick()
	if _, ok := dev.peers[hosts[0].PublicKey]; !ok {
		t.Fatal("removed before the hold-down")
	}
	*now = now.Add(11 * time.Second)
	r.Tick()
	if _, ok := dev.peers[hosts[0].PublicKey]; ok || len(fw.removed) != 1 {
		t.Fatal("not removed after the hold-down")
	}
	// A decommissioned host goes at once, hold-down or not.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: hosts[9], Decommissioned: true}})
	if _, ok := dev.peers[hosts[9].PublicKey]; ok {
		t.Fatal("decommissioned host kept for the hold-down")
	}
	hosts = hosts[:9]
	// Half the fleet vanishes: the breaker holds all of it.
	var gone []registry.Event
	for _, h := range hosts[1:6] {
		gone = append(gone, registry.Event{Kind: registry.Removed, Host: h})
	}
	r.HandleEvents(gone)
	*now = now.Add(11 * time.Second)
	r.Tick()
	if len(dev.peers) != 8 || !r.Summary().Breaker.Tripped || r.Summary().Breaker.Held != 5 {
		t.Fatalf("breaker: %d peers left, %+v", len(dev.peers), r.Summary().Breaker)
	}
	// One comes back: no longer held.
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: hosts[1]}})
	r.Tick()
	if r.Summary().Breaker.Held != 4 {
		t.Errorf("held after one came back: %+v", r.Summary().Breaker)
	}
	// The operator releases: the four go.
	if n := r.ReleaseBreaker(); n != 4 {
		t.Errorf("release reported %d", n)
	}
	r.Tick()
	if len(dev.peers) != 4 || r.Summary().Breaker.Tripped {
		t.Errorf("after release: %d peers, %+v", len(dev.peers), r.Summary().Breaker)
	}
}

func TestReconcilerKeyRotation(t *testing.T) {
	r, dev, _, _ := newTestReconciler(t, 0)
	h := rhost("rot", "vpc", 9)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: h}})
	k2, _ := wgtypes.GeneratePrivateKey()
	next := k2.PublicKey()
	announced := h
	announced.NextPublicKey = &next
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: announced}})
	if p, ok := dev.peers[next]; !ok || len(p.AllowedIPs) != 0 || !p.Endpoint.IsValid() {
		t.Fatalf("announced key: %+v present %v; want an entry with endpoint and no allowed IPs", p, ok)
	}
	if len(dev.peers[h.PublicKey].AllowedIPs) != 1 {
		t.Fatal("old key lost its address before the switch")
	}
	switched := h
	switched.PublicKey = next
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: switched}})
	last := dev.applies[len(dev.applies)-1]
	if len(last.Remove) != 1 || last.Remove[0] != h.PublicKey || len(last.Upsert) != 1 || last.Upsert[0].PublicKey != next || len(last.Upsert[0].AllowedIPs) != 1 {
		t.Fatalf("switch must be one delta: remove old, give the new key the address; got %+v", last)
	}
	if len(dev.peers) != 1 {
		t.Errorf("%d device peers after rotation, want 1", len(dev.peers))
	}
}

// A peer that never answers is tried on each path, then rested with a
// growing pause and tried quietly; 30 minutes of it cost a handful of
// initiations, not one every 5 s.
func TestReconcilerRestsAPeerThatNeverAnswers(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 0)
	dead := rhost("dead", "vpc", 7) // same network: private, then public
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: dead}})
	dev.stats[dead.PublicKey] = device.PeerStats{Endpoint: dev.peers[dead.PublicKey].Endpoint}
	for i := 0; i < 1800; i++ {
		*now = now.Add(time.Second)
		r.Tick()
	}
	if len(dev.handshakes) != 2 {
		t.Errorf("full handshakes: %d, want 2 (the first try on each path)", len(dev.handshakes))
	}
	// Rests of 30 s, 60 s, 120 s, then 5 min (the test's MaxRetry default)
	// with two quiet tries each: at most 16 in 30 minutes.
	if n := len(dev.once); n == 0 || n > 16 {
		t.Errorf("quiet handshakes in 30 min: %d, want 1..16", n)
	}
	if len(dev.dropped) == 0 {
		t.Errorf("a resting peer's queued packets were never dropped")
	}
	st := r.Peers(true)[0]
	if st.State != StateDown || !strings.Contains(st.Reason, "no handshake on any path") {
		t.Errorf("dead peer shows %s %q", st.State, st.Reason)
	}
	// It comes back and handshakes from its public address: up at once,
	// without waiting out the rest.
	pub := netip.AddrPortFrom(dead.PublicIP, 51820)
	dev.stats[dead.PublicKey] = device.PeerStats{Endpoint: pub, LastHandshake: *now}
	*now = now.Add(time.Second)
	r.Tick()
	st = r.Peers(true)[0]
	if st.State != StateUp || st.Endpoint != pub {
		t.Errorf("peer back: %s via %s (%q)", st.State, st.Endpoint, st.Reason)
	}
}

// A dead peer behind NAT loses its keepalive while it rests (WireGuard's
// keepalive would restart its retries every 25 s) and gets it back when it
// answers again.
func TestReconcilerRestingPeerHasNoKeepalive(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 0)
	dead := rhost("natted", "classic", 8) // vpc -> classic: public only
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: dead}})
	if ka := dev.peers[dead.PublicKey].PersistentKeepalive; ka != 25*time.Second {
		t.Fatalf("new public-path peer: keepalive %s, want 25s", ka)
	}
	pub := dev.peers[dead.PublicKey].Endpoint
	dev.stats[dead.PublicKey] = device.PeerStats{Endpoint: pub}
	for i := 0; i < 20; i++ {
		*now = now.Add(time.Second)
		r.Tick()
	}
	if ka := dev.peers[dead.PublicKey].PersistentKeepalive; ka != 0 {
		t.Errorf("resting peer: keepalive %s, want none", ka)
	}
	dev.stats[dead.PublicKey] = device.PeerStats{Endpoint: pub, LastHandshake: *now}
	*now = now.Add(time.Second)
	r.Tick()
	if ka := dev.peers[dead.PublicKey].PersistentKeepalive; ka != 25*time.Second {
		t.Errorf("peer back: keepalive %s, want 25s", ka)
	}
}
