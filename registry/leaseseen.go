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
// or, whatever the session, when
//
//   - the decommission counter has not moved since the lease read
//     (decommissions.go): no lease has left its host, so the host still
//     holds the lease that was read;
//   - S claims the address that lease gives.
//
// That second rule is what spares a restart (a new session, the
// commonest join) the lease read. Anything else - a first join, a restart
// after a decommission anywhere in the fleet, a record claiming another
// address - reads the lease.
//
// That read need not wait for the record's. A host that comes back almost
// always claims the address it had, so the watcher reads the lease of the
// address it last saw for the id at the same time as the record, and uses
// it when the record claims that address: one round of N requests less for
// every such join of a known host. Reading the lease before the record
// proves as much as after it. Both reads follow the listing that held the
// record R, in one session, so both see the state at or after it. R was
// created before that listing while its host held a lease (the owner
// check), and still exists when it is read. A decommission of the host in
// between would have deleted R in the same transaction that took the
// lease: so the lease the host held when R was made is the one read,
// whichever read went first. The one exception is a record created between
// a decommission's listing and its transaction, which survives it; a
// watcher that read both nodes just before the decommission accepts that
// record today, so the early read adds no outcome the sequential one could
// not have. A wrong guess (the record claims another address) costs one
// read, and the lease the record does claim is read after it as before.

// leaseSeen is a lease read for one record node.
type leaseSeen struct {
	node  string // the record node's name; empty once no listing holds it
	addr  netip.Addr
	owner int64 // the record's ephemeral owner: its host's session
	// gen is the decommission watch's generation the read counts for
	// (decommissions.go), 0 for none. While it is the current one, no
	// lease has left its host since the read, so the read covers any
	// later record of the id that claims addr, in whatever session.
	gen uint64
}

// covers says whether the read covers a record of its id that claims addr,
// in session owner, with the decommission watch at generation epoch.
func (s *leaseSeen) covers(addr netip.Addr, owner int64, epoch uint64) bool {
	if s == nil || s.addr != addr {
		return false
	}
	sameSession := s.node != "" && owner != 0 && owner == s.owner
	return sameSession || s.current(epoch)
}

// current says whether the read counts in generation epoch: no
// decommission has come since it was made.
func (s *leaseSeen) current(epoch uint64) bool { return s.gen != 0 && s.gen == epoch }

// leaseForLocked is the lease read that may cover id's next record, or nil.
// Called with r.mu held.
func (r *Registry) leaseForLocked(b int, id string, epoch uint64) *leaseSeen {
	if seen, ok := r.leases[b][id]; ok && (seen.node != "" || seen.current(epoch)) {
		return &seen
	}
	return nil
}

// guessLocked is the address id last held as far as this registry knows:
// the lease to read beside its next record. Called with r.mu held.
func (r *Registry) guessLocked(b int, id string) (netip.Addr, bool) {
	seen, ok := r.leases[b][id]
	return seen.addr, ok
}

// listedLocked keeps, of the lease reads of record nodes a listing no
// longer holds, the address and the generation: it covers by the session
// no more, only while no decommission has come since; otherwise it is a
// guess. Called with r.mu held.
func (r *Registry) listedLocked(b int, children map[string]bool) {
	for id, s := range r.leases[b] {
		if s.node != "" && !children[s.node] {
			r.leases[b][id] = leaseSeen{addr: s.addr, gen: s.gen}
		}
	}
}

// forgetLocked drops what is known of id's lease: its host was
// decommissioned. Called with r.mu held.
func (r *Registry) forgetLocked(id string) {
	delete(r.leases[BucketOf(id)], id)
}

// earlyLease is a lease read made beside a record's read.
type earlyLease struct {
	addr  netip.Addr
	owner []byte
	err   error
	done  chan struct{}
}

// readLeaseEarly reads addr's lease in the background.
func (r *Registry) readLeaseEarly(addr netip.Addr) *earlyLease {
	e := &earlyLease{addr: addr, done: make(chan struct{})}
	r.stats.Requests.Add(1)
	go func() {
		defer close(e.done)
		e.owner, _, e.err = r.conn.Get(r.leasePath(addr))
	}()
	return e
}
