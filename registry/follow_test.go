package registry

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// TestReconnectListsOnlyChangedBuckets: the persistent watch is the
// connection's, so what changed while a host was cut off comes from the
// buckets' stats after it reconnects: the buckets whose creates and
// deletes it missed are listed again, the others are not, and its view is
// the fleet's again with the same session.
func TestReconnectListsOnlyChangedBuckets(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	fz := newFreezer(t, zs.Addr())
	w, err := Open(context.Background(), Options{Servers: []string{fz.addr()}, Mesh: mesh, SessionTimeout: 10 * time.Second,
		Pool: testPool, Quarantine: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var rs []*Registry
	var hs []Host
	for i, id := range []string{"moves", "leaves", "stays"} {
		r, h := registerAnother(t, zs, mesh, w, id, i+1)
		rs, hs = append(rs, r), append(hs, h)
		// Every bucket made before the next host's record is read: a
		// bucket made after the last zxid w knows it has every event of
		// looks changed to setWatches2 (its pzxid is its creation's).
		firstSynced(t, append([]*Registry{w}, rs...)...)
	}
	if !w.following.Load() {
		t.Fatal("the registry does not follow the hosts tree against ZooKeeper 3.8")
	}
	sid := w.conn.SessionID()

	fz.set(true) // events held, as in a partition
	moved := hs[0]
	moved.PublicIP = netip.MustParseAddr("198.19.0.9")
	rs[0].UpdateSelf(moved)
	c := rawConn(t, zs.Addr())
	waitFor(t, 5*time.Second, "the moved record written", func() bool {
		names, _, err := c.Children(w.bucketPath(BucketOf("moves")))
		if err != nil || len(names) != 1 {
			return false
		}
		data, _, err := c.Get(w.bucketPath(BucketOf("moves")) + "/" + names[0])
		return err == nil && contains(string(data), "198.19.0.9")
	})
	rs[1].Close()
	registerQuietly(t, zs.Addr(), mesh, "joins", 4)
	changed := map[int]bool{BucketOf("moves"): true, BucketOf("leaves"): true, BucketOf("joins"): true}
	listedBefore := w.listings.Load()
	fz.dropAll() // the client's connection ends; it comes back, same session
	fz.set(false)

	expect(t, w, 15*time.Second, "updated moves", "removed leaves", "added joins")
	expectQuiet(t, w, 300*time.Millisecond)
	if w.conn.SessionID() != sid {
		t.Fatal("the session was not kept: a reconnect was not exercised")
	}
	if n := w.listings.Load() - listedBefore; n < 1 || n > int64(len(changed)) {
		t.Errorf("the reconnect listed %d buckets, want 1-%d (those that changed, not all %d)", n, len(changed), Buckets)
	}
	got := map[string]bool{}
	for _, h := range w.Hosts() {
		got[h.InstanceID] = true
		if h.InstanceID == "moves" && h.PublicIP != moved.PublicIP {
			t.Errorf("moves at %s, want %s", h.PublicIP, moved.PublicIP)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string]bool{"joins": true, "moves": true, "stays": true}) {
		t.Errorf("view after the reconnect: %v", got)
	}
}

// registerQuietly registers id with a registry of its own, watched by no
// test registry.
func registerQuietly(t *testing.T, addr, mesh, id string, n int) (*Registry, Host) {
	t.Helper()
	r := open(t, []string{addr}, mesh, "")
	h := hostFor(id, "vpc", n)
	if _, err := r.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return r, h
}

// TestHostEventsQueue: the watch's callback queues a bucket's record
// creates and deletes in order, ignores what is not meshd's layout and
// buckets being made, has a deleted bucket listed again, and holds no more
// than maxPendingOps for a bucket: past that, the bucket is listed again.
func TestHostEventsQueue(t *testing.T) {
	var q hostEvents
	var bytes atomic.Int64
	var armed atomic.Uint64
	q.init("/meshd/m/hosts", &bytes, &armed)
	ev := func(typ zk.EventType, p string) { q.add(zk.Event{Type: typ, Path: p}) }
	ev(zk.EventNodeCreated, "/meshd/m/hosts/0a/a#0000000001")
	if ops, _, _ := q.take(0x0a); len(ops) != 0 {
		t.Fatalf("queued %v before the watch was asked for", ops)
	}
	q.mu.Lock()
	q.on = true
	q.mu.Unlock()
	armed.Store(7)
	for _, p := range []string{
		"/meshd/m/hosts/zz/a#1",        // not a bucket
		"/meshd/m/hosts/0A/a#1",        // not as meshd names buckets
		"/meshd/m/hosts/0a/a#1/deeper", // under a record
		"/meshd/other/hosts/0a/a#1",    // another mesh
		"/meshd/m/hosts/0a",            // a bucket made
		"/meshd/m/hostsx/0a/a#1",       // not the hosts node
		"/meshd/m/hosts/100/a#1",       // three digits
	} {
		ev(zk.EventNodeCreated, p)
	}
	ev(zk.EventNodeDataChanged, "/meshd/m/hosts/0a/a#0000000001")
	for b := range Buckets {
		if ops, relist, _ := q.take(b); len(ops) != 0 || relist {
			t.Fatalf("bucket %02x: %v, relist %v from events outside the layout", b, ops, relist)
		}
	}
	ev(zk.EventNodeCreated, "/meshd/m/hosts/0a/a#0000000002")
	ev(zk.EventNodeDeleted, "/meshd/m/hosts/0a/a#0000000001")
	ops, relist, _ := q.take(0x0a)
	want := []childOp{{name: "a#0000000002", created: true}, {name: "a#0000000001", epoch: 7}}
	if fmt.Sprint(ops) != fmt.Sprint(want) || relist {
		t.Fatalf("queued %v (relist %v), want %v", ops, relist, want)
	}
	ev(zk.EventNodeDeleted, "/meshd/m/hosts/0a")
	if _, relist, _ := q.take(0x0a); !relist {
		t.Error("a deleted bucket is not listed again")
	}
	for i := range 3 * maxPendingOps {
		ev(zk.EventNodeCreated, fmt.Sprintf("/meshd/m/hosts/ff/junk%05d", i))
		if n := len(q.b[0xff].ops); n > maxPendingOps {
			t.Fatalf("bucket ff holds %d events, more than %d", n, maxPendingOps)
		}
	}
	if _, relist, _ := q.take(0xff); !relist {
		t.Error("a bucket whose events were dropped is not listed again")
	}
	// A bucket's child watch firing: a bucket to list while a
	// setWatches2 is in flight, one it left set (ignored) otherwise.
	ev(zk.EventNodeChildrenChanged, "/meshd/m/hosts/3c")
	if _, relist, _ := q.take(0x3c); relist {
		t.Error("a child watch left set by setWatches2 lists its bucket")
	}
	q.mu.Lock()
	q.catchUp = true
	q.mu.Unlock()
	ev(zk.EventNodeChildrenChanged, "/meshd/m/hosts/3c")
	ev(zk.EventNodeChildrenChanged, "/meshd/m/hostsx/3d")
	if _, relist, spread := q.take(0x3c); !relist || !spread {
		t.Error("a bucket setWatches2 says changed is not listed again after a random wait")
	}
	if _, relist, _ := q.take(0x3d); relist {
		t.Error("a child watch outside the hosts node lists a bucket")
	}
	before := q.conn.Load()
	q.add(zk.Event{Type: zk.EventSession, State: zk.StateDisconnected})
	q.add(zk.Event{Type: zk.EventSession, State: zk.StateHasSession})
	if q.conn.Load() != before+2 {
		t.Errorf("two state changes moved the connection count by %d", q.conn.Load()-before)
	}
	select {
	case <-q.connected:
	default:
		t.Error("a new session does not ask for the watch again")
	}
}

// TestWatchEventFlood: a ZooKeeper writer flooding one bucket with junk
// nodes, and making nodes outside meshd's layout, does not stop a host
// following the fleet.
func TestWatchEventFlood(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	w := open(t, []string{zs.Addr()}, mesh, "")
	firstSynced(t, w)
	c := rawConn(t, zs.Addr())
	acl := zk.WorldACL(zk.PermAll)
	for _, p := range []string{w.hostsPath() + "/zz", w.hostsPath() + "/zz/x#1", w.bucketPath(1) + "/x", w.bucketPath(1) + "/x/y#1"} {
		if _, err := c.Create(p, nil, 0, acl); err != nil {
			t.Fatal(err)
		}
	}
	bucket := w.bucketPath(0)
	for i := 0; i < 3*maxPendingOps; i += 500 {
		ops := make([]any, 0, 500)
		for j := i; j < i+500; j++ {
			ops = append(ops, &zk.CreateRequest{Path: fmt.Sprintf("%s/junk%05d", bucket, j), Acl: acl})
		}
		if _, err := c.Multi(ops...); err != nil {
			t.Fatal(err)
		}
	}
	registerAnother(t, zs, mesh, w, "after-flood", 1)
	waitFor(t, 10*time.Second, "the junk refused", func() bool {
		return w.Stats().BadRecordCounts()["name"] >= 1
	})
}
