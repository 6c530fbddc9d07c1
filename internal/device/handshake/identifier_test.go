package handshake

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// testIdentifier is an Identifier with its worker running, whose
// identifications arrive on found.
type testIdentifier struct {
	*Identifier
	key   wgtypes.Key // its private key
	found chan Initiation
}

func startIdentifier(t *testing.T, cfg Config) *testIdentifier {
	t.Helper()
	ti := &testIdentifier{key: newKey(t), found: make(chan Initiation, 1024)}
	if cfg.PrivateKey == (wgtypes.Key{}) {
		cfg.PrivateKey = ti.key
	}
	ti.key = cfg.PrivateKey
	if cfg.OnInitiation == nil {
		cfg.OnInitiation = func(in Initiation) { ti.found <- in }
	}
	id, err := NewIdentifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ti.Identifier = id
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); id.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ti
}

// from is a genuine initiation to ti from the peer with private key priv.
func (ti *testIdentifier) from(t *testing.T, priv wgtypes.Key) []byte {
	return initiate(t, ti.key.PublicKey(), priv, nextTimestamp())
}

// next is the next identification, or a failure after 5s.
func (ti *testIdentifier) next(t *testing.T) Initiation {
	t.Helper()
	select {
	case in := <-ti.found:
		return in
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing identified in 5s: %+v", ti.Stats())
	}
	return Initiation{}
}

// settle waits until the worker has dealt with n initiations that passed
// mac1 (each ends in exactly one counter) and checks nothing more came.
func (ti *testIdentifier) settle(t *testing.T, n uint64) Stats {
	t.Helper()
	var s Stats
	poll(t, fmt.Sprintf("%d initiations handled", n), func() bool {
		s = ti.Stats()
		return s.ByEndpoint+s.ByDecryption+s.UnknownKey+s.Undecryptable+s.Unauthenticated+s.Replayed+s.RateLimited+s.Dropped >= n
	})
	return s
}

// poll waits up to 5s for cond, checking every millisecond.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	epA = netip.MustParseAddrPort("127.0.0.1:51820")
	epB = netip.MustParseAddrPort("127.0.0.1:51821")
	epC = netip.MustParseAddrPort("[::1]:40000")
)

func TestIdentifierByEndpointSkipsDecryption(t *testing.T) {
	ti := startIdentifier(t, Config{})
	peer := newKey(t).PublicKey()
	ti.SetPeer(peer, netip.MustParseAddrPort("[::ffff:127.0.0.1]:51820")) // mapped form, as a config might say it
	// The endpoint decides; what the message claims is not even read.
	ti.Offer(epA, forge(t, ti.key.PublicKey(), newKey(t).PublicKey()))
	in := ti.next(t)
	if in.Peer != peer || in.By != ByEndpoint || in.From != epA {
		t.Fatalf("got %s by %s from %s, want %s by endpoint from %s", in.Peer, in.By, in.From, peer, epA)
	}
	if s := ti.Stats(); s != (Stats{ByEndpoint: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func TestIdentifierByDecryption(t *testing.T) {
	ti := startIdentifier(t, Config{})
	peerPriv, other := newKey(t), newKey(t).PublicKey()
	peer := peerPriv.PublicKey()
	ti.SetPeer(peer, epA)
	ti.SetPeer(other)
	msg := ti.from(t, peerPriv)
	ti.Offer(epB, msg) // behind NAT: not the registered endpoint
	in := ti.next(t)
	if in.Peer != peer || in.By != ByDecryption || in.From != epB || string(in.Msg[:]) != string(msg) {
		t.Fatalf("got %s by %s from %s, want %s by decryption from %s, with the message", in.Peer, in.By, in.From, peer, epB)
	}
	// The next one uses the cached static-static secret.
	ti.Offer(epB, ti.from(t, peerPriv))
	if in := ti.next(t); in.Peer != peer {
		t.Fatalf("second initiation: got %s, want %s", in.Peer, peer)
	}
	// Refused, counted, not reported: a key no registered peer has, a
	// registered key claimed by someone without it, a replay.
	ti.Offer(epB, ti.from(t, newKey(t)))
	ti.Offer(epB, forge(t, ti.key.PublicKey(), other))
	ti.Offer(epB, msg)
	want := Stats{ByDecryption: 2, UnknownKey: 1, Unauthenticated: 1, Replayed: 1}
	if s := ti.settle(t, 5); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if len(ti.found) != 0 {
		t.Errorf("%d more identified", len(ti.found))
	}
}

func TestIdentifierEndpointTwoPeersClaim(t *testing.T) {
	ti := startIdentifier(t, Config{})
	p2Priv := newKey(t)
	p1, p2 := newKey(t).PublicKey(), p2Priv.PublicKey()
	ti.SetPeer(p1, epA)
	ti.SetPeer(p2, epA, epC)
	ti.Offer(epA, ti.from(t, p2Priv))
	if in := ti.next(t); in.Peer != p2 || in.By != ByDecryption {
		t.Fatalf("endpoint of two peers: got %s by %s, want %s by decryption", in.Peer, in.By, p2)
	}
	ti.RemovePeer(p1)
	ti.Offer(epA, ti.from(t, p2Priv))
	if in := ti.next(t); in.Peer != p2 || in.By != ByEndpoint {
		t.Fatalf("after the other left: got %s by %s, want %s by endpoint", in.Peer, in.By, p2)
	}
	ti.SetPeer(p2, epB) // moved: the old endpoints no longer name it
	ti.Offer(epC, forge(t, ti.key.PublicKey(), p1))
	ti.RemovePeer(p2)
	ti.Offer(epB, forge(t, ti.key.PublicKey(), p2))
	if s := ti.settle(t, 4); s.UnknownKey != 2 || s.ByEndpoint != 1 || s.ByDecryption != 1 {
		t.Errorf("stats %+v, want 2 unknown keys", s)
	}
	if len(ti.peers) != 0 || len(ti.byEndpoint) != 0 {
		t.Errorf("left behind: %d peers, %d endpoints", len(ti.peers), len(ti.byEndpoint))
	}
}

func TestIdentifierRejectsCheaplyAndCounts(t *testing.T) {
	ti := startIdentifier(t, Config{})
	peer := newKey(t).PublicKey()
	ti.SetPeer(peer, epA)
	good := forge(t, ti.key.PublicKey(), peer)
	tampered := append([]byte(nil), good...)
	tampered[offStatic] ^= 1
	setMAC1(ti.key.PublicKey(), tampered)
	flipped := append([]byte(nil), good...)
	flipped[offTimestamp] ^= 1

	ti.Offer(epA, nil)
	ti.Offer(epA, good[:100])
	ti.Offer(epA, make([]byte, MessageSize))
	ti.Offer(epA, forge(t, newKey(t).PublicKey(), peer)) // for another host
	ti.Offer(epA, flipped)
	ti.Offer(epB, tampered) // mac1 right: costs one X25519
	ti.Offer(epB, good)     // a forged claim of a registered key: two
	s := ti.settle(t, 2)
	if want := (Stats{Malformed: 3, BadMAC1: 2, Undecryptable: 1, Unauthenticated: 1}); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if len(ti.found) != 0 {
		t.Errorf("%d identified", len(ti.found))
	}
}

func TestIdentifierRateLimitsDecryption(t *testing.T) {
	var now atomic.Int64 // ns since the epoch
	now.Store(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC).UnixNano())
	ti := startIdentifier(t, Config{Rate: 10, Burst: 2, now: func() time.Time { return time.Unix(0, now.Load()) }})
	peerPriv := newKey(t)
	peer := peerPriv.PublicKey()
	ti.SetPeer(peer, epA)
	for range 5 {
		ti.Offer(epB, ti.from(t, peerPriv))
	}
	if s := ti.settle(t, 5); s != (Stats{ByDecryption: 2, RateLimited: 3}) {
		t.Fatalf("5 at once, burst 2: stats %+v", s)
	}
	// The endpoint path is not limited.
	for range 5 {
		ti.Offer(epA, ti.from(t, peerPriv))
	}
	if s := ti.settle(t, 10); s != (Stats{ByEndpoint: 5, ByDecryption: 2, RateLimited: 3}) {
		t.Fatalf("5 from the endpoint: stats %+v", s)
	}
	now.Add(int64(150 * time.Millisecond)) // 1.5 tokens at 10/s
	for range 3 {
		ti.Offer(epB, ti.from(t, peerPriv))
	}
	if s := ti.settle(t, 13); s != (Stats{ByEndpoint: 5, ByDecryption: 3, RateLimited: 5}) {
		t.Fatalf("150ms later: stats %+v", s)
	}
}

func TestIdentifierRechecksARepeatedEndpoint(t *testing.T) {
	// p1 is registered at epA, but p2 now sends from there (an address
	// reused, a registry behind): by endpoint alone p2 would never get in.
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	at := func(d time.Duration) { now.Store(t0.Add(d).UnixNano()) }
	ti := startIdentifier(t, Config{Rate: 1e-9, Burst: 1, now: func() time.Time { return time.Unix(0, now.Load()) }})
	p2Priv := newKey(t)
	p1, p2 := newKey(t).PublicKey(), p2Priv.PublicKey()
	ti.SetPeer(p1, epA)
	ti.SetPeer(p2)
	msg := ti.from(t, p2Priv)
	steps := []struct {
		at   time.Duration
		want wgtypes.Key
		by   Method
	}{
		{0, p1, ByEndpoint},
		{5 * time.Second, p2, ByDecryption}, // the retry: rechecked
		{6 * time.Second, p1, ByEndpoint},   // the bucket is empty: the endpoint's answer
		{DefaultRecheck, p1, ByEndpoint},    // the window has passed
		{DefaultRecheck + time.Second, p1, ByEndpoint},
	}
	for _, st := range steps {
		at(st.at)
		ti.Offer(epA, msg)
		if in := ti.next(t); in.Peer != st.want || in.By != st.by {
			t.Fatalf("at %s: %s by %s, want %s by %s", st.at, in.Peer, in.By, st.want, st.by)
		}
	}
	if s := ti.Stats(); s != (Stats{ByEndpoint: 4, ByDecryption: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func TestIdentifierNeverBlocksOnAStalledConsumer(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var got atomic.Int64
	ti := startIdentifier(t, Config{Queue: 4, OnInitiation: func(Initiation) {
		got.Add(1)
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	peerPriv := newKey(t)
	ti.SetPeer(peerPriv.PublicKey(), epA)
	msgs := make([][]byte, 101)
	for i := range msgs {
		msgs[i] = ti.from(t, peerPriv)
	}
	ti.Offer(epA, msgs[0])
	<-entered // the worker is stuck in the callback

	offered := make(chan struct{})
	go func() {
		defer close(offered)
		for _, msg := range msgs[1:] {
			ti.Offer(epA, msg)
		}
	}()
	select {
	case <-offered:
	case <-time.After(5 * time.Second):
		t.Fatal("Offer blocked behind a stalled consumer")
	}
	if s := ti.Stats(); s.Dropped != 96 {
		t.Errorf("stats %+v, want 96 dropped (4 queued)", s)
	}
	once.Do(func() { close(release) })
	poll(t, "the 4 queued identified", func() bool { return got.Load() == 5 })
	// The repeats from one endpoint are rechecked by decryption.
	if s := ti.Stats(); s != (Stats{ByEndpoint: 1, ByDecryption: 4, Dropped: 96}) {
		t.Errorf("stats %+v", s)
	}
}

func TestIdentifierFollowsKeyRotation(t *testing.T) {
	ti := startIdentifier(t, Config{})
	peerPriv := newKey(t)
	peer := peerPriv.PublicKey()
	ti.SetPeer(peer)
	old, rotated := ti.key, newKey(t)
	ti.Offer(epB, initiate(t, old.PublicKey(), peerPriv, nextTimestamp()))
	if in := ti.next(t); in.Peer != peer {
		t.Fatalf("before rotation: got %s, want %s", in.Peer, peer)
	}
	ti.SetPrivateKey(rotated)
	ti.Offer(epB, initiate(t, old.PublicKey(), peerPriv, nextTimestamp()))
	// The static-static secret cached for the old key must not be used.
	ti.Offer(epB, initiate(t, rotated.PublicKey(), peerPriv, nextTimestamp()))
	if in := ti.next(t); in.Peer != peer {
		t.Fatalf("after rotation: got %s, want %s", in.Peer, peer)
	}
	if s := ti.Stats(); s != (Stats{ByDecryption: 2, BadMAC1: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func TestNewIdentifierRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{OnInitiation: func(Initiation) {}, Rate: -1},
		{OnInitiation: func(Initiation) {}, Queue: -1},
	} {
		if _, err := NewIdentifier(cfg); err == nil {
			t.Errorf("NewIdentifier(%+v): no error", cfg)
		}
	}
}

func TestOfferDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	id, err := NewIdentifier(Config{PrivateKey: newKey(t), OnInitiation: func(Initiation) {}, Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	msg := forge(t, id.resp.Load().PublicKey(), newKey(t).PublicKey())
	garbage := make([]byte, MessageSize)
	garbage[0] = MessageType
	// No worker: the first is queued, the rest dropped.
	if n := testing.AllocsPerRun(100, func() { id.Offer(epA, msg); id.Offer(epA, garbage) }); n != 0 {
		t.Errorf("Offer allocates %.0f times", n)
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	b := newBucket(2, 3) // 2 a second, up to 3
	take := func(at time.Duration, want bool) {
		t.Helper()
		if got := b.take(t0.Add(at)); got != want {
			t.Errorf("take at %s: %v, want %v", at, got, want)
		}
	}
	take(0, true)
	take(0, true)
	take(0, true)
	take(0, false)
	take(400*time.Millisecond, false) // 0.8 tokens
	take(500*time.Millisecond, true)  // 1.0
	take(-time.Hour, false)           // a clock going back adds nothing,
	take(time.Second, true)           // nor counts from its low point: 0 + 1 token
	take(time.Second, false)
	take(time.Hour, true) // full again, but only 3
	take(time.Hour, true)
	take(time.Hour, true)
	take(time.Hour, false)
}

func TestRecentEndpointsStayBounded(t *testing.T) {
	id, err := NewIdentifier(Config{PrivateKey: newKey(t), OnInitiation: func(Initiation) {}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for i := range 3 * recentCap {
		ep := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i))
		id.seenRecently(ep, t0.Add(time.Duration(i)*10*time.Millisecond))
		if len(id.recent) > recentCap {
			t.Fatalf("%d endpoints remembered, cap %d", len(id.recent), recentCap)
		}
	}
	// Pruning drops only entries older than Recheck: at one per 10 ms the
	// last 15 s of them (1 500) survive each.
	if n := len(id.recent); n < 1500 {
		t.Errorf("only %d endpoints remembered after pruning", n)
	}
}
