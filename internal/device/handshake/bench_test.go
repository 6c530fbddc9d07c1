package handshake

import (
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// What identifying costs (figures in bench/PROFILES.md, issue 17):
//
//	go test -run '^$' -bench . -benchmem -count 5 ./internal/device/handshake

// BenchmarkInitiator is the decryption path: mac1, one X25519, the HMACs
// and the AEAD open, on an initiation wireguard-go made.
func BenchmarkInitiator(b *testing.B) {
	responder, initiator, msg := goldenVector(b)
	r := NewResponder(responder)
	for b.Loop() {
		if k, err := r.Initiator(msg); err != nil || k != initiator {
			b.Fatal(k, err)
		}
	}
}

// BenchmarkAuthenticate is Initiator and the timestamp, with the
// static-static secret cached (the first initiation from a peer costs one
// X25519 more: StaticSecret).
func BenchmarkAuthenticate(b *testing.B) {
	responder, initiator, msg := goldenVector(b)
	r := NewResponder(responder)
	ss, err := r.StaticSecret(initiator)
	if err != nil {
		b.Fatal(err)
	}
	secret := func(wgtypes.Key) ([32]byte, error) { return ss, nil }
	for b.Loop() {
		if k, _, err := r.Authenticate(msg, secret); err != nil || k != initiator {
			b.Fatal(k, err)
		}
	}
}

// BenchmarkCheckMAC1Reject is what garbage with the size and type of an
// initiation costs: one BLAKE2s over 116 bytes.
func BenchmarkCheckMAC1Reject(b *testing.B) {
	_, _, msg := goldenVector(b)
	r := NewResponder(newKey(b)) // another host's key
	for b.Loop() {
		if r.CheckMAC1(msg) != ErrMAC1 {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkOfferReject is the same on the Bind's receive path, through
// Identifier.Offer (counter included).
func BenchmarkOfferReject(b *testing.B) {
	_, _, msg := goldenVector(b)
	id := benchIdentifier(b, newKey(b))
	for b.Loop() {
		id.Offer(epA, msg)
	}
	if id.Stats().BadMAC1 == 0 {
		b.Fatal("nothing refused")
	}
}

// BenchmarkIdentifyByEndpoint is the worker's fast path: a registered
// endpoint, no X25519 (mac1 was checked in Offer). Each call is a Recheck
// later than the last, so none is rechecked.
func BenchmarkIdentifyByEndpoint(b *testing.B) {
	responder, initiator, msg := goldenVector(b)
	id := benchIdentifier(b, responder)
	t := time.Now()
	id.cfg.now = func() time.Time { t = t.Add(DefaultRecheck); return t }
	id.SetPeer(initiator, epA)
	o := offered{from: epA, msg: [MessageSize]byte(msg)}
	for b.Loop() {
		id.identify(&o)
	}
	if s := id.Stats(); s.ByEndpoint == 0 || s.ByDecryption != 0 {
		b.Fatalf("stats %+v", s)
	}
}

// BenchmarkIdentifyByDecryption is the worker's slow path, rate limit off,
// secret cached. The same initiation each time: after the first it is
// refused as a replay, which is the same work.
func BenchmarkIdentifyByDecryption(b *testing.B) {
	responder, initiator, msg := goldenVector(b)
	id := benchIdentifier(b, responder)
	id.limit = newBucket(1e12, 1<<30)
	id.SetPeer(initiator, epA)
	o := offered{from: epB, msg: [MessageSize]byte(msg)}
	for b.Loop() {
		id.identify(&o)
	}
	if s := id.Stats(); s.ByDecryption != 1 || s.Replayed == 0 || s.RateLimited != 0 {
		b.Fatalf("stats %+v", s)
	}
}

func benchIdentifier(b *testing.B, key [32]byte) *Identifier {
	id, err := NewIdentifier(Config{PrivateKey: key, OnInitiation: func(Initiation) {}})
	if err != nil {
		b.Fatal(err)
	}
	return id
}
