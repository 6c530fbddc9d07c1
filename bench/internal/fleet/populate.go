package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/registry"
)

// Populate registers hosts 0..n-1 under root (/meshd/<mesh>) as their
// meshd would have left them: lease, owner and record, the record an
// ephemeral node of session w. Written directly, 32 at a time, rather
// than through n registries: a fleet to measure against, quickly. It
// returns the hosts and their record nodes.
func Populate(w *zk.Conn, root string, n int) ([]registry.Host, []string, error) {
	if err := Parents(w, root); err != nil {
		return nil, nil, err
	}
	hosts := make([]registry.Host, n)
	nodes := make([]string, n)
	errs := make([]error, n)
	Each(n, 32, func(i int) {
		hosts[i] = Host(i)
		nodes[i], errs[i] = Register(w, root, hosts[i])
	})
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return hosts, nodes, nil
}

// Parents creates the nodes a fleet's hosts are registered under, root
// (/meshd/<mesh>) and its 256 buckets included, those missing.
func Parents(w *zk.Conn, root string) error {
	acl := zk.WorldACL(zk.PermAll)
	parents := []string{"/meshd", root, root + "/leases", root + "/owners", root + "/hosts"}
	for b := range registry.Buckets {
		parents = append(parents, Bucket(root, b))
	}
	for _, p := range parents {
		if _, err := w.Create(p, nil, 0, acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	return nil
}

// Claim writes h's lease of its overlay address and its owner node, as
// its meshd's first registration leaves them: without them a registry
// refuses h's record.
func Claim(w *zk.Conn, root string, h registry.Host) error {
	id, ip := h.InstanceID, h.OverlayIP.String()
	acl := zk.WorldACL(zk.PermAll)
	_, err1 := w.Create(root+"/leases/"+ip, []byte(id), 0, acl)
	_, err2 := w.Create(root+"/owners/"+id, []byte(ip), 0, acl)
	return errors.Join(err1, err2)
}

// Register writes h's lease and owner (Claim), then its record
// (PublishRecord) as an ephemeral node of session w, and returns the
// record's path.
func Register(w *zk.Conn, root string, h registry.Host) (string, error) {
	if err := Claim(w, root, h); err != nil {
		return "", fmt.Errorf("register %s: %w", h.InstanceID, err)
	}
	node, err := PublishRecord(w, root, h)
	if err != nil {
		return "", fmt.Errorf("register %s: record: %w", h.InstanceID, err)
	}
	return node, nil
}

// PublishRecord writes h's record as its meshd would: a new ephemeral,
// sequential node of session w in its bucket. It returns the node's path.
// An update is a new record and a delete of the old one.
func PublishRecord(w *zk.Conn, root string, h registry.Host) (string, error) {
	data, err := json.Marshal(h)
	if err != nil {
		return "", err
	}
	return w.Create(path.Join(BucketPath(root, h.InstanceID), h.InstanceID+"#"), data, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
}

// BucketPath is the bucket node under root that holds id's records.
func BucketPath(root, id string) string {
	return Bucket(root, registry.BucketOf(id))
}

// Bucket is bucket node b under root.
func Bucket(root string, b int) string {
	return fmt.Sprintf("%s/hosts/%02x", root, b)
}
