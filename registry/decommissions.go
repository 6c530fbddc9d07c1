package registry

import (
	"errors"
	"path"
	"time"

	"github.com/go-zookeeper/zk"
)

// The decommission counter tells every watcher, with one watch each, that
// some host may have lost its lease. A lease leaves its host only when
// meshd decommissions the host (the lease becomes a quarantine marker) or
// takes over a quarantined address; both set the counter node in the same
// multi. So a lease read stays true for as long as the counter has not
// moved since, and a host that comes back (a restart: a new session,
// the commonest join) claiming the address its lease was read for costs a
// watcher its listing and its record, as raw ZooKeeper's fan-out does,
// instead of those and its lease (leaseseen.go).
//
// The watch is an exists watch on the counter, armed once and again after
// each firing. Each arming starts a new generation; a lease read counts
// only for the generation in which it was made, and only while that
// generation's watch has not fired. ZooKeeper delivers a session's watch
// events and replies in the order of its transactions, and go-zookeeper
// closes a fired watch's channel in its receive loop before it passes on
// anything later: so when a listing's reply is in, a decommission that
// came before it has already closed the channel, and epochLocked sees it
// whether or not the watch loop has run since. A generation knows only
// what came after its arming: a lease read counts only when made after
// it, and a removal is taken for a leave only between two listings both
// answered inside it (syncBucket) - the fleet's first decommission makes
// the counter node, which fires every watch just before its own multi.
// After a session expiry the watch fires (not watching), and the next
// arming starts afresh.
//
// Who can move a lease without the counter: a ZooKeeper writer deleting
// and re-creating lease nodes by hand. That writer can already give any
// address to any host by rewriting its lease, which every watcher would
// then read, so the counter widens nobody's power. A meshd from before the
// counter decommissions without it; a takeover of the address by an
// upgraded meshd still moves it, and so does a session expiry.

// decommissionsPath is the counter: a persistent node whose data is the
// last host decommissioned (or whose address was taken over) and whose
// version moves with every one.
func (r *Registry) decommissionsPath() string { return path.Join(r.root, "decommissions") }

// leaseEpoch is the decommission watch as the watch loop last armed it.
// Guarded by r.mu.
type leaseEpoch struct {
	gen   uint64          // the current arming; lease reads of earlier ones count for nothing
	watch <-chan zk.Event // nil while (re)arming
}

// epochLocked is the generation a lease read made now counts for, or 0 if
// none: the watch is not armed, or has fired. Called with r.mu held.
func (r *Registry) epochLocked() uint64 {
	if r.epoch.watch == nil {
		return 0
	}
	select {
	case <-r.epoch.watch:
		r.epoch.watch = nil // fired: closed, so the watch loop sees it too
		return 0
	default:
		return r.epoch.gen
	}
}

// watchDecommissions keeps the counter's watch armed. The buckets' first
// listings wait for its first try (epochTried), so that the leases they
// read count from the start.
func (r *Registry) watchDecommissions() {
	defer r.wg.Done()
	tried := false
	backoff := 100 * time.Millisecond
	for r.ctx.Err() == nil {
		r.stats.Requests.Add(1)
		_, _, ch, err := r.conn.ExistsW(r.decommissionsPath())
		if err == nil {
			r.mu.Lock()
			r.epoch.gen++
			r.epoch.watch = ch
			r.epochArmed.Store(r.epoch.gen)
			r.mu.Unlock()
		}
		if !tried {
			tried = true
			close(r.epochTried)
		}
		if err != nil {
			r.log.Debug("watch decommissions", "err", err)
			if !r.backOff(&backoff) {
				return
			}
			continue
		}
		backoff = 100 * time.Millisecond
		select {
		case <-r.ctx.Done():
			return
		case <-ch:
		}
		r.mu.Lock()
		r.epoch.watch = nil
		r.mu.Unlock()
	}
}

// countDecommission is the multi op that moves the counter for id, made
// sure to exist first (a fleet from before it has none; anyone may have
// deleted it, which only fires everyone's watch).
func (r *Registry) countDecommission(id string) (*zk.SetDataRequest, error) {
	r.stats.Requests.Add(1)
	if _, err := r.conn.Create(r.decommissionsPath(), nil, 0, r.acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return nil, err
	}
	return &zk.SetDataRequest{Path: r.decommissionsPath(), Data: []byte(id), Version: -1}, nil
}
