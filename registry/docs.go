package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Fleet-wide documents kept beside the hosts: the group policy and the
// direct-connect links. meshd reads them with a data watch each (two
// watches per host) and hands their bytes to whoever parses them.

// Documents.
const (
	DocPolicy  = "policy"
	DocLinks   = "links"
	DocRevoked = "revoked" // operator-signed certificate revocations (trust)
)

type docWatchers struct {
	mu   sync.Mutex
	subs map[string][]func([]byte)
	last map[string][]byte
	// kept is the last content each document had while it existed: the
	// snapshot keeps it across a deleted node (meshd keeps the policy).
	kept map[string]string
}

// OnDocument calls fn with the document's content now (if known) and after
// every change; nil content means the document does not exist.
func (r *Registry) OnDocument(name string, fn func([]byte)) {
	r.docs.mu.Lock()
	if r.docs.subs == nil {
		r.docs.subs = map[string][]func([]byte){}
	}
	r.docs.subs[name] = append(r.docs.subs[name], fn)
	last, known := r.docs.last[name]
	r.docs.mu.Unlock()
	if known {
		fn(last)
	}
}

// known returns the last content of each document, for the snapshot.
func (w *docWatchers) known() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for name, data := range w.kept {
		out[name] = data
	}
	return out
}

// seed fills the cache from the snapshot before ZooKeeper answers: a
// subscriber hears the last known document at once.
func (w *docWatchers) seed(docs map[string]string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[string][]byte{}
	}
	if w.kept == nil {
		w.kept = map[string]string{}
	}
	for name, data := range docs {
		w.last[name] = []byte(data)
		w.kept[name] = data
	}
}

func (r *Registry) startDocWatchers() {
	for _, d := range []string{DocPolicy, DocLinks, DocRevoked} {
		r.wg.Add(1)
		go r.watchDoc(d)
	}
}

func (r *Registry) watchDoc(name string) {
	defer r.wg.Done()
	p := path.Join(r.root, name)
	for r.ctx.Err() == nil {
		r.stats.Requests.Add(1)
		data, _, ch, err := r.conn.GetW(p)
		if errors.Is(err, zk.ErrNoNode) {
			var ok bool
			ok, _, ch, err = r.conn.ExistsW(p)
			if ok {
				continue
			}
			data = nil
		}
		if err != nil {
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		r.docs.mu.Lock()
		if r.docs.last == nil {
			r.docs.last = map[string][]byte{}
		}
		prev, known := r.docs.last[name]
		r.docs.last[name] = data
		if len(data) > 0 {
			if r.docs.kept == nil {
				r.docs.kept = map[string]string{}
			}
			r.docs.kept[name] = string(data)
		}
		subs := append([]func([]byte){}, r.docs.subs[name]...)
		r.docs.mu.Unlock()
		if !known || string(prev) != string(data) {
			r.snapshotBehind() // the snapshot keeps the documents too
			for _, fn := range subs {
				fn(data)
			}
		}
		select {
		case <-r.ctx.Done():
			return
		case <-ch:
		}
	}
}

// Document reads a document now.
func (r *Registry) Document(name string) ([]byte, error) {
	data, _, err := r.conn.Get(path.Join(r.root, name))
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	return data, err
}

// SetDocument writes a document; the caller validates it first.
func (r *Registry) SetDocument(name string, data []byte) error {
	p := path.Join(r.root, name)
	if !json.Valid(data) {
		return fmt.Errorf("set %s: not JSON", name)
	}
	if err := r.ensurePath(r.root); err != nil {
		return err
	}
	_, err := r.conn.Set(p, data, -1)
	if errors.Is(err, zk.ErrNoNode) {
		_, err = r.conn.Create(p, data, 0, r.acl)
	}
	if err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	return nil
}
