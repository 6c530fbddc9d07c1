package mesh

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
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
	expired    []wgtypes.Key
	fail       int // the next fail updates are refused, changing nothing
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{peers: map[wgtypes.Key]device.Peer{}, stats: map[wgtypes.Key]device.PeerStats{}}
}

func (f *fakeDevice) Apply(d device.Delta) error {
	if f.fail > 0 {
		f.fail--
		return errors.New("uapi set on mesh0: resource temporarily unavailable")
	}
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

func (f *fakeDevice) ExpireSessions(k wgtypes.Key) error {
	f.expired = append(f.expired, k)
	return nil
}

func (f *fakeDevice) DropQueued(k wgtypes.Key) error {
	f.dropped = append(f.dropped, k)
	return nil
}

type fakeMembers struct {
	set, removed []string
	last         map[string]MemberHost
}

func (f *fakeMembers) SetHost(h MemberHost) error {
	f.set = append(f.set, h.ID)
	if f.last == nil {
		f.last = map[string]MemberHost{}
	}
	f.last[h.ID] = h
	return nil
}
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
		batch = append(batch, registry.Event{Kind: registry.Added, Host: new(rhost("h"+string(rune('a'+i%26))+string(rune('a'+i/26)), "classic", byte(10+i)))})
	}
	batch = append(batch, registry.Event{Kind: registry.Added, Host: new(rhost("self", "vpc", 1))}) // own record: skipped
	r.HandleEvents(batch)
	if len(dev.applies) != 1 || len(dev.applies[0].Upsert) != 100 {
		t.Fatalf("a batch of 100 adds must be one device update of 100 peers, got %d updates", len(dev.applies))
	}
	if len(dev.handshakes) != 100 || len(fw.set) != 100 {
		t.Errorf("handshakes %d, firewall sets %d", len(dev.handshakes), len(fw.set))
	}
	// One more host: one peer in one update, nothing else touched.
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: new(rhost("new", "dc", 200))}})
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
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &h}})
	moved := h
	moved.Network, moved.PrivateIP, moved.PublicIP = "vpc", netip.MustParseAddr("198.18.2.50"), netip.MustParseAddr("198.19.2.50")
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &moved}})
	last := dev.applies[len(dev.applies)-1]
	if len(last.Upsert) != 1 || last.Upsert[0].Endpoint.String() != "198.18.2.50:51820" || len(last.Remove) != 0 {
		t.Fatalf("moved host: %+v", last)
	}
	rekeyed := moved
	k, _ := wgtypes.GeneratePrivateKey()
	rekeyed.PublicKey = k.PublicKey()
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &rekeyed}})
	last = dev.applies[len(dev.applies)-1]
	if len(last.Remove) != 1 || last.Remove[0] != h.PublicKey || len(last.Upsert) != 1 || last.Upsert[0].PublicKey != rekeyed.PublicKey {
		t.Fatalf("new key: %+v", last)
	}
	// A peer in another network without a public address is unreachable.
	lonely := rhost("lonely", "classic", 6)
	lonely.PublicIP = netip.Addr{}
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &lonely}})
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
		added = append(added, registry.Event{Kind: registry.Added, Host: &h})
	}
	r.HandleEvents(added)
	// One removal: held for the hold-down, then removed.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[0]}})
	r.Tick()
	if _, ok := dev.peers[hosts[0].PublicKey]; !ok {
		t.Fatal("removed before the hold-down")
	}
	*now = now.Add(11 * time.Second)
	calls := len(dev.handshakes)
	r.Tick()
	if !slices.Contains(dev.handshakes[calls:], hosts[0].PublicKey) {
		t.Error("a silent vanished peer is not called once before it goes")
	}
	*now = now.Add(6 * time.Second) // the handshake timeout: no answer
	r.Tick()
	if _, ok := dev.peers[hosts[0].PublicKey]; ok || len(fw.removed) != 1 {
		t.Fatal("not removed after the hold-down and an unanswered handshake")
	}
	// A decommissioned host goes at once, hold-down or not.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[9], Decommissioned: true}})
	if _, ok := dev.peers[hosts[9].PublicKey]; ok {
		t.Fatal("decommissioned host kept for the hold-down")
	}
	hosts = hosts[:9]
	// Half the fleet vanishes: the breaker holds all of it.
	var gone []registry.Event
	for _, h := range hosts[1:6] {
		gone = append(gone, registry.Event{Kind: registry.Removed, Host: &h})
	}
	r.HandleEvents(gone)
	*now = now.Add(11 * time.Second)
	r.Tick()
	*now = now.Add(6 * time.Second)
	r.Tick()
	if len(dev.peers) != 8 || !r.Summary().Breaker.Tripped || r.Summary().Breaker.Held != 5 {
		t.Fatalf("breaker: %d peers left, %+v", len(dev.peers), r.Summary().Breaker)
	}
	// One comes back: no longer held.
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &hosts[1]}})
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
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &h}})
	k2, _ := wgtypes.GeneratePrivateKey()
	next := k2.PublicKey()
	announced := h
	announced.NextPublicKey = &next
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &announced}})
	if p, ok := dev.peers[next]; !ok || len(p.AllowedIPs) != 0 || !p.Endpoint.IsValid() {
		t.Fatalf("announced key: %+v present %v; want an entry with endpoint and no allowed IPs", p, ok)
	}
	if len(dev.peers[h.PublicKey].AllowedIPs) != 1 {
		t.Fatal("old key lost its address before the switch")
	}
	switched := h
	switched.PublicKey = next
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &switched}})
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
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &dead}})
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
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &dead}})
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

// The breaker holds hosts, not a number: a decommissioned host goes at once
// even while it is tripped, the count follows hosts coming back, and when
// the last held host is back it closes by itself, so that the next ordinary
// removal is not held by a breaker nobody remembers to release.
func TestBreakerClosesWhenHeldHostsReturn(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 10*time.Second)
	var hosts []registry.Host
	var added []registry.Event
	for i := 0; i < 10; i++ {
		h := rhost("p"+string(rune('0'+i)), "vpc", byte(20+i))
		hosts = append(hosts, h)
		added = append(added, registry.Event{Kind: registry.Added, Host: &h})
	}
	r.HandleEvents(added)
	var gone []registry.Event
	for _, h := range hosts[:5] {
		gone = append(gone, registry.Event{Kind: registry.Removed, Host: &h})
	}
	r.HandleEvents(gone)
	*now = now.Add(11 * time.Second)
	r.Tick()
	*now = now.Add(6 * time.Second)
	r.Tick()
	if b := r.Summary().Breaker; !b.Tripped || b.Held != 5 || len(dev.peers) != 10 {
		t.Fatalf("5 of 10 vanished, limit 3: breaker %+v, %d device peers", b, len(dev.peers))
	}

	// Decommissioned while the breaker holds: held or not, its key goes now.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[0], Decommissioned: true}})
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[9], Decommissioned: true}})
	for _, h := range []registry.Host{hosts[0], hosts[9]} {
		if _, ok := dev.peers[h.PublicKey]; ok {
			t.Errorf("decommissioned %s still in the device while the breaker is tripped", h.InstanceID)
		}
	}
	if b := r.Summary().Breaker; !b.Tripped || b.Held != 4 {
		t.Errorf("after one held host was decommissioned: %+v, want tripped holding 4", b)
	}

	// The held hosts come back one by one: the count follows at once, with
	// no tick in between, and the last one closes the breaker.
	for i, h := range hosts[1:5] {
		r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &h}})
		b := r.Summary().Breaker
		if want := 3 - i; b.Held != want || b.Tripped != (want > 0) {
			t.Errorf("%d back: breaker %+v, want held %d", i+1, b, want)
		}
	}
	if n := r.ReleaseBreaker(); n != 0 {
		t.Errorf("release of a closed breaker reported %d", n)
	}
	for _, p := range r.Peers(true) {
		if p.RemovalHeld {
			t.Errorf("%s still marked held after it came back", p.Name)
		}
	}

	// Not sticky: the next single vanish goes after its hold-down.
	*now = now.Add(2 * time.Minute)
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[5]}})
	*now = now.Add(11 * time.Second)
	r.Tick()
	*now = now.Add(6 * time.Second)
	r.Tick()
	if _, ok := dev.peers[hosts[5].PublicKey]; ok {
		t.Errorf("a single removal after the breaker closed was held: %+v", r.Summary().Breaker)
	}
	if len(dev.peers) != 7 {
		t.Errorf("%d device peers, want 7", len(dev.peers))
	}
}

// A device update that fails is kept and retried with backoff until the
// device takes it; changes made meanwhile are merged, so the device ends at
// the desired state, and status counts the failures.
func TestFailedDeviceUpdateIsRetried(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 0)
	r.cfg.Timers.Handshake = time.Hour // no path fallback re-sends a peer by chance
	dev.fail = 3
	a, b, c := rhost("a", "vpc", 30), rhost("b", "vpc", 31), rhost("c", "vpc", 32)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &a}, {Kind: registry.Added, Host: &c}})
	st := r.Summary().Apply
	if len(dev.peers) != 0 || st.Failures != 1 || st.Pending != 2 || !strings.Contains(st.LastError, "resource temporarily unavailable") {
		t.Fatalf("after a refused update: device %d peers, apply state %+v", len(dev.peers), st)
	}
	// Meanwhile: b joins, a moves, c leaves. Each must end up as the
	// registry says, whatever the device refused before.
	moved := a
	moved.PrivateIP = netip.MustParseAddr("198.18.2.130")
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &b}, {Kind: registry.Updated, Host: &moved}, {Kind: registry.Removed, Host: &c}})
	var took time.Duration
	for took = 0; took < 2*time.Minute && (len(dev.peers) != 2 || r.Summary().Apply.Pending != 0); took += time.Second {
		*now = now.Add(time.Second)
		r.Tick()
	}
	if took >= 2*time.Minute {
		t.Fatalf("never converged: device %v, apply state %+v", dev.peers, r.Summary().Apply)
	}
	if p := dev.peers[a.PublicKey]; p.Endpoint.String() != "198.18.2.130:51820" || len(p.AllowedIPs) != 1 {
		t.Errorf("a in the device at %s %v, want its new address 198.18.2.130:51820", p.Endpoint, p.AllowedIPs)
	}
	if _, ok := dev.peers[b.PublicKey]; !ok {
		t.Error("b, added while the device refused updates, is not in the device")
	}
	if _, ok := dev.peers[c.PublicKey]; ok {
		t.Error("c, removed while the device refused updates, is in the device")
	}
	st = r.Summary().Apply
	if st.Failures != 3 || st.Pending != 0 || st.LastError == "" {
		t.Errorf("apply state after recovery: %+v, want 3 failures, nothing pending, the last error kept", st)
	}
	// Backoff: 1 s, 2 s, 4 s between the tries, not one per tick.
	if took < 6*time.Second || took > 10*time.Second {
		t.Errorf("applied %s after the first failure, want the 1+2+4 s of backoff", took)
	}
	hs := map[wgtypes.Key]bool{}
	for _, k := range dev.handshakes {
		hs[k] = true
	}
	if !hs[a.PublicKey] || !hs[b.PublicKey] {
		t.Error("the retried peers were not handshaken once they were in the device")
	}
}

// A peer nobody talks to is idle, not connecting: connecting and down are
// kept for peers that owe us a handshake, so that alerts on them mean a
// real problem.
func TestQuietPeerIsIdle(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 0)
	h := rhost("quiet", "vpc", 40)
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &h}})
	state := func() string { return r.Peers(true)[0].State }
	if s := state(); s != StateConnecting {
		t.Errorf("new peer, first handshake under way: %s, want connecting", s)
	}
	ep := dev.peers[h.PublicKey].Endpoint
	*now = now.Add(time.Second)
	dev.stats[h.PublicKey] = device.PeerStats{Endpoint: ep, LastHandshake: *now, TxBytes: 148, RxBytes: 92}
	r.Tick()
	if s := state(); s != StateUp {
		t.Fatalf("after the handshake: %s, want up", s)
	}
	// Four quiet minutes: the session lapsed, nothing is owed.
	for i := 0; i < 240; i++ {
		*now = now.Add(time.Second)
		r.Tick()
	}
	if s := state(); s != StateIdle {
		t.Errorf("quiet for 4 minutes: %s, want idle", s)
	}
	// Traffic goes out and nothing comes back: a handshake is owed.
	dev.stats[h.PublicKey] = device.PeerStats{Endpoint: ep, LastHandshake: dev.stats[h.PublicKey].LastHandshake, TxBytes: 148 + 148, RxBytes: 92}
	*now = now.Add(time.Second)
	r.Tick()
	if s := state(); s != StateConnecting {
		t.Errorf("sending without answer: %s, want connecting", s)
	}
	if s := r.Peers(false)[0].State; s != StateStale {
		t.Errorf("registry unreachable: %s, want stale", s)
	}
}

// A record that vanishes is the registry's word, not the data plane's: a
// peer WireGuard still hears stays (stale, with the reason) and goes only
// after a hold-down of silence; one that answers a last handshake stays
// too; a dead one goes within hold-down plus a handshake timeout; a
// decommissioned one at once. Live peers are not removals for the breaker.
func TestLivePeerStaysWhenRecordVanishes(t *testing.T) {
	r, dev, _, now := newTestReconciler(t, 10*time.Second)
	var hosts []registry.Host
	var evs []registry.Event
	for i := 0; i < 6; i++ { // 0-3 carry traffic, 4 is quiet but answers, 5 is dead
		h := rhost("v"+string(rune('0'+i)), "vpc", byte(50+i))
		hosts = append(hosts, h)
		evs = append(evs, registry.Event{Kind: registry.Added, Host: &h})
	}
	r.HandleEvents(evs)
	*now = now.Add(time.Second)
	for _, h := range hosts {
		dev.stats[h.PublicKey] = device.PeerStats{Endpoint: dev.peers[h.PublicKey].Endpoint, LastHandshake: *now, RxBytes: 92}
	}
	r.Tick()
	// Every record vanishes at once (the network is cut off from ZooKeeper):
	// six of six, over the breaker's limit of 3.
	var gone []registry.Event
	for _, h := range hosts {
		gone = append(gone, registry.Event{Kind: registry.Removed, Host: &h})
	}
	goneAt := *now
	r.HandleEvents(gone)
	// One second: peers live[...] carry traffic, v4 answers when called.
	second := func(live []registry.Host) {
		*now = now.Add(time.Second)
		for _, h := range live {
			st := dev.stats[h.PublicKey]
			st.RxBytes += 1000
			dev.stats[h.PublicKey] = st
		}
		calls := len(dev.handshakes)
		r.Tick()
		for _, k := range dev.handshakes[calls:] {
			if k == hosts[4].PublicKey {
				st := dev.stats[k]
				st.LastHandshake = *now
				dev.stats[k] = st
			}
		}
	}
	deadGone := time.Duration(0)
	for i := 0; i < 60; i++ {
		second(hosts[:4])
		if _, ok := dev.peers[hosts[5].PublicKey]; !ok && deadGone == 0 {
			deadGone = now.Sub(goneAt)
		}
	}
	if deadGone == 0 || deadGone > 10*time.Second+5*time.Second+time.Second {
		t.Errorf("dead peer removed after %s (0: never) of its record gone, want within hold-down 10s + handshake timeout 5s", deadGone)
	}
	for _, h := range hosts[:5] {
		if _, ok := dev.peers[h.PublicKey]; !ok {
			t.Errorf("%s removed while the data plane was alive", h.InstanceID)
		}
	}
	if b := r.Summary().Breaker; b.Tripped || b.Held != 0 {
		t.Errorf("live peers counted as removals: breaker %+v", b)
	}
	for _, p := range r.Peers(true)[:4] {
		if p.State != StateStale || !p.KeptAlive || !strings.Contains(p.StaleReason, "kept: WireGuard heard it") {
			t.Errorf("%s: state %s kept %v reason %q; want stale, kept alive, with the reason", p.Name, p.State, p.KeptAlive, p.StaleReason)
		}
	}
	if n := r.Summary().KeptAlive["vpc"]; n < 4 {
		t.Errorf("summary counts %d peers of vpc kept on liveness, want at least the 4 with traffic", n)
	}

	// v0 goes silent: removed a hold-down after it was last heard, plus
	// the handshake it does not answer.
	silentAt := *now
	var v0Gone time.Duration
	for i := 0; i < 30 && v0Gone == 0; i++ {
		second(hosts[1:4])
		if _, ok := dev.peers[hosts[0].PublicKey]; !ok {
			v0Gone = now.Sub(silentAt)
		}
	}
	if v0Gone < 10*time.Second || v0Gone > 16*time.Second {
		t.Errorf("silent peer removed %s (0: never) after it was last heard, want 10s..16s (hold-down + handshake timeout)", v0Gone)
	}
	// v1 is decommissioned: at once, alive or not.
	r.HandleEvents([]registry.Event{{Kind: registry.Removed, Host: &hosts[1], Decommissioned: true}})
	if _, ok := dev.peers[hosts[1].PublicKey]; ok {
		t.Error("a decommissioned peer was kept for its live data plane")
	}
	// v2 re-registers: an ordinary peer again.
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &hosts[2]}})
	for _, p := range r.Peers(true) {
		if p.Name == "v2" && (p.State == StateStale || p.StaleReason != "") {
			t.Errorf("re-registered peer still %s (%q)", p.State, p.StaleReason)
		}
	}
}

// A member's IPv6 underlay addresses reach the firewall, and a change of
// them alone is a firewall change; the WireGuard endpoint stays IPv4.
func TestReconcilerIP6UnderlayToFirewall(t *testing.T) {
	r, dev, fw, _ := newTestReconciler(t, 0)
	h := rhost("six", "vpc", 7)
	h.PrivateIP6 = netip.MustParseAddr("fd18:2::7")
	r.HandleEvents([]registry.Event{{Kind: registry.Added, Host: &h}})
	got := fmt.Sprint(fw.last["six"].Underlay)
	if got != "[198.18.2.7 198.19.2.7 fd18:2::7]" {
		t.Errorf("underlay to the firewall = %s", got)
	}
	if ep := dev.peers[h.PublicKey].Endpoint.String(); ep != "198.18.2.7:51820" {
		t.Errorf("endpoint = %s, want the IPv4 private address", ep)
	}
	n := len(fw.set)
	moved := h
	moved.PrivateIP6, moved.PublicIP6 = netip.MustParseAddr("fd18:2::70"), netip.MustParseAddr("fd18:0:2::70")
	r.HandleEvents([]registry.Event{{Kind: registry.Updated, Host: &moved}})
	if len(fw.set) != n+1 || fmt.Sprint(fw.last["six"].Underlay) != "[198.18.2.7 198.19.2.7 fd18:2::70 fd18:0:2::70]" {
		t.Errorf("IPv6-only change: firewall calls %d -> %d, underlay %v", n, len(fw.set), fw.last["six"].Underlay)
	}
}
