// Package handshake recognises the sender of a WireGuard handshake
// initiation that the device cannot place, the inbound half of lazy peers:
// a peer not in the device has no session, so its first datagram to us is an
// initiation, and whoever brings the peer in must first know who it is.
//
// Responder recovers the initiator's static public key from an initiation
// with this host's private key, and proves it with the timestamp: the
// responder's first steps of WireGuard's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s
// handshake (whitepaper §5.4.2), after the cheap mac1 check that turns
// garbage away. Identifier runs that off the
// receive path behind a bounded queue, a source-endpoint lookup that skips
// the Diffie-Hellman, and a rate limit on what is left.
//
// It uses the standard library and golang.org/x/crypto only: wireguard-go's
// device package stays in internal/device.
package handshake

import (
	"crypto/ecdh"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"sync"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// An initiation (message type 1) is 148 bytes:
//
//	type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
const (
	MessageType = 1
	MessageSize = 148

	offEphemeral = 8
	offStatic    = offEphemeral + 32
	offTimestamp = offStatic + 32 + chacha20poly1305.Overhead
	offMAC1      = offTimestamp + 12 + chacha20poly1305.Overhead
	offMAC2      = offMAC1 + blake2s.Size128
)

// Refusals, from the cheapest check to the dearest.
var (
	// ErrMalformed: not 148 bytes, or not message type 1.
	ErrMalformed = errors.New("not a WireGuard handshake initiation")
	// ErrMAC1: mac1 is not keyed with this host's public key, so the
	// initiation is for another host (or garbage). Costs one BLAKE2s.
	ErrMAC1 = errors.New("handshake initiation: mac1 does not match this host's public key")
	// ErrUndecryptable: mac1 matched but the encrypted static key does not
	// open (tampered, or a low-order ephemeral). Costs one X25519.
	ErrUndecryptable = errors.New("handshake initiation: static key does not decrypt")
	// ErrUnauthenticated: the static key opened, but the timestamp does not
	// open with that key's static-static secret: the sender does not hold
	// the private key it claims. A second X25519, unless the secret is
	// cached.
	ErrUnauthenticated = errors.New("handshake initiation: timestamp does not authenticate the claimed key")
)

// Timestamp is an initiation's TAI64N timestamp: 12 bytes, big-endian, so
// a later one compares greater (bytes.Compare).
type Timestamp [12]byte

// Protocol constants (whitepaper §5.4): Ci = HASH(construction), Hi =
// HASH(Ci || identifier).
var (
	initialChainKey = blake2s.Sum256([]byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"))
	initialHash     = mixHash(initialChainKey, []byte("WireGuard v1 zx2c4 Jason@zx2c4.com"))
	zeroNonce       [chacha20poly1305.NonceSize]byte
)

const labelMAC1 = "mac1----"

// Responder identifies initiators of handshakes sent to one private key.
// What depends only on that key is computed once, in NewResponder. It is
// safe for concurrent use.
type Responder struct {
	// private is ready for X25519: x/crypto's curve25519.X25519 would
	// rebuild it, with a base-point multiplication for its public key, on
	// every call (41% of an identification, bench/PROFILES.md).
	private *ecdh.PrivateKey
	public  wgtypes.Key
	// hash is the handshake hash after the responder's static key is mixed
	// in, H = HASH(Hi || S_pub_r): the same for every initiation to us.
	hash [32]byte
	// mac1 holds *mac1State, each a BLAKE2s-128 keyed with
	// HASH("mac1----" || S_pub_r); Reset brings back the keyed state, so the
	// receive path checks mac1 without allocating.
	mac1 sync.Pool
}

type mac1State struct {
	h   hash.Hash
	sum [blake2s.Size128]byte
}

// NewResponder precomputes what identifying initiations to private needs.
func NewResponder(private wgtypes.Key) *Responder {
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		panic(err) // any 32 bytes are an X25519 private key
	}
	r := &Responder{private: priv, public: private.PublicKey()}
	r.hash = mixHash(initialHash, r.public[:])
	key := blake2s.Sum256(append([]byte(labelMAC1), r.public[:]...))
	r.mac1.New = func() any {
		h, err := blake2s.New128(key[:])
		if err != nil {
			panic(err) // a 32-byte key is always valid
		}
		return &mac1State{h: h}
	}
	return r
}

// PublicKey is the public key initiations must be addressed to.
func (r *Responder) PublicKey() wgtypes.Key { return r.public }

// CheckMAC1 reports whether msg is an initiation addressed to this
// responder's public key: ErrMalformed or ErrMAC1 if not. It costs one
// BLAKE2s over 116 bytes and allocates nothing, so the receive path can
// afford it for every initiation.
func (r *Responder) CheckMAC1(msg []byte) error {
	if len(msg) != MessageSize || binary.LittleEndian.Uint32(msg) != MessageType {
		return ErrMalformed
	}
	s := r.mac1.Get().(*mac1State)
	defer r.mac1.Put(s)
	s.h.Reset()
	s.h.Write(msg[:offMAC1])
	s.h.Sum(s.sum[:0])
	if subtle.ConstantTimeCompare(s.sum[:], msg[offMAC1:offMAC2]) != 1 {
		return ErrMAC1
	}
	return nil
}

// Initiator returns the static public key of whoever sent the initiation
// msg, after checking mac1. It follows the responder's side of the
// handshake as far as the static key:
//
//	H = HASH(H || E_pub_i)           C = KDF1(Ci, E_pub_i)
//	(C, k) = KDF2(C, DH(S_priv_r, E_pub_i))
//	S_pub_i = AEAD-open(k, 0, static, H)
//
// This says who the sender claims to be, not that it is: anyone who knows
// our public key can encrypt any static key. The timestamp that follows is
// sealed under DH(S_priv_i, S_pub_r) and proves it: Authenticate.
func (r *Responder) Initiator(msg []byte) (wgtypes.Key, error) {
	key, _, _, err := r.openStatic(msg)
	return key, err
}

// Authenticate does what Initiator does and then proves the claim, as
// wireguard-go does before it answers:
//
//	H = HASH(H || static)
//	(C, k) = KDF2(C, DH(S_priv_r, S_pub_i))
//	timestamp = AEAD-open(k, 0, timestamp, H)
//
// secret returns DH(S_priv_r, S_pub_i) for the claimed key (StaticSecret,
// best cached per peer), or an error, returned as is, to refuse the key
// before that work. A replay of a genuine initiation authenticates too:
// compare the Timestamp with the last one accepted from that peer.
func (r *Responder) Authenticate(msg []byte, secret func(wgtypes.Key) ([32]byte, error)) (wgtypes.Key, Timestamp, error) {
	key, c, h, err := r.openStatic(msg)
	if err != nil {
		return wgtypes.Key{}, Timestamp{}, err
	}
	ss, err := secret(key)
	if err != nil {
		return key, Timestamp{}, err
	}
	h = mixHash(h, msg[offStatic:offTimestamp])
	_, k := kdf2(c, ss[:])
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		return key, Timestamp{}, err
	}
	var ts Timestamp
	if _, err := aead.Open(ts[:0], zeroNonce[:], msg[offTimestamp:offMAC1], h[:]); err != nil {
		return key, Timestamp{}, ErrUnauthenticated
	}
	return key, ts, nil
}

// StaticSecret is DH(S_priv_r, S_pub_i), the static-static secret with
// peer that Authenticate needs: one X25519, the same for every initiation
// from that peer. A low-order peer key has none (ErrUndecryptable).
func (r *Responder) StaticSecret(peer wgtypes.Key) ([32]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return [32]byte{}, err
	}
	ss, err := r.private.ECDH(pub)
	if err != nil {
		return [32]byte{}, ErrUndecryptable
	}
	return [32]byte(ss), nil
}

// openStatic checks mac1 and opens the static key; c and h are the
// chaining key and hash the timestamp's step continues from.
func (r *Responder) openStatic(msg []byte) (key wgtypes.Key, c, h [32]byte, err error) {
	if err := r.CheckMAC1(msg); err != nil {
		return key, c, h, err
	}
	ephemeral := msg[offEphemeral:offStatic]
	h = mixHash(r.hash, ephemeral)
	c = kdf1(initialChainKey, ephemeral)
	e, err := ecdh.X25519().NewPublicKey(ephemeral)
	if err != nil {
		return key, c, h, err // only for a length other than 32
	}
	ss, err := r.private.ECDH(e)
	if err != nil { // a low-order point: the shared secret is all zeros
		return key, c, h, ErrUndecryptable
	}
	c, k := kdf2(c, ss)
	aead, err := chacha20poly1305.New(k[:])
	if err != nil {
		return key, c, h, err
	}
	if _, err := aead.Open(key[:0], zeroNonce[:], msg[offStatic:offTimestamp], h[:]); err != nil {
		return wgtypes.Key{}, c, h, ErrUndecryptable
	}
	return key, c, h, nil
}

// mixHash is HASH(h || data).
func mixHash(h [32]byte, data []byte) [32]byte {
	var buf [32 + 64]byte
	n := copy(buf[:], h[:])
	n += copy(buf[n:], data)
	return blake2s.Sum256(buf[:n])
}

// hmacBLAKE2s is HMAC-BLAKE2s-256(key, a || b), WireGuard's HMAC, for the
// short keys and inputs of a handshake (at most 64 bytes each), on the
// stack: crypto/hmac allocates two hashes per call.
func hmacBLAKE2s(key, a, b []byte) [32]byte {
	const block = blake2s.BlockSize
	if len(key) > block || len(a)+len(b) > block {
		panic("handshake: HMAC key or input longer than a block")
	}
	var buf [2 * block]byte
	copy(buf[:], key)
	for i := range block {
		buf[i] ^= 0x36
	}
	n := block + copy(buf[block:], a)
	n += copy(buf[n:], b)
	inner := blake2s.Sum256(buf[:n])
	clear(buf[:block])
	copy(buf[:], key)
	for i := range block {
		buf[i] ^= 0x5c
	}
	copy(buf[block:], inner[:])
	return blake2s.Sum256(buf[:block+len(inner)])
}

// kdf1 and kdf2 are WireGuard's HKDF with HMAC-BLAKE2s: τ0 = HMAC(key,
// input), τ1 = HMAC(τ0, 0x1), τ2 = HMAC(τ0, τ1 || 0x2).
func kdf1(key [32]byte, input []byte) [32]byte {
	t0 := hmacBLAKE2s(key[:], input, nil)
	return hmacBLAKE2s(t0[:], []byte{1}, nil)
}

func kdf2(key [32]byte, input []byte) (t1, t2 [32]byte) {
	t0 := hmacBLAKE2s(key[:], input, nil)
	t1 = hmacBLAKE2s(t0[:], []byte{1}, nil)
	t2 = hmacBLAKE2s(t0[:], t1[:], []byte{2})
	return t1, t2
}
