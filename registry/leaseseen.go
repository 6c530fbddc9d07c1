package registry

import "net/netip"

// A record's lease is read once, not at every change of its host: an
// endpoint change would otherwise cost each watcher a listing and two
// reads where ZooKeeper's own fan-out costs one of each.
//
// Skipping the read must not let a record keep an address its host no
// longer holds. A lease leaves its host only by a decommission, which in
// one transaction deletes the host's owner node, its records and the lease
// (replaced by a quarantine marker). A record read, lease and all, for
// node R covers R's successor S when:
//
//   - R was still listed at the bucket's last listing, so no decommission
//     came between the lease read and that listing (it would have deleted
//     R); a watcher that saw R go reads the lease of whatever comes next;
//   - S is an ephemeral of the session that wrote R, that is the host's own
//     meshd (nobody else can create a node in its session): meshd creates
//     a record only in a multi that checks the host's owner node is there
//     (replaceRecord), so the host still held its lease when S was made;
//   - S claims the address R did (a host that leased again after a
//     decommission has its new lease read).
//
// Anything else - a join, a restart (a new session), a record written by
// hand or by a meshd older than that check - reads the lease.

// leaseSeen is a lease read for one record node.
type leaseSeen struct {
	node  string // the record node's name
	addr  netip.Addr
	owner int64 // the record's ephemeral owner: its host's session
}

// leaseForLocked is the lease read that may cover id's next record, or nil.
// Called with r.mu held.
func (r *Registry) leaseForLocked(b int, id string) *leaseSeen {
	if seen, ok := r.leases[b][id]; ok {
		return &seen
	}
	return nil
}

// listedLocked drops the lease reads of record nodes a listing no longer
// holds. Called with r.mu held.
func (r *Registry) listedLocked(b int, children map[string]bool) {
	for id, s := range r.leases[b] {
		if !children[s.node] {
			delete(r.leases[b], id)
		}
	}
}
