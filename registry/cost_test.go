package registry

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/zkserver"
)

// zxid is the server's last transaction id: every write, and every create
// that fails because the node exists, moves it by one.
func zxid(t *testing.T, zs *zkserver.Server) int64 {
	t.Helper()
	out, err := zs.FourLetter("srvr")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Zxid: 0x"); ok {
			z, err := strconv.ParseInt(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("srvr: %q: %v", l, err)
			}
			return z
		}
	}
	t.Fatalf("srvr says no zxid:\n%s", out)
	return 0
}

func waitConnected(t *testing.T, r *Registry) {
	t.Helper()
	waitFor(t, 10*time.Second, "connected", func() bool { st, _ := r.State(); return st == Connected })
}

// TestWritesPerChange: a host that registers again with its lease writes
// one transaction to ZooKeeper's log, which every watcher waits for, and a
// change of its record two. They used to write eleven and six: creates of
// parent nodes that existed, each failing but logged like any write.
func TestWritesPerChange(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	h := hostFor("writer", "vpc", 1)
	first := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := first.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	first.Close()
	expect(t, watcher, 5*time.Second, "removed writer")

	// A restart: a new session, the lease known.
	w := open(t, []string{zs.Addr()}, mesh, "")
	waitConnected(t, w)
	before := zxid(t, zs)
	if _, err := w.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	if n := zxid(t, zs) - before; n != 1 {
		t.Errorf("registering again wrote %d transactions, want 1 (the record)", n)
	}

	// An endpoint change: a new record, then the old one deleted.
	c := rawConn(t, zs.Addr()) // its session is a transaction too
	waitFor(t, 5*time.Second, "a session", func() bool { return c.SessionID() != 0 })
	before = zxid(t, zs)
	h.PublicIP = netip.MustParseAddr("198.19.0.7")
	w.UpdateSelf(h)
	expect(t, watcher, 5*time.Second, "updated writer")
	waitFor(t, 5*time.Second, "the old record deleted", func() bool {
		names, _, err := c.Children(w.bucketPath(BucketOf(h.InstanceID)))
		return err == nil && len(names) == 1
	})
	if n := zxid(t, zs) - before; n != 2 {
		t.Errorf("an endpoint change wrote %d transactions, want 2", n)
	}
}

// TestDeletedParentsAreMadeAgain: parents this session knows to exist may
// be deleted by hand; the next lease and record make them again.
func TestDeletedParentsAreMadeAgain(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	r := open(t, []string{zs.Addr()}, mesh, "")
	a := hostFor("first", "vpc", 1)
	if _, err := r.Register(context.Background(), a, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added first")
	bucket := r.bucketPath(BucketOf(a.InstanceID))
	c := rawConn(t, zs.Addr())
	for _, p := range []string{"/meshd/" + mesh + "/leases", "/meshd/" + mesh + "/owners", bucket} {
		kids, _, err := c.Children(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kids {
			if err := c.Delete(p+"/"+k, -1); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Delete(p, -1); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, watcher, 5*time.Second, "removed first")
	// A new lease in the same session, and the record again.
	if _, err := r.Register(context.Background(), hostFor("second", "vpc", 2), 10*time.Second); err != nil {
		t.Fatalf("register after the parents were deleted: %v", err)
	}
	expect(t, watcher, 5*time.Second, "added second")
}
