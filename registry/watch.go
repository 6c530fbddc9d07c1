package registry

import (
	"errors"
	"path"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// watchBucket keeps one bucket's records in the view: list with a child
// watch, diff against what was seen, wait for the watch, again. The same
// diff is the resync after a reconnect or expiry.
func (r *Registry) watchBucket(b int) {
	defer r.wg.Done()
	p := r.bucketPath(b)
	backoff := 100 * time.Millisecond
	for r.ctx.Err() == nil {
		r.stats.Requests.Add(1)
		children, _, ch, err := r.conn.ChildrenW(p)
		if errors.Is(err, zk.ErrNoNode) {
			if err = r.ensurePath(p); err == nil {
				continue
			}
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.log.Debug("list bucket", "bucket", p, "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for _, c := range children {
			r.stats.BytesIn.Add(int64(len(c)))
		}
		r.syncBucket(b, children)
		select {
		case <-r.ctx.Done():
			return
		case <-ch:
		}
	}
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
// changed are read and decoded; ids no longer listed are removed.
func (r *Registry) syncBucket(b int, children []string) {
	latest := map[string]string{} // id -> newest record node name
	for _, c := range children {
		id, seq, ok := splitName(c)
		if !ok {
			r.skip(path.Join(r.bucketPath(b), c), &BadRecord{Reason: "name", Detail: "record node name is not <id>#<seq>"})
			continue
		}
		if prev, ok := latest[id]; !ok || seq > prevSeq(prev) {
			latest[id] = c
		}
	}
	r.mu.Lock()
	var changed []string
	var gone []Host
	for id, name := range latest {
		if r.names[id] != name {
			changed = append(changed, id)
		}
	}
	for id, h := range r.hosts {
		if BucketOf(id) != b {
			continue
		}
		if _, ok := latest[id]; !ok {
			gone = append(gone, h)
			delete(r.hosts, id)
			delete(r.names, id)
		}
	}
	r.mu.Unlock()

	var events []Event
	for _, id := range changed {
		name := latest[id]
		nodePath := path.Join(r.bucketPath(b), name)
		h, err := r.readRecord(nodePath, id)
		if err != nil {
			if errors.Is(err, zk.ErrNoNode) {
				continue // replaced meanwhile; its successor fires the watch
			}
			r.skip(nodePath, err)
			// A bad record must not hijack the id: keep the last good one.
			r.mu.Lock()
			r.names[id] = name
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		old, had := r.hosts[id]
		r.hosts[id], r.names[id] = h, name
		r.mu.Unlock()
		switch {
		case !had:
			events = append(events, Event{Kind: Added, Host: h})
		case !sameRecord(old, h):
			events = append(events, Event{Kind: Updated, Host: h})
		}
	}
	for _, h := range gone {
		// One read per removal: a retired host has no owner node left.
		r.stats.Requests.Add(1)
		owned, _, err := r.conn.Exists(r.ownerPath(h.InstanceID))
		decommissioned := err == nil && !owned && r.retired(h)
		if decommissioned {
			r.release(h)
		}
		events = append(events, Event{Kind: Removed, Host: h, Decommissioned: decommissioned})
	}
	r.mu.Lock()
	r.lastSync = time.Now()
	if len(events) > 0 {
		r.dirty = true
	}
	r.mu.Unlock()
	for _, ev := range events {
		select {
		case r.events <- ev:
		case <-r.ctx.Done():
			return
		}
	}
}

func prevSeq(name string) string {
	_, seq, _ := splitName(name)
	return seq
}

// readRecord reads and checks one record, including that its overlay
// address is the one its lease gives it: a record must not claim another
// host's address.
func (r *Registry) readRecord(nodePath, id string) (Host, error) {
	r.stats.Requests.Add(1)
	data, _, err := r.conn.Get(nodePath)
	if err != nil {
		return Host{}, err
	}
	r.stats.BytesIn.Add(int64(len(data)))
	h, err := r.decode(data)
	if err != nil {
		return Host{}, err
	}
	if h.InstanceID != id {
		return Host{}, bad("instance_id", "record for %q stored under %q", h.InstanceID, id)
	}
	r.stats.Requests.Add(1)
	owner, _, err := r.conn.Get(r.leasePath(h.OverlayIP))
	if errors.Is(err, zk.ErrNoNode) {
		return Host{}, bad("lease", "claims %s, which has no lease", h.OverlayIP)
	}
	if err != nil {
		return Host{}, err
	}
	if string(owner) != id {
		return Host{}, bad("lease", "claims %s, leased to %q", h.OverlayIP, owner)
	}
	return h, r.admit(h)
}

// skip logs a bad record once per node and reason, and counts it.
func (r *Registry) skip(nodePath string, err error) {
	reason := "read"
	var br *BadRecord
	if errors.As(err, &br) {
		reason = br.Reason
	}
	key := nodePath + "|" + reason
	r.mu.Lock()
	seen := r.badSeen[key]
	r.badSeen[key] = true
	r.mu.Unlock()
	if seen {
		return // counted and logged when first seen, not at every listing
	}
	v, _ := r.stats.BadRecords.LoadOrStore(reason, new(atomicInt))
	v.(*atomicInt).Add(1)
	r.noteRefusal(nodePath, reason, err)
	r.log.Warn("skipping bad host record", "path", nodePath, "reason", reason, "err", err)
}

func sameRecord(a, b Host) bool {
	ja, _ := a.MarshalJSON()
	jb, _ := b.MarshalJSON()
	return string(ja) == string(jb)
}
