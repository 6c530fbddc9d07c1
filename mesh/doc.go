// Package mesh is the reconciler: it turns this host's identity, the
// registry's view of the fleet and the direct-connect links into the desired
// WireGuard peers and firewall members, and applies only the difference.
//
// Data flows one way: registry events and device statistics come in; peer
// deltas go to the device and member deltas to the firewall. One changed host
// costs O(1) work: its old contribution is replaced by its new one, nothing
// is rebuilt. Per peer, a small state machine (pathState) picks the endpoint:
// the best candidate first, the next one when no handshake completes on it
// within the handshake timeout, and back to the better one only once it has
// proven up (hysteresis, with exponential backoff between trials).
package mesh
