package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// TestStartReadsOnlyChangedRecords: a host that starts from its snapshot
// reads again only the records that changed while it was down, so a
// restart of a whole fleet costs ZooKeeper each host's listings, not every
// record of the fleet on every host. A bucket made again restarts its
// sequence numbers, so a name from the snapshot may then be another
// record's: its records are read again.
func TestStartReadsOnlyChangedRecords(t *testing.T) {
	const same = 12
	zs := startZK(t)
	mesh, dir := meshName(t), t.TempDir()
	servers := []string{zs.Addr()}
	regs := map[string]*Registry{}
	register := func(id string, n int) Host {
		t.Helper()
		r := open(t, servers, mesh, "")
		h := hostFor(id, "vpc", n)
		if _, err := r.Register(context.Background(), h, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		regs[id] = r
		return h
	}
	for i := range same {
		register(fmt.Sprintf("same%02d", i), 10+i)
	}
	changes := register("changes", 30)
	register("leaves", 31)
	register("remade", 32)
	w := open(t, servers, mesh, dir)
	waitFor(t, 10*time.Second, "the view holds all", func() bool { return len(w.Hosts()) == same+3 })
	w.Close() // writes the snapshot
	var snap snapshot
	data, err := os.ReadFile(filepath.Join(dir, SnapshotFile))
	if err == nil {
		err = json.Unmarshal(data, &snap)
	}
	if err != nil {
		t.Fatal(err)
	}
	named := 0
	for b, bs := range snap.Buckets {
		for id := range bs.Nodes {
			if snap.nodeOf(b, id) != "" && BucketOf(id) == b {
				named++
			}
		}
	}
	if named != same+3 {
		t.Fatalf("snapshot names the record node of %d hosts, want %d:\n%s", named, same+3, data)
	}

	// While it is down: an endpoint changes, a host leaves, one joins,
	// and "remade"'s bucket is deleted and made again with a record of a
	// new key under the name its old record had.
	changes.PublicIP = netip.MustParseAddr("198.19.0.7")
	regs["changes"].UpdateSelf(changes)
	regs["leaves"].Close()
	regs["remade"].Close()
	c, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bucket := path.Join("/meshd", mesh, "hosts", fmt.Sprintf("%02x", BucketOf("remade")))
	oldName := snap.nodeOf(BucketOf("remade"), "remade")
	waitFor(t, 10*time.Second, "remade's record gone", func() bool {
		names, _, err := c.Children(bucket)
		return err == nil && len(names) == 0
	})
	if err := c.Delete(bucket, -1); err != nil {
		t.Fatalf("delete %s (other hosts in it?): %v", bucket, err)
	}
	remade := register("remade", 32)
	var names []string
	waitFor(t, 10*time.Second, "remade's new record", func() bool {
		names, _, err = c.Children(bucket)
		return err == nil && len(names) > 0
	})
	if len(names) != 1 || names[0] != oldName {
		t.Fatalf("remade bucket holds %v, want the old record's name %s", names, oldName)
	}
	register("joins", 33)
	watcher := open(t, servers, mesh, "")
	inStep := func(r *Registry) func() bool {
		return func() bool {
			byID := map[string]*Host{}
			for _, h := range r.Hosts() {
				byID[h.InstanceID] = h
			}
			return len(byID) == same+3 && byID["leaves"] == nil && byID["joins"] != nil &&
				byID["changes"] != nil && byID["changes"].PublicIP == changes.PublicIP &&
				byID["remade"] != nil && byID["remade"].PublicKey == remade.PublicKey
		}
	}
	waitFor(t, 10*time.Second, "a watcher sees the changes", inStep(watcher))

	// quietRequests waits for r's first sync and returns its requests
	// once they stop.
	quietRequests := func(r *Registry) int64 {
		t.Helper()
		firstSynced(t, r)
		n := r.Stats().Requests.Load()
		for {
			time.Sleep(300 * time.Millisecond)
			if m := r.Stats().Requests.Load(); m == n {
				return n
			} else {
				n = m
			}
		}
	}
	w2 := open(t, servers, mesh, dir)
	waitFor(t, 10*time.Second, "the restarted host sees the changes", inStep(w2))
	withNames := quietRequests(w2)

	// The same start from a snapshot without the node names (as an older
	// meshd wrote it) reads every record.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw, "buckets")
	old, _ := json.Marshal(raw)
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, SnapshotFile), old, 0o600); err != nil {
		t.Fatal(err)
	}
	w3 := open(t, servers, mesh, dir2)
	waitFor(t, 10*time.Second, "the start without names sees the changes", inStep(w3))
	without := quietRequests(w3)
	t.Logf("first sync: %d requests from a snapshot with node names, %d without", withNames, without)
	if without-withNames < same {
		t.Errorf("the start from node names saved %d requests, want at least the %d unchanged records' reads", without-withNames, same)
	}
}
