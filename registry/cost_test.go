package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/trust"
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

// TestWritesPerChange: a host that registers again with its lease, or
// changes its record, writes one transaction to ZooKeeper's log, which
// every watcher waits for. They used to write eleven and six: creates of
// parent nodes that existed, each failing but logged like any write, and
// an update's create and delete apart.
func TestWritesPerChange(t *testing.T) { eachShape(t, testWritesPerChange) }

func testWritesPerChange(t *testing.T, child bool) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	h := hostFor("writer", "vpc", 1)
	first := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := first.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	// Transactions counted below are the changes': the first syncs, which
	// create the empty buckets, are over.
	firstSynced(t, watcher, first)
	first.Close()
	expect(t, watcher, 5*time.Second, "removed writer")

	// A restart: a new session, the lease known.
	w := open(t, []string{zs.Addr()}, mesh, "")
	waitConnected(t, w)
	firstSynced(t, w)
	before := zxid(t, zs)
	if _, err := w.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	if n := zxid(t, zs) - before; n != 1 {
		t.Errorf("registering again wrote %d transactions, want 1 (the record)", n)
	}

	// An endpoint change: a new record replaces the old in one multi.
	c := rawConn(t, zs.Addr()) // its session is a transaction too
	waitFor(t, 5*time.Second, "a session", func() bool { return c.SessionID() != 0 })
	before = zxid(t, zs)
	sent := w.Stats().Requests.Load()
	h.PublicIP = netip.MustParseAddr("198.19.0.7")
	w.UpdateSelf(h)
	expect(t, watcher, 5*time.Second, "updated writer")
	// The writer knows its record: no listing and no read before the
	// multi, which every watcher would wait for. After it, the writer
	// lists its own bucket and reads its new record like any watcher.
	waitFor(t, 5*time.Second, "the writer's own view updated", func() bool {
		hs := w.Hosts()
		return len(hs) == 1 && hs[0].PublicIP == h.PublicIP
	})
	want, what := int64(2), "the multi, then the record's read"
	if child {
		want, what = 3, "the multi, then its own bucket's listing and the record's read"
	}
	if n := w.Stats().Requests.Load() - sent; n != want {
		t.Errorf("an endpoint change cost the writer %d requests, want %d (%s)", n, want, what)
	}
	waitFor(t, 5*time.Second, "the old record deleted", func() bool {
		names, _, err := c.Children(w.bucketPath(BucketOf(h.InstanceID)))
		return err == nil && len(names) == 1
	})
	if n := zxid(t, zs) - before; n != 1 {
		t.Errorf("an endpoint change wrote %d transactions, want 1", n)
	}
}

// TestDeletedParentsAreMadeAgain: parents this session knows to exist may
// be deleted by hand; the next lease and record make them again.
func TestDeletedParentsAreMadeAgain(t *testing.T) {
	eachShape(t, func(t *testing.T, _ bool) { testDeletedParentsAreMadeAgain(t) })
}

func testDeletedParentsAreMadeAgain(t *testing.T) {
	zs, mesh, watcher, r, a := registeredOne(t, "first")
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
	// Its owner node went too, but by hand: no decommission moved the
	// counter, so the watcher sees a leave.
	expect(t, watcher, 5*time.Second, "removed first")
	// A new lease in the same session, and the record again.
	if _, err := r.Register(context.Background(), hostFor("second", "vpc", 2), 10*time.Second); err != nil {
		t.Fatalf("register after the parents were deleted: %v", err)
	}
	expect(t, watcher, 5*time.Second, "added second")
}

// TestWatcherRequestsPerChange: an endpoint change costs each watcher one
// listing and one read, as ZooKeeper's own fan-out does (list, get): the
// record's lease was read when the host joined, and the change is one
// firing of the bucket's watch. It used to cost a listing, the record and
// its lease, and often a second listing for the old record's deletion.
// A leave costs the listing alone: the owner check that tells a
// decommission is made only once the decommission counter has moved; the
// host's return (a new session), a listing and its record: its lease was
// read at its join, and no decommission has come since (decommissions.go).
func TestWatcherRequestsPerChange(t *testing.T) { eachShape(t, testWatcherRequestsPerChange) }

func testWatcherRequestsPerChange(t *testing.T, child bool) {
	zs, mesh, watcher, w, h := registeredOne(t, "writer")
	rejoin := func() *Registry {
		r := open(t, []string{zs.Addr()}, mesh, "")
		if _, err := r.Register(context.Background(), h, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := [3]int64{1, 0, 1} // the record; nothing; the record
	if child {
		want = [3]int64{2, 1, 2}
	}
	checkRequestsPerChange(t, watcher, w, &h, rejoin, want)
}

// TestTrustedLeaveCostsOneListing: with trust, a leave costs each watcher
// its listing alone, as raw ZooKeeper's fan-out of a deletion would: only
// a revoked certificate retires a signed host, so there is nothing for an
// owner check to decide.
func TestTrustedLeaveCostsOneListing(t *testing.T) { eachShape(t, testTrustedLeaveCostsOneListing) }

func testTrustedLeaveCostsOneListing(t *testing.T, child bool) {
	zs := startZK(t)
	mesh := meshName(t)
	fca := newFleetCA(t)
	pool, _ := trust.NewPool(fca.ca.PEM)
	wt := fca.host(t, pool, "writer", trust.Template{})
	watcher := openTrusted(t, []string{zs.Addr()}, mesh, "", fca.host(t, pool, "obs", trust.Template{}))
	h := hostFor("writer", "vpc", 1)
	register := func() *Registry {
		r := openTrusted(t, []string{zs.Addr()}, mesh, "", wt)
		if _, err := r.Register(context.Background(), h, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return r
	}
	w := register()
	expect(t, watcher, 5*time.Second, "added writer")
	firstSynced(t, watcher, w)
	want := [3]int64{1, 0, 1}
	if child {
		want = [3]int64{2, 1, 2}
	}
	checkRequestsPerChange(t, watcher, w, &h, register, want)
}

// checkRequestsPerChange counts the watcher's requests for three changes
// of the host h that w registered - an endpoint change, w's leave, and the
// host's return through rejoin - against want. A leave's owner check comes
// after its event, so the leave is counted once it reached want (or
// failed to, in time); anything more it made lands in the return's count,
// which the return's event closes: the bucket's watch loop finishes one
// change before it lists the bucket for the next.
func checkRequestsPerChange(t *testing.T, watcher, w *Registry, h *Host, rejoin func() *Registry, want [3]int64) {
	t.Helper()
	count := watcher.Stats().Requests.Load
	var n [3]int64
	start := count()
	h.PublicIP = netip.AddrFrom4([4]byte{198, 19, 0, 1})
	w.UpdateSelf(*h)
	expect(t, watcher, 5*time.Second, "updated "+h.InstanceID)
	n[0] = count() - start
	w.Close()
	expect(t, watcher, 5*time.Second, "removed "+h.InstanceID)
	deadline := time.Now().Add(5 * time.Second)
	for count()-start-n[0] < want[1] && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	left := count()
	n[1] = left - start - n[0]
	rejoin()
	expect(t, watcher, 5*time.Second, "added "+h.InstanceID)
	n[2] = count() - left
	if n != want {
		t.Errorf("an endpoint change, a leave and a return cost the watcher %v requests, want %v", n, want)
	}
}

// TestNoRecordAfterDecommission: a host decommissioned while it runs does
// not publish a record again (a watcher that missed its removal would take
// the new record's lease as read before, leaseseen.go).
func TestNoRecordAfterDecommission(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	a, log := openLogged(t, []string{zs.Addr()}, mesh)
	h := hostFor("retired", "vpc", 1)
	if _, err := a.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added retired")
	if err := watcher.Decommission(context.Background(), h.InstanceID); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "removed retired")
	h.PublicIP = netip.MustParseAddr("198.19.0.9")
	a.UpdateSelf(h)
	waitFor(t, 5*time.Second, "the publish refused", func() bool { return strings.Contains(log.String(), "own record not published") })
	names, _, err := rawConn(t, zs.Addr()).Children(a.bucketPath(BucketOf(h.InstanceID)))
	if err != nil || len(names) != 0 {
		t.Fatalf("bucket after the decommission: %v %v, want empty", names, err)
	}
}

// TestUpdateAfterRecordDeleted: the update fast path replaces the node this
// session made; when that node was deleted by hand meanwhile, the update
// still publishes the record, once, and watchers get it.
func TestUpdateAfterRecordDeleted(t *testing.T) {
	zs, _, watcher, w, h := registeredOne(t, "writer")
	c := rawConn(t, zs.Addr())
	bucket := w.bucketPath(BucketOf(h.InstanceID))
	names, _, err := c.Children(bucket)
	if err != nil || len(names) != 1 {
		t.Fatalf("writer's bucket holds %v (%v), want its one record", names, err)
	}
	if err := c.Delete(path.Join(bucket, names[0]), -1); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "removed writer")
	h.PublicIP = netip.MustParseAddr("198.19.0.8")
	w.UpdateSelf(h)
	expect(t, watcher, 5*time.Second, "added writer")
	names, _, err = c.Children(bucket)
	if err != nil || len(names) != 1 {
		t.Fatalf("after the update the bucket holds %v (%v), want one record", names, err)
	}
	data, _, err := c.Get(path.Join(bucket, names[0]))
	if err != nil || !strings.Contains(string(data), "198.19.0.8") {
		t.Fatalf("record after the update: %s (%v), want the new endpoint", data, err)
	}
}

// registeredOne starts ZooKeeper with a watcher and one registered host,
// id, which the watcher has seen added.
func registeredOne(t *testing.T, id string) (zs *zkserver.Server, mesh string, watcher, r *Registry, h Host) {
	t.Helper()
	zs = startZK(t)
	mesh = meshName(t)
	watcher = open(t, []string{zs.Addr()}, mesh, "")
	r, h = registerAnother(t, zs, mesh, watcher, id, 1)
	// Requests counted from here on are the test's: both first syncs
	// (which create the empty buckets) are over.
	firstSynced(t, watcher, r)
	return zs, mesh, watcher, r, h
}

// firstSynced waits until each registry has listed every bucket once.
func firstSynced(t *testing.T, rs ...*Registry) {
	t.Helper()
	for _, r := range rs {
		waitFor(t, 10*time.Second, "a first sync", func() bool { return r.listed.Load() == Buckets })
	}
}

// TestRejoinReadsLeaseBesideRecord: a host that comes back (a new session,
// its lease kept) costs a watcher a listing and its record while no
// decommission has come since its lease was read; after one, a listing,
// its record and its lease, with the lease read beside the record's: one
// round of requests less. The guess only chooses which lease to read
// early: a record claiming another address is judged on that address's
// lease, and one claiming a decommissioned host's address on the
// quarantine that replaced it.
func TestRejoinReadsLeaseBesideRecord(t *testing.T) { eachShape(t, testRejoinReadsLeaseBesideRecord) }

func testRejoinReadsLeaseBesideRecord(t *testing.T, child bool) {
	listing := int64(0) // the persistent watch names the record: no listing
	if child {
		listing = 1
	}
	zs, mesh, watcher, w, h := registeredOne(t, "writer")
	_, o := registerAnother(t, zs, mesh, watcher, "other", 2)
	if n := watcher.earlyLeases.Load(); n != 0 {
		t.Fatalf("first joins judged %d records on an early lease read, want 0: nothing was known of them", n)
	}
	w.Close()
	expect(t, watcher, 5*time.Second, "removed writer")

	// A restart, nothing decommissioned since the join.
	before := watcher.Stats().Requests.Load()
	w1 := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := w1.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	if n := watcher.Stats().Requests.Load() - before; n != listing+1 {
		t.Errorf("the restart cost the watcher %d requests, want %d (listing %d, record)", n, listing+1, listing)
	}
	if n := watcher.earlyLeases.Load(); n != 0 {
		t.Errorf("the restart was judged on %d early lease reads, want 0", n)
	}
	w1.Close()
	expect(t, watcher, 5*time.Second, "removed writer")

	// The counter moves (a decommission somewhere, here written by hand):
	// the lease read at the join counts no more.
	c := rawConn(t, zs.Addr())
	gen := armedEpoch(t, watcher, 0)
	if _, err := c.Set(watcher.decommissionsPath(), []byte("elsewhere"), -1); errors.Is(err, zk.ErrNoNode) {
		_, err = c.Create(watcher.decommissionsPath(), nil, 0, zk.WorldACL(zk.PermAll))
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	armedEpoch(t, watcher, gen)

	// The restart.
	before = watcher.Stats().Requests.Load()
	w2 := open(t, []string{zs.Addr()}, mesh, "")
	ip, err := w2.Register(context.Background(), h, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added writer")
	if n := watcher.earlyLeases.Load(); n != 1 {
		t.Errorf("the restart was judged on %d early lease reads, want 1", n)
	}
	if n := watcher.Stats().Requests.Load() - before; n != listing+2 {
		t.Errorf("the restart cost the watcher %d requests, want %d (listing %d, record, lease)", n, listing+2, listing)
	}
	w2.Close()
	expect(t, watcher, 5*time.Second, "removed writer")

	// A record for writer, written by hand, claiming other's address: the
	// lease read for writer's own address covers no other; other's lease
	// is read and refuses it.
	forged := h
	forged.OverlayIP, forged.Schema = otherIP(t, watcher, o.InstanceID), Schema
	if forged.OverlayIP == ip {
		t.Fatal("two hosts hold one address")
	}
	data, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	bucket := watcher.bucketPath(BucketOf(h.InstanceID))
	node, err := c.Create(bucket+"/writer#", data, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the forged record refused", func() bool { return refusedFor(watcher, "writer", "lease") })
	if n := watcher.earlyLeases.Load(); n != 1 {
		t.Errorf("the forged record was judged on an early lease read (%d in all, want 1)", n)
	}
	if err := c.Delete(node, -1); err != nil {
		t.Fatal(err)
	}

	// Decommissioned: its address is quarantined. The watcher saw no
	// removal (the host was gone already) and so still holds the lease it
	// read at the restart, but the decommission moved the counter: it reads
	// the lease again, early or not, which refuses the record.
	if err := watcher.Decommission(context.Background(), h.InstanceID); err != nil {
		t.Fatal(err)
	}
	forged.OverlayIP = ip
	if data, err = json.Marshal(forged); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(bucket+"/writer#", data, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the retired address's record refused", func() bool {
		for _, r := range watcher.Refused() {
			if r.Host == "writer" && r.Reason == "lease" && strings.Contains(r.Detail, ip.String()) {
				return true
			}
		}
		return false
	})
	if len(watcher.Hosts()) != 1 {
		t.Errorf("watcher holds %d hosts, want only other", len(watcher.Hosts()))
	}
}

// armedEpoch waits until r's decommission watch is armed in a generation
// after gen, and returns that generation.
func armedEpoch(t *testing.T, r *Registry, gen uint64) uint64 {
	t.Helper()
	var now uint64
	waitFor(t, 5*time.Second, "the decommission watch armed", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		now = r.epochLocked()
		return now > gen
	})
	return now
}

// registerAnother registers host id (underlay address number n) in its own
// registry, which watcher sees added.
func registerAnother(t *testing.T, zs *zkserver.Server, mesh string, watcher *Registry, id string, n int) (*Registry, Host) {
	t.Helper()
	r := open(t, []string{zs.Addr()}, mesh, "")
	h := hostFor(id, "vpc", n)
	if _, err := r.Register(context.Background(), h, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added "+id)
	return r, h
}

// otherIP is the overlay address r's view holds for id.
func otherIP(t *testing.T, r *Registry, id string) netip.Addr {
	t.Helper()
	for _, h := range r.Hosts() {
		if h.InstanceID == id {
			return h.OverlayIP
		}
	}
	t.Fatalf("%s is not in the view", id)
	return netip.Addr{}
}

// refusedFor says whether r refuses a record of id for reason.
func refusedFor(r *Registry, id, reason string) bool {
	for _, f := range r.Refused() {
		if f.Host == id && f.Reason == reason {
			return true
		}
	}
	return false
}

// TestHoldRecordUntilPublish: with HoldRecord, Register leases the address
// and publishes nothing, updates included, until Publish; then the latest
// record goes out once. meshd holds it until its WireGuard socket is open.
func TestHoldRecordUntilPublish(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	w, err := Open(context.Background(), Options{Servers: []string{zs.Addr()}, Mesh: mesh, SessionTimeout: 4 * time.Second,
		Pool: testPool, Quarantine: time.Hour, HoldRecord: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	h := hostFor("held", "vpc", 1)
	ip, err := w.Register(context.Background(), h, 10*time.Second)
	if err != nil || !ip.IsValid() {
		t.Fatalf("register with the record held: %v %v, want a lease", ip, err)
	}
	h.PublicIP = netip.MustParseAddr("198.19.0.5")
	w.UpdateSelf(h)
	// The writer's own bucket listed after the lease: a record it had
	// published would be there by now.
	firstSynced(t, w, watcher)
	c := rawConn(t, zs.Addr())
	names, _, err := c.Children(w.bucketPath(BucketOf(h.InstanceID)))
	if err != nil || len(names) != 0 {
		t.Fatalf("bucket before Publish: %v (%v), want no record", names, err)
	}
	if n := len(watcher.Hosts()); n != 0 {
		t.Fatalf("watcher holds %d hosts before Publish, want 0", n)
	}
	w.Publish()
	expect(t, watcher, 5*time.Second, "added held")
	hs := watcher.Hosts()
	if len(hs) != 1 || hs[0].PublicIP != h.PublicIP || hs[0].OverlayIP != ip {
		t.Fatalf("after Publish the watcher holds %+v, want held at %s with the update's endpoint", hs, ip)
	}
}

// TestLeaseSeenCovers: a lease read covers a later record of its id that
// claims the same address when the record is of the same session, or when
// no decommission has come since the read (its generation is current);
// never a record claiming another address, and never by a generation of 0
// (read while the decommission watch was not armed).
func TestLeaseSeenCovers(t *testing.T) {
	x, y := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	for _, c := range []struct {
		name  string
		seen  *leaseSeen
		addr  netip.Addr
		owner int64
		epoch uint64
		want  bool
	}{
		{"nothing read", nil, x, 7, 1, false},
		{"same session", &leaseSeen{node: "a#1", addr: x, owner: 7}, x, 7, 0, true},
		{"same session, other address", &leaseSeen{node: "a#1", addr: x, owner: 7}, y, 7, 0, false},
		{"other session", &leaseSeen{node: "a#1", addr: x, owner: 7}, x, 8, 0, false},
		{"session of a node no longer listed", &leaseSeen{addr: x, owner: 7}, x, 7, 0, false},
		{"not ephemeral", &leaseSeen{node: "a#1", addr: x}, x, 0, 0, false},
		{"no decommission since", &leaseSeen{addr: x, gen: 3}, x, 8, 3, true},
		{"no decommission since, other address", &leaseSeen{addr: x, gen: 3}, y, 8, 3, false},
		{"a decommission since", &leaseSeen{addr: x, gen: 3}, x, 8, 4, false},
		{"watch fired, not armed again", &leaseSeen{addr: x, gen: 3}, x, 8, 0, false},
		{"read while not armed", &leaseSeen{addr: x}, x, 8, 0, false},
	} {
		if got := c.seen.covers(c.addr, c.owner, c.epoch); got != c.want {
			t.Errorf("%s: covers = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestDecommissionToldFromLeave: a decommission reaches a watcher as a
// removal and then a decommission, whether it is the fleet's first (it
// makes the counter node, which fires every watcher's watch just before
// the decommission's own transaction) or a later one; a leave is a removal
// alone, and costs the watcher its listing alone (nothing with the
// persistent watch, whose event names the record).
func TestDecommissionToldFromLeave(t *testing.T) { eachShape(t, testDecommissionToldFromLeave) }

func testDecommissionToldFromLeave(t *testing.T, child bool) {
	zs := startZK(t)
	mesh := meshName(t)
	watcher := open(t, []string{zs.Addr()}, mesh, "")
	var rs []*Registry
	for i, id := range []string{"leaver", "first", "second"} {
		r, _ := registerAnother(t, zs, mesh, watcher, id, i+1)
		rs = append(rs, r)
	}
	firstSynced(t, watcher)
	admin := open(t, []string{zs.Addr()}, mesh, "")

	before := watcher.Stats().Requests.Load()
	rs[0].Close()
	expect(t, watcher, 5*time.Second, "removed leaver")
	expectQuiet(t, watcher, 300*time.Millisecond)
	want := int64(0)
	if child {
		want = 1 // the listing
	}
	if n := watcher.Stats().Requests.Load() - before; n != want {
		t.Errorf("a leave cost the watcher %d requests, want %d", n, want)
	}

	for _, id := range []string{"first", "second"} {
		if err := admin.Decommission(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		expect(t, watcher, 5*time.Second, "removed "+id, "decommissioned "+id)
	}
}
