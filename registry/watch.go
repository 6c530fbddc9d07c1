package registry

import (
	"cmp"
	"errors"
	"math/rand/v2"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// listSlots bounds the bucket listings (each with the reads it leads to)
// a registry has in flight. A session's 256 watches are lost together
// (expiry), and when a whole fleet's are, N hosts listing 256 buckets each
// at once is a herd that ZooKeeper serves in one queue with every change.
const listSlots = 16

// resyncSpread is the window over which a bucket whose watch was lost
// (expiry) is listed again, at random: hosts that lost their sessions
// together do not come back in step. The view is kept meanwhile.
const resyncSpread = 2 * time.Second

// watchBucket keeps one bucket's records in the view: list with a child
// watch, diff against what was seen, wait for the watch, again. The same
// diff is the resync after a reconnect or expiry.
func (r *Registry) watchBucket(b int) {
	defer r.wg.Done()
	p := r.bucketPath(b)
	backoff := 100 * time.Millisecond
	listedOnce := false
	for _, ready := range []chan struct{}{r.epochTried, r.modeDecided} {
		select {
		case <-ready:
		case <-r.ctx.Done():
			return
		}
	}
	if r.following.Load() {
		r.followBucket(b)
		return
	}
	for r.ctx.Err() == nil {
		if !r.takeSlot() {
			return
		}
		ch, complete, err := r.listBucket(b, p)
		<-r.slots
		if err != nil {
			if !r.listFailed(p, err, &backoff) {
				return
			}
			continue
		}
		backoff = 100 * time.Millisecond
		if complete && !listedOnce {
			listedOnce = true
			r.listed.Add(1)
		}
		if !complete {
			// A read failed with the connection, not the record: list
			// again once the client is back (the watch may never fire).
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(jitter(time.Second)):
			}
			continue
		}
		var ev zk.Event
		select {
		case <-r.ctx.Done():
			return
		case ev = <-ch:
		case <-r.resync[b]:
		}
		if ev.Type == zk.EventNotWatching {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(rand.N(resyncSpread)):
			}
		}
	}
}

// listBucket lists bucket b with a watch and syncs the view to it; complete
// is false when a record's read failed with the connection.
func (r *Registry) listBucket(b int, p string) (watch <-chan zk.Event, complete bool, err error) {
	// The decommission watch's generation before the listing is sent: if
	// it is still current when the reply is in, the server answered the
	// listing inside that generation (decommissions.go).
	r.mu.Lock()
	before := r.epochLocked()
	r.mu.Unlock()
	children, stat, ch, err := r.list(p, true)
	if err != nil {
		return nil, false, err
	}
	return ch, r.syncBucket(b, children, stampOf(stat), before, 0), nil
}

// list lists bucket p, with a child watch if watch, making the bucket
// node if it is missing.
func (r *Registry) list(p string, watch bool) ([]string, *zk.Stat, <-chan zk.Event, error) {
	if n := r.listing.Add(1); n > r.listingMax.Load() {
		r.listingMax.Store(n) // a high-water mark for tests; races only lose a tie
	}
	defer r.listing.Add(-1)
	r.listings.Add(1)
	get := func() (children []string, stat *zk.Stat, ch <-chan zk.Event, err error) {
		r.stats.Requests.Add(1)
		if watch {
			return r.conn.ChildrenW(p)
		}
		children, stat, err = r.conn.Children(p)
		return children, stat, nil, err
	}
	children, stat, ch, err := get()
	if errors.Is(err, zk.ErrNoNode) {
		if err = r.ensurePath(p); err == nil {
			children, stat, ch, err = get()
		}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	for _, c := range children {
		r.stats.BytesIn.Add(int64(len(c)))
	}
	return children, stat, ch, nil
}

// listFailed logs a failed listing of p and waits out the backoff; false
// once the registry is closing.
func (r *Registry) listFailed(p string, err error, backoff *time.Duration) bool {
	if r.ctx.Err() != nil {
		return false
	}
	r.log.Debug("list bucket", "bucket", p, "err", err)
	return r.backOff(backoff)
}

// transient says a request failed with the connection or the session, not
// with what it read: nothing is refused, it is read again.
func transient(err error) bool {
	return retryable(err) || errors.Is(err, zk.ErrSessionMoved)
}

// backOff waits out a jittered backoff, then doubles it up to 5 s; false
// once the registry is closing.
func (r *Registry) backOff(backoff *time.Duration) bool {
	select {
	case <-r.ctx.Done():
		return false
	case <-time.After(jitter(*backoff)):
	}
	*backoff = min(2**backoff, 5*time.Second)
	return true
}

// jitter is d/2 plus up to d/2 at random: N hosts that lost the same
// server do not come back in step.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// splitName parses "<id>#<seq>" record names.
func splitName(name string) (id, seq string, ok bool) {
	i := strings.LastIndexByte(name, '#')
	if i <= 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}

// syncBucket turns one listing into events: records whose node name
// changed are read and checked; ids no longer listed are removed. It
// reports false when a read failed with the connection: those records are
// left as they were, to be read at the next listing. stamp is the bucket
// node's, as the listing found it.
//
// leaves is for a sync of the persistent watch's events (follow.go): the
// decommission generation its deletes were seen in, or 0.
func (r *Registry) syncBucket(b int, children []string, stamp bucketStamp, before, leaves uint64) bool {
	latest := map[string]string{} // id -> newest record node name
	for _, c := range children {
		id, seq, ok := splitName(c)
		if !ok {
			r.skip(path.Join(r.bucketPath(b), c), "", &BadRecord{Reason: "name", Detail: "record node name is not <id>#<seq>"})
			continue
		}
		if prev, ok := latest[id]; !ok || seq > prevSeq(prev) {
			latest[id] = c
		}
	}
	r.mu.Lock()
	if stamp != r.stamps[b] {
		// Another node than the names were listed under: the bucket was
		// made again, or the snapshot is of another ensemble. Its
		// sequence numbers started again, so a name may be reused by
		// another record: every record is read again.
		for id := range r.names[b] {
			r.names[b][id] = ""
		}
		r.stamps[b] = stamp
	}
	var changed, gone []string
	covers := map[string]*leaseSeen{}
	guesses := map[string]netip.Addr{}
	// The generation the lease reads below count for: taken after the
	// listing's reply, so a decommission before it is seen (decommissions.go).
	epoch := r.epochLocked()
	// A removal is a leave, not a decommission, when both this listing and
	// the one before it, which still held the host, were answered inside
	// the current generation: the record went between them, after the
	// watch was armed, and a decommission would have fired it. A watch
	// armed again after a decommission knows nothing of what came before:
	// then the owner check tells.
	inside := before != 0 && before == epoch
	leavesKnown := inside && r.listedIn[b] == epoch
	if leaves != 0 && leaves == epoch {
		// The deletes were seen while this generation's watch was armed,
		// and it has not fired since: no decommission came between.
		leavesKnown = true
	}
	r.listedIn[b] = 0
	if inside {
		r.listedIn[b] = epoch
	}
	for id, name := range latest {
		if r.names[b][id] != name {
			changed = append(changed, id)
			if seen := r.leaseForLocked(b, id, epoch); seen != nil {
				covers[id] = seen
			} else if addr, ok := r.guessLocked(b, id); ok {
				guesses[id] = addr
			}
		}
	}
	for id := range r.names[b] {
		if _, ok := latest[id]; !ok {
			gone = append(gone, id)
		}
	}
	r.mu.Unlock()

	var events []Event
	complete := true
	now := time.Now()
	for _, id := range changed {
		name := latest[id]
		nodePath := path.Join(r.bucketPath(b), name)
		gen := r.reverifies.Load()
		var early *earlyLease
		if addr, ok := guesses[id]; ok {
			early = r.readLeaseEarly(addr)
		}
		h, seen, err := r.readRecordSeen(nodePath, id, covers[id], early, epoch)
		if errors.Is(err, zk.ErrNoNode) {
			continue // replaced meanwhile; its successor fires the watch
		}
		if transient(err) {
			r.log.Debug("read host record", "path", nodePath, "err", err)
			complete = false
			continue
		}
		r.mu.Lock()
		if r.reverifies.Load() != gen {
			// Trust was turned on during the read, and Reverify may have
			// listed the names before this one was put: read it again, as
			// trust is now, rather than leave it unverified in the view.
			r.mu.Unlock()
			if h, seen, err = r.readRecordSeen(nodePath, id, nil, nil, 0); errors.Is(err, zk.ErrNoNode) {
				continue
			} else if transient(err) {
				complete = false
				continue
			}
			r.mu.Lock()
		}
		r.names[b][id] = name
		if seen != nil {
			r.leases[b][id] = *seen // its generation is checked where it is used
		}
		if err != nil {
			r.mu.Unlock()
			// A bad record must not hijack the id: its last good one stays.
			r.skip(nodePath, id, err)
			continue
		}
		delete(r.refused, id)
		events = append(events, r.putLocked(id, &h, nodePath, now)...)
		r.mu.Unlock()
	}
	vanished := map[string]bool{}
	r.mu.Lock()
	// Refusals of nodes that name no host end when the node goes.
	listed := make(map[string]bool, len(children))
	for _, c := range children {
		listed[c] = true
	}
	for k, f := range r.refused {
		if _, named := latest[k]; !named && path.Dir(f.Node) == r.bucketPath(b) && !listed[path.Base(f.Node)] {
			delete(r.refused, k)
		}
	}
	r.listedLocked(b, listed)
	refusedHere := r.badSeen[r.bucketPath(b)]
	for k := range refusedHere {
		if !listed[k.name] {
			delete(refusedHere, k) // a node made again is news again
		}
	}
	for _, id := range gone {
		vanished[id] = true
		delete(r.names[b], id)
		delete(r.refused, id)
		events = append(events, r.putLocked(id, nil, "", now)...)
	}
	r.lastSync = time.Now()
	if len(events) > 0 {
		r.snapshotBehind()
	}
	r.mu.Unlock()
	if !r.send(events) {
		return complete
	}
	// A removal is delivered before this owner check, which only a
	// decommission needs: waiting for it made every leave cost each watcher
	// a round trip more than the listing before its host heard of it.
	var retired []Event
	for _, ev := range events {
		if ev.Kind != Removed || !vanished[ev.Host.InstanceID] {
			continue
		}
		if !r.retired(*ev.Host) {
			// With trust, only a revoked certificate retires a host, so the
			// owner check could not: it would only forget the host's
			// address guess, and a wrong guess costs one read when the id
			// comes back. A leave then costs each watcher its listing alone.
			continue
		}
		if leavesKnown {
			// The decommission counter did not move between the listing
			// that held the host and this one, and a decommission moves it
			// in the transaction that deletes the records: this removal is
			// a leave, and costs each watcher its listing alone, with trust
			// or without. (A host decommissioned after it left is not told
			// apart here, as it was not by the owner check either.)
			continue
		}
		// One read per removal: a retired host has no owner node left.
		r.stats.Requests.Add(1)
		owned, _, err := r.conn.Exists(r.ownerPath(ev.Host.InstanceID))
		if err != nil || owned {
			continue
		}
		r.mu.Lock()
		r.forgetLocked(ev.Host.InstanceID) // its address is no guess any more
		r.mu.Unlock()
		r.release(*ev.Host)
		retired = append(retired, Event{Kind: Removed, Host: ev.Host, Decommissioned: true})
	}
	r.send(retired)
	return complete
}

// send delivers events in order; false once the registry is closing.
func (r *Registry) send(events []Event) bool {
	for _, ev := range events {
		// A reader that waits takes it here, without the select below,
		// which locks and queues on the context's channel too: every
		// change of the fleet passes this way on every host.
		select {
		case r.events <- ev:
			continue
		default:
		}
		select {
		case r.events <- ev:
		case <-r.ctx.Done():
			return false
		}
	}
	return true
}

// putLocked makes h id's candidate record (nil: gone) and turns what
// changed in the accepted view into events. Clashes that begin are
// counted and logged; the other side of a clash that ends comes back.
func (r *Registry) putLocked(id string, h *Host, node string, now time.Time) []Event {
	changes, began := r.view.put(id, h, node, now)
	for _, c := range began {
		v, _ := r.stats.BadRecords.LoadOrStore(c.Reason, new(atomicInt))
		v.(*atomicInt).Add(1)
		r.log.Warn("refusing host record: key clash", "host", c.Host, "reason", c.Reason, "err", c.Detail)
	}
	var events []Event
	for _, c := range changes {
		switch {
		case c.old == nil:
			events = append(events, Event{Kind: Added, Host: c.cur})
		case c.cur == nil:
			events = append(events, Event{Kind: Removed, Host: c.old})
		case !sameRecord(*c.old, *c.cur):
			events = append(events, Event{Kind: Updated, Host: c.cur})
		}
	}
	return events
}

// boundsLocked are the checks of this host: its group limit and its own
// addresses, as registered (or as configured until then).
func (r *Registry) boundsLocked() bounds {
	b := bounds{maxGroups: r.o.MaxGroups, self: r.o.Self}
	if r.self != nil {
		b.self = *r.self
	}
	return b
}

// Refused lists the records refused now, by host: those that failed their
// checks (the host's last good record, if any, stays) and those whose keys
// clash with another's.
func (r *Registry) Refused() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Refusal, 0, len(r.refused)+len(r.view.clash))
	for _, f := range r.refused {
		out = append(out, f)
	}
	for _, f := range r.view.clash {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Refusal) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

func prevSeq(name string) string {
	_, seq, _ := splitName(name)
	return seq
}

// readRecord reads and checks one record, including that its overlay
// address is the one its lease gives it: a record must not claim another
// host's address.
func (r *Registry) readRecord(nodePath, id string) (Host, error) {
	h, _, err := r.readRecordSeen(nodePath, id, nil, nil, 0)
	return h, err
}

// readRecordSeen is readRecord with the lease read skipped where seen, a
// read for this id's previous record, covers this one (leaseseen.go); it
// returns the lease read that covers this record. epoch is the
// decommission watch's generation, taken before any read here was sent.
func (r *Registry) readRecordSeen(nodePath, id string, seen *leaseSeen, early *earlyLease, epoch uint64) (Host, *leaseSeen, error) {
	r.stats.Requests.Add(1)
	data, st, err := r.getRecord(nodePath)
	if err != nil {
		return Host{}, nil, err
	}
	r.stats.BytesIn.Add(int64(len(data)))
	h, err := r.decode(data)
	if err != nil {
		return Host{}, nil, err
	}
	r.mu.Lock()
	b := r.boundsLocked()
	r.mu.Unlock()
	if err := b.check(h); err != nil {
		return Host{}, nil, err
	}
	if h.InstanceID != id {
		return Host{}, nil, bad("instance_id", "record for %q stored under %q", h.InstanceID, id)
	}
	covered := seen.covers(h.OverlayIP, st.EphemeralOwner, epoch)
	gen := epoch // a lease read here counts for the generation before it
	if covered && !seen.current(epoch) {
		gen = 0 // covered by the session alone
	}
	if !covered {
		var owner []byte
		if early != nil && early.addr == h.OverlayIP {
			<-early.done
			owner, err = early.owner, early.err
			r.earlyLeases.Add(1)
		} else {
			r.stats.Requests.Add(1)
			owner, _, err = r.conn.Get(r.leasePath(h.OverlayIP))
		}
		if errors.Is(err, zk.ErrNoNode) {
			return Host{}, nil, bad("lease", "claims %s, which has no lease", h.OverlayIP)
		}
		if err != nil {
			return Host{}, nil, err
		}
		if string(owner) != id {
			return Host{}, nil, bad("lease", "claims %s, leased to %q", h.OverlayIP, owner)
		}
	}
	if err := r.admit(h); err != nil {
		return Host{}, nil, err
	}
	return h, &leaseSeen{node: path.Base(nodePath), addr: h.OverlayIP, owner: st.EphemeralOwner, gen: gen}, nil
}

// badNode is one refused node, by name within its parent, and the reason.
type badNode struct{ name, reason string }

// skip logs a refused record once per node and reason, counts it, and
// keeps it in the refusals by host (by node when it names none).
func (r *Registry) skip(nodePath, id string, err error) {
	reason := "read"
	var br *BadRecord
	if errors.As(err, &br) {
		reason = br.Reason
	}
	dir, key := path.Dir(nodePath), badNode{path.Base(nodePath), reason}
	r.mu.Lock()
	if r.badSeen[dir] == nil {
		r.badSeen[dir] = map[badNode]bool{}
	}
	seen := r.badSeen[dir][key]
	r.badSeen[dir][key] = true
	host := id
	if host == "" {
		host = path.Base(nodePath)
	}
	if prev, ok := r.refused[host]; !ok || prev.Node != nodePath || prev.Reason != reason {
		r.refused[host] = Refusal{Host: host, Node: nodePath, Reason: reason, Detail: err.Error(), Since: time.Now()}
	}
	r.mu.Unlock()
	if seen {
		return // counted and logged when first seen, not at every listing
	}
	v, _ := r.stats.BadRecords.LoadOrStore(reason, new(atomicInt))
	v.(*atomicInt).Add(1)
	r.noteRefusal(nodePath, reason, err)
	r.log.Warn("skipping bad host record", "path", nodePath, "host", id, "reason", reason, "err", err)
}

// stillNewest says whether name is still the newest record node known
// for id. A read of an older one that fails its checks refuses nothing:
// the host's newer record was read and judged by the watch (a refusal of
// the old one, put after the newer record, would stay until the host's
// next change).
func (r *Registry) stillNewest(id, name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[BucketOf(id)][id] == name
}

// sameRecord says whether two records say the same, field by field: it
// runs for every update every watcher takes, where marshalling both to
// compare them cost two encodings of each record.
func sameRecord(a, b Host) bool {
	schema := func(h Host) int { return cmp.Or(h.Schema, Schema) } // written as Schema when unset
	return schema(a) == schema(b) && a.InstanceID == b.InstanceID && a.OverlayIP == b.OverlayIP &&
		a.PublicKey == b.PublicKey && sameNextKey(a.NextPublicKey, b.NextPublicKey) &&
		a.Network == b.Network && a.PrivateIP == b.PrivateIP && a.PublicIP == b.PublicIP &&
		a.ListenPort == b.ListenPort && slices.Equal(a.Groups, b.Groups) && a.Version == b.Version &&
		a.StartTime.Equal(b.StartTime) && a.PrivateIP6 == b.PrivateIP6 && a.PublicIP6 == b.PublicIP6 &&
		a.Seq == b.Seq && a.CertSerial == b.CertSerial && sameSigned(a.signed, b.signed)
}

func sameNextKey(a, b *wgtypes.Key) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

func sameSigned(a, b *signedJSON) bool {
	return a == b || (a != nil && b != nil && a.Record == b.Record && a.Sig == b.Sig && slices.Equal(a.Chain, b.Chain))
}
