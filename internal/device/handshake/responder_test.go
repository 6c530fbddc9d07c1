package handshake

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// golden is an initiation wireguard-go (v0.0.0-20260522210424) sent through
// meshd's Bind on loopback, with the responder's private key and the
// initiator's public key (internal/device/handshake_wg_test.go makes such
// initiations afresh on every run).
var golden = struct{ responder, initiator, msg string }{
	responder: "888684128af59ae72c5133316275333a4521ace77866e5b26239b64ef3dc727e",
	initiator: "4de6ed8f7de78fd36634791756aca7812bedcdbf7b92c89577a1b1bc57a74812",
	msg: "01000000d6a725b18715a3324161495583fc77b99f851e79e362e0a27c06a832a6b9f61f5dd8933d1d6161c65491ae" +
		"7984720583c7101594876e5fc755ca8e2e4d46b3c1b5e046e88b8a1d22fba927fa5ffc65305109cb885abd1bf730d2" +
		"664b24786d4587c3a2b56ff76dfb5c8e379cfc27e807dbe82ab85bf8b39da2cb3fb765808aa7000000000000000000" +
		"00000000000000",
}

func goldenVector(t testing.TB) (responder, initiator wgtypes.Key, msg []byte) {
	t.Helper()
	msg, err := hex.DecodeString(golden.msg)
	if err != nil || len(msg) != MessageSize {
		t.Fatalf("golden message: %d bytes, %v", len(msg), err)
	}
	return mustKey(t, golden.responder), mustKey(t, golden.initiator), msg
}

func mustKey(t testing.TB, s string) wgtypes.Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	k, err := wgtypes.NewKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// forge builds an initiation to responder claiming static as the
// initiator's key, as anyone who knows responder's public key can: the
// initiator's side up to the encrypted static key, random bytes for the
// timestamp (sealing it needs static's private key), then mac1.
func forge(t testing.TB, responder, static wgtypes.Key) []byte {
	return initiation(t, responder, static, nil, Timestamp{})
}

// initiate builds a genuine initiation from initiator (a private key) to
// responder, with timestamp ts.
func initiate(t testing.TB, responder, initiator wgtypes.Key, ts Timestamp) []byte {
	return initiation(t, responder, initiator.PublicKey(), &initiator, ts)
}

var lastTestTimestamp atomic.Uint64

// nextTimestamp is a TAI64N label later than any before it in this test
// binary.
func nextTimestamp() Timestamp {
	var ts Timestamp
	binary.BigEndian.PutUint64(ts[:8], 1<<62+1_800_000_000+lastTestTimestamp.Add(1))
	return ts
}

func initiation(t testing.TB, responder, static wgtypes.Key, staticPriv *wgtypes.Key, ts Timestamp) []byte {
	t.Helper()
	msg := make([]byte, MessageSize)
	binary.LittleEndian.PutUint32(msg, MessageType)
	rand.Read(msg[4:8])
	eph := newKey(t)
	ephPub := eph.PublicKey()
	copy(msg[offEphemeral:], ephPub[:])
	h := mixHash(mixHash(initialHash, responder[:]), ephPub[:])
	c := kdf1(initialChainKey, ephPub[:])
	ss, err := curve25519.X25519(eph[:], responder[:])
	if err != nil {
		t.Fatal(err)
	}
	c, k := kdf2(c, ss)
	aead, _ := chacha20poly1305.New(k[:])
	aead.Seal(msg[offStatic:offStatic], zeroNonce[:], static[:], h[:])
	if staticPriv == nil {
		rand.Read(msg[offTimestamp:offMAC1])
	} else {
		h = mixHash(h, msg[offStatic:offTimestamp])
		ss, err := curve25519.X25519(staticPriv[:], responder[:])
		if err != nil {
			t.Fatal(err)
		}
		_, k := kdf2(c, ss)
		aead, _ := chacha20poly1305.New(k[:])
		aead.Seal(msg[offTimestamp:offTimestamp], zeroNonce[:], ts[:], h[:])
	}
	setMAC1(responder, msg)
	return msg
}

// setMAC1 recomputes msg's mac1 for responder, as a sender that tampered
// with it would.
func setMAC1(responder wgtypes.Key, msg []byte) {
	key := blake2s.Sum256(append([]byte(labelMAC1), responder[:]...))
	h, _ := blake2s.New128(key[:])
	h.Write(msg[:offMAC1])
	h.Sum(msg[offMAC1:offMAC1])
}

func TestInitiatorFromWireGuardGo(t *testing.T) {
	responder, initiator, msg := goldenVector(t)
	r := NewResponder(responder)
	got, err := r.Initiator(msg)
	if err != nil {
		t.Fatalf("initiator of wireguard-go's initiation: %v", err)
	}
	if got != initiator {
		t.Fatalf("recovered %s, want %s", got, initiator)
	}
	if err := NewResponder(newKey(t)).CheckMAC1(msg); !errors.Is(err, ErrMAC1) {
		t.Errorf("mac1 for another responder key: %v, want ErrMAC1", err)
	}
	if _, err := NewResponder(newKey(t)).Initiator(msg); !errors.Is(err, ErrMAC1) {
		t.Errorf("initiator with another responder key: %v, want ErrMAC1", err)
	}
}

func TestAuthenticateWireGuardGo(t *testing.T) {
	responder, initiator, msg := goldenVector(t)
	r := NewResponder(responder)
	calls := 0
	key, ts, err := r.Authenticate(msg, func(k wgtypes.Key) ([32]byte, error) { calls++; return r.StaticSecret(k) })
	if err != nil || key != initiator || calls != 1 {
		t.Fatalf("authenticate wireguard-go's initiation: %s, %v after %d secrets; want %s", key, err, calls, initiator)
	}
	// TAI64N: 2^62 + seconds since 1970, here December 2026.
	if sec := binary.BigEndian.Uint64(ts[:8]) - 1<<62; sec < 1_790_000_000 || sec > 1_800_000_000 {
		t.Errorf("timestamp %x: %d s since 1970", ts, sec)
	}
	// A refusal from secret stops there, and is returned as is.
	errNo := errors.New("not registered")
	if _, _, err := r.Authenticate(msg, func(wgtypes.Key) ([32]byte, error) { return [32]byte{}, errNo }); err != errNo {
		t.Errorf("secret refused: %v, want its error", err)
	}
	// The wrong secret (another peer's) does not authenticate.
	other := newKey(t).PublicKey()
	if _, _, err := r.Authenticate(msg, func(wgtypes.Key) ([32]byte, error) { return r.StaticSecret(other) }); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("another peer's secret: %v, want ErrUnauthenticated", err)
	}
}

func TestForgedStaticKeyIsAClaimOnly(t *testing.T) {
	// Anyone can encrypt any static key: Initiator recovers the claim,
	// Authenticate refuses it.
	responder, claimed := newKey(t), newKey(t).PublicKey()
	r := NewResponder(responder)
	msg := forge(t, responder.PublicKey(), claimed)
	got, err := r.Initiator(msg)
	if err != nil || got != claimed {
		t.Fatalf("forged initiation: %s, %v; want %s", got, err, claimed)
	}
	if got, _, err := r.Authenticate(msg, r.StaticSecret); !errors.Is(err, ErrUnauthenticated) || got != claimed {
		t.Fatalf("forged initiation authenticated: %s, %v", got, err)
	}
	// The test's own genuine initiations do authenticate, with their time.
	peer := newKey(t)
	ts := nextTimestamp()
	if got, gotTS, err := r.Authenticate(initiate(t, responder.PublicKey(), peer, ts), r.StaticSecret); err != nil || got != peer.PublicKey() || gotTS != ts {
		t.Fatalf("genuine initiation: %s %x, %v; want %s %x", got, gotTS, err, peer.PublicKey(), ts)
	}
}

func TestInitiatorRefuses(t *testing.T) {
	responder, _, golden := goldenVector(t)
	r := NewResponder(responder)
	pub := responder.PublicKey()
	clone := func(f func(m []byte) []byte) []byte { return f(append([]byte(nil), golden...)) }
	cases := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"truncated", golden[:MessageSize-1], ErrMalformed},
		{"one byte long", append(append([]byte(nil), golden...), 0), ErrMalformed},
		{"response type", clone(func(m []byte) []byte { m[0] = 2; return m }), ErrMalformed},
		{"reserved byte set", clone(func(m []byte) []byte { m[3] = 1; return m }), ErrMalformed},
		{"zeros", make([]byte, MessageSize), ErrMalformed},
		{"zeros of type 1", clone(func(m []byte) []byte { clear(m[4:]); return m }), ErrMAC1},
		{"static flipped, mac1 redone", clone(func(m []byte) []byte { m[offStatic+5] ^= 1; setMAC1(pub, m); return m }), ErrUndecryptable},
		{"tag flipped, mac1 redone", clone(func(m []byte) []byte { m[offTimestamp-1] ^= 0x80; setMAC1(pub, m); return m }), ErrUndecryptable},
		{"ephemeral flipped, mac1 redone", clone(func(m []byte) []byte { m[offEphemeral] ^= 4; setMAC1(pub, m); return m }), ErrUndecryptable},
		{"low-order ephemeral, mac1 redone", clone(func(m []byte) []byte { clear(m[offEphemeral:offStatic]); setMAC1(pub, m); return m }), ErrUndecryptable},
	}
	for _, c := range cases {
		if k, err := r.Initiator(c.msg); !errors.Is(err, c.want) {
			t.Errorf("%s: %s, %v; want %v", c.name, k, err, c.want)
		}
	}
	// Every single-bit flip up to mac2 fails mac1 (or the type check); one
	// in mac2 does not matter: mac2 is only checked under load, by
	// wireguard-go, against a cookie.
	for i := range offMAC2 * 8 {
		m := append([]byte(nil), golden...)
		m[i/8] ^= 1 << (i % 8)
		if err := r.CheckMAC1(m); err == nil {
			t.Fatalf("bit %d flipped: mac1 still matches", i)
		}
	}
	m := append([]byte(nil), golden...)
	m[offMAC2+3] ^= 1
	if _, err := r.Initiator(m); err != nil {
		t.Errorf("mac2 flipped: %v, want the initiator", err)
	}
}

func TestCheckMAC1DoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	responder, _, msg := goldenVector(t)
	r := NewResponder(responder)
	bad := append([]byte(nil), msg...)
	bad[20] ^= 1
	if n := testing.AllocsPerRun(100, func() { _ = r.CheckMAC1(msg); _ = r.CheckMAC1(bad) }); n != 0 {
		t.Errorf("CheckMAC1 allocates %.0f times per call pair", n)
	}
}

func TestHMACMatchesCryptoHMAC(t *testing.T) {
	for _, n := range []struct{ key, a, b int }{{32, 32, 0}, {32, 1, 0}, {32, 32, 1}, {64, 40, 24}, {0, 0, 0}, {7, 3, 5}} {
		key, a, b := make([]byte, n.key), make([]byte, n.a), make([]byte, n.b)
		rand.Read(key)
		rand.Read(a)
		rand.Read(b)
		m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, key)
		m.Write(a)
		m.Write(b)
		got := hmacBLAKE2s(key, a, b)
		if want := m.Sum(nil); !bytes.Equal(got[:], want) {
			t.Errorf("key %d bytes, input %d+%d: %x, crypto/hmac says %x", n.key, n.a, n.b, got, want)
		}
	}
}
