package handshake

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// peerState is what the Identifier keeps for a registered peer.
type peerState struct {
	endpoints []netip.AddrPort
	// secret is the static-static secret with the peer, computed on its
	// first decryption by secretOf (a key rotation makes it stale).
	secret   [32]byte
	secretOf *Responder
	// last is the latest timestamp authenticated from the peer; it outlives
	// the peer's time in the device, which wireguard-go's own does not.
	last Timestamp
}

var errUnknownPeer = errors.New("handshake initiation: no registered peer has this key")

// SetPeer registers a peer whose initiations are to be reported, with the
// underlay endpoints it is known to send from (its registered ones); a
// second call replaces the endpoints. One call costs O(its endpoints).
func (id *Identifier) SetPeer(key wgtypes.Key, endpoints ...netip.AddrPort) {
	id.mu.Lock()
	defer id.mu.Unlock()
	p := id.peers[key]
	if p == nil {
		p = &peerState{}
		id.peers[key] = p
	}
	id.unindexLocked(key, p)
	p.endpoints = make([]netip.AddrPort, 0, len(endpoints))
	for _, ep := range endpoints {
		ep = normalize(ep)
		if !ep.IsValid() || slices.Contains(p.endpoints, ep) {
			continue
		}
		p.endpoints = append(p.endpoints, ep)
		id.byEndpoint[ep] = append(id.byEndpoint[ep], key)
	}
}

// RemovePeer forgets a peer: its initiations count as UnknownKey.
func (id *Identifier) RemovePeer(key wgtypes.Key) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if p := id.peers[key]; p != nil {
		id.unindexLocked(key, p)
		delete(id.peers, key)
	}
}

func (id *Identifier) unindexLocked(key wgtypes.Key, p *peerState) {
	for _, ep := range p.endpoints {
		keys := slices.DeleteFunc(id.byEndpoint[ep], func(k wgtypes.Key) bool { return k == key })
		if len(keys) == 0 {
			delete(id.byEndpoint, ep)
		} else {
			id.byEndpoint[ep] = keys
		}
	}
	p.endpoints = nil
}

// endpointPeer is the one peer registered at ep; an endpoint two peers
// claim names neither (the initiation is decrypted instead).
func (id *Identifier) endpointPeer(ep netip.AddrPort) (wgtypes.Key, bool) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	keys := id.byEndpoint[ep]
	if len(keys) != 1 {
		return wgtypes.Key{}, false
	}
	return keys[0], true
}

// staticSecret is the static-static secret with a registered peer for r,
// computed (one X25519, outside the lock) the first time; errUnknownPeer
// for a key no registered peer has, before any work.
func (id *Identifier) staticSecret(r *Responder, key wgtypes.Key) ([32]byte, error) {
	id.mu.RLock()
	p := id.peers[key]
	var ss [32]byte
	cached := p != nil && p.secretOf == r
	if cached {
		ss = p.secret
	}
	id.mu.RUnlock()
	switch {
	case p == nil:
		return ss, errUnknownPeer
	case cached:
		return ss, nil
	}
	ss, err := r.StaticSecret(key)
	if err != nil {
		return ss, err
	}
	id.mu.Lock()
	p.secret, p.secretOf = ss, r
	id.mu.Unlock()
	return ss, nil
}

// fresh reports whether ts is later than any timestamp authenticated from
// the peer before, and if so keeps it. A replayed initiation is not.
func (id *Identifier) fresh(key wgtypes.Key, ts Timestamp) bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	p := id.peers[key]
	if p == nil || bytes.Compare(ts[:], p.last[:]) <= 0 {
		return false
	}
	p.last = ts
	return true
}

// normalize makes an endpoint comparable with the source addresses the Bind
// reports: IPv4 as 4 bytes, no zone.
func normalize(ep netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ep.Addr().Unmap().WithZone(""), ep.Port())
}
