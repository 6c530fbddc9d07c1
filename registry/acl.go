package registry

import (
	"fmt"
	"sync"

	"github.com/go-zookeeper/zk"
)

// Per-host ZooKeeper ACLs: defence in depth under the signatures.
//
// With trust on, a host also authenticates to ZooKeeper as itself (digest
// user meshd-host-<instance id>, its password derived from the identity
// key: HostDigest), and the nodes that are its own - its lease, its owner
// node, its records - carry
//
//	digest meshd-host-<id>  ALL
//	fleet digest (or world) READ
//
// so another host, though it holds the fleet's digest secret, cannot
// rewrite them (setData) or change their ACL (setACL). No flow needs to:
// records are immutable (a change is a new node), a lease and an owner
// node are written once, and a decommission replaces the lease by a
// quarantine marker with delete+create instead of setData.
//
// What ZooKeeper's ACLs cannot confine here: CREATE and DELETE are checked
// on the parent, and hosts share the parents (hosts/<bucket>, leases,
// owners), so any holder of the fleet credential can still delete another
// host's nodes or create nodes under another host's name. A deletion is
// at most a vanish (hold-down; with trust, only a revocation retires a
// host), and a forged node is refused by its signature: the signatures,
// not these ACLs, are what stops a forgery. Ephemeral records are removed
// by the server when their session ends, whatever their ACL. Parents and
// fleet documents keep the fleet-wide ACL (operators write documents
// through any host). To change a per-host node's ACL by hand, an operator
// needs ZooKeeper's super user. Nodes made before trust was turned on keep
// the fleet-wide ACL until they are made again: a record at its next
// change, a lease only after a decommission.

// HostDigest is an optional capability of a Trust: the password, derived
// from this host's identity key, for ZooKeeper's digest scheme as user.
type HostDigest interface {
	ZKPassword(user string) (string, error)
}

// hostUser is a host's ZooKeeper digest user.
func hostUser(id string) string { return "meshd-host-" + id }

// hostAuth remembers which digest identities this session added.
type hostAuth struct {
	mu     sync.Mutex
	added  map[string]bool // "user:password"
	warned bool
	// reader is who may read every host's nodes: the fleet digest, or
	// anyone without one (as for the rest of meshd's nodes then).
	reader []zk.ACL
}

// ownACL is the ACL for a node that is id's own: per host with trust on
// and a key that can derive a password, else the fleet-wide ACL. It
// authenticates this session as id first (once; the client repeats it
// after every reconnect), so the node is not created out of its own reach.
func (r *Registry) ownACL(id string) ([]zk.ACL, error) {
	if !r.trustOn() {
		return r.acl, nil
	}
	hd, ok := r.o.Trust.(HostDigest)
	if !ok {
		return r.acl, nil
	}
	user := hostUser(id)
	pass, err := hd.ZKPassword(user)
	if err != nil {
		r.auth.mu.Lock()
		warn := !r.auth.warned
		r.auth.warned = true
		r.auth.mu.Unlock()
		if warn {
			r.log.Warn("no per-host ZooKeeper ACL: its own nodes get the fleet-wide ACL", "host", id, "err", err)
		}
		return r.acl, nil
	}
	cred := user + ":" + pass
	r.auth.mu.Lock()
	defer r.auth.mu.Unlock()
	if !r.auth.added[cred] {
		r.stats.Requests.Add(1)
		if err := r.conn.AddAuth("digest", []byte(cred)); err != nil {
			return nil, fmt.Errorf("authenticate to ZooKeeper as %s: %w", user, err)
		}
		if r.auth.added == nil {
			r.auth.added = map[string]bool{}
		}
		r.auth.added[cred] = true
	}
	return append(zk.DigestACL(zk.PermAll, user, pass), r.auth.reader...), nil
}
