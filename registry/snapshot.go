package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

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
		SavedAt time.Time         `json:"saved_at"`
		Lease   netip.Addr        `json:"lease"`
		Hosts   []json.RawMessage `json:"hosts"`
		Trust   *trustSnapshot    `json:"trust"`
		Docs    map[string]string `json:"docs"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return s, fmt.Errorf("snapshot %s: %w", p, err)
	}
	s.SavedAt, s.Lease, s.Docs = raw.SavedAt, raw.Lease, raw.Docs
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
	for _, h := range r.view.hosts {
		s.Hosts = append(s.Hosts, *h)
	}
	r.mu.Unlock()
	s.Docs = r.docs.known()
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(p, data, 0o600)
}
