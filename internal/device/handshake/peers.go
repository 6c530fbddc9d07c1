package handshake

import (
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// SetPeer registers a peer whose initiations are to be reported, with the
// underlay endpoints it is known to send from (its registered ones); a
// second call replaces the endpoints. One call costs O(its endpoints).
func (id *Identifier) SetPeer(key wgtypes.Key, endpoints ...netip.AddrPort) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.removeLocked(key)
	eps := make([]netip.AddrPort, 0, len(endpoints))
	for _, ep := range endpoints {
		ep = normalize(ep)
		if !ep.IsValid() || slices.Contains(eps, ep) {
			continue
		}
		eps = append(eps, ep)
		id.byEndpoint[ep] = append(id.byEndpoint[ep], key)
	}
	id.peers[key] = eps
}

// RemovePeer forgets a peer: its initiations count as UnknownKey.
func (id *Identifier) RemovePeer(key wgtypes.Key) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.removeLocked(key)
}

func (id *Identifier) removeLocked(key wgtypes.Key) {
	for _, ep := range id.peers[key] {
		keys := slices.DeleteFunc(id.byEndpoint[ep], func(k wgtypes.Key) bool { return k == key })
		if len(keys) == 0 {
			delete(id.byEndpoint, ep)
		} else {
			id.byEndpoint[ep] = keys
		}
	}
	delete(id.peers, key)
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

func (id *Identifier) registered(key wgtypes.Key) bool {
	id.mu.RLock()
	defer id.mu.RUnlock()
	_, ok := id.peers[key]
	return ok
}

// normalize makes an endpoint comparable with the source addresses the Bind
// reports: IPv4 as 4 bytes, no zone.
func normalize(ep netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ep.Addr().Unmap().WithZone(""), ep.Port())
}
