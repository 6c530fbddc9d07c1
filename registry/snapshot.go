package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/atomicfile"
)

// SnapshotFile is the snapshot's name in the state directory.
const SnapshotFile = "registry.json"

// snapshot is the last known good view, and this host's own lease.
type snapshot struct {
	SavedAt time.Time      `json:"saved_at"`
	Lease   netip.Addr     `json:"lease"`
	Hosts   []Host         `json:"hosts"`
	Trust   *trustSnapshot `json:"trust,omitempty"`
	// Docs are the fleet documents (policy, links) as last read, so a
	// start while ZooKeeper is down applies the last policy: fail static.
	Docs map[string]string `json:"docs,omitempty"`
	// Buckets say which record node each host came from, by bucket: a
	// start reads again only the records that changed meanwhile.
	Buckets map[int]bucketSnapshot `json:"buckets,omitempty"`
}

// bucketStamp tells one bucket node from another made at its path
// (after a delete, or on another ensemble): its creation's zxid and time.
// Record node names are sequential per bucket node, so they say which
// record they are only together with it.
type bucketStamp struct {
	Czxid int64 `json:"czxid"`
	Ctime int64 `json:"ctime"`
}

func stampOf(st *zk.Stat) bucketStamp {
	if st == nil {
		return bucketStamp{}
	}
	return bucketStamp{Czxid: st.Czxid, Ctime: st.Ctime}
}

// bucketSnapshot is one bucket's stamp and, by instance id, the record
// node its host in the snapshot was read from.
type bucketSnapshot struct {
	bucketStamp
	Nodes map[string]string `json:"nodes"`
}

// nodeOf is the record node name the snapshot's host id was read from,
// or "" when it is not known (or is not a node of id's).
func (s snapshot) nodeOf(b int, id string) string {
	name := s.Buckets[b].Nodes[id]
	if got, _, ok := splitName(name); !ok || got != id || s.Buckets[b].bucketStamp == (bucketStamp{}) {
		return ""
	}
	return name
}

func (r *Registry) snapshotPath() string {
	if r.o.StateDir == "" {
		return ""
	}
	return filepath.Join(r.o.StateDir, SnapshotFile)
}

func (r *Registry) loadSnapshot() (snapshot, error) {
	var s snapshot
	p := r.snapshotPath()
	if p == "" {
		return s, nil
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	var raw struct {
		SavedAt time.Time              `json:"saved_at"`
		Lease   netip.Addr             `json:"lease"`
		Hosts   []json.RawMessage      `json:"hosts"`
		Trust   *trustSnapshot         `json:"trust"`
		Docs    map[string]string      `json:"docs"`
		Buckets map[int]bucketSnapshot `json:"buckets"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return s, fmt.Errorf("snapshot %s: %w", p, err)
	}
	s.SavedAt, s.Lease, s.Docs = raw.SavedAt, raw.Lease, raw.Docs
	for b, bs := range raw.Buckets {
		if b >= 0 && b < Buckets {
			if s.Buckets == nil {
				s.Buckets = map[int]bucketSnapshot{}
			}
			s.Buckets[b] = bs
		}
	}
	r.restoreTrust(raw.Trust)
	for _, h := range raw.Hosts {
		// The snapshot is checked like ZooKeeper's records: it may be old,
		// and with trust its signatures are checked again.
		if host, err := r.decode(h); err == nil && r.admit(host) == nil {
			s.Hosts = append(s.Hosts, host)
		}
	}
	r.log.Info("snapshot loaded", "path", p, "hosts", len(s.Hosts), "saved_at", s.SavedAt, "lease", s.Lease)
	return s, nil
}

// saveLoop writes the snapshot at most once a second while the view
// changes, and sleeps while it does not: a host at rest, and a simulator
// of a thousand, wakes for nothing.
func (r *Registry) saveLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.changed:
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(time.Second): // the changes of that second, in one write
		}
		if err := r.saveSnapshot(); err != nil {
			r.log.Error("save snapshot", "err", err)
		}
	}
}

// snapshotBehind says the view (or this host's lease, record or the
// documents) changed since the snapshot: saveLoop writes it within a second.
func (r *Registry) snapshotBehind() {
	if r.o.StateDir == "" {
		return // no snapshot to keep: saveLoop need not wake
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// saveSnapshot writes atomically: temp file, fsync, rename.
func (r *Registry) saveSnapshot() error {
	p := r.snapshotPath()
	if p == "" {
		return nil
	}
	r.mu.Lock()
	s := snapshot{SavedAt: time.Now().UTC(), Lease: r.selfLease, Trust: r.trustForSnapshot()}
	for id, h := range r.view.hosts {
		s.Hosts = append(s.Hosts, *h)
		b := BucketOf(id)
		name := r.names[b][id]
		if name == "" || r.stamps[b] == (bucketStamp{}) || r.view.nodes[id] != path.Join(r.bucketPath(b), name) {
			continue // not from the newest node listed: read again at start
		}
		if s.Buckets == nil {
			s.Buckets = map[int]bucketSnapshot{}
		}
		bs, ok := s.Buckets[b]
		if !ok {
			bs = bucketSnapshot{bucketStamp: r.stamps[b], Nodes: map[string]string{}}
			s.Buckets[b] = bs
		}
		bs.Nodes[id] = name
	}
	r.mu.Unlock()
	s.Docs = r.docs.known()
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(p, data, 0o600)
}
