package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/zkserver"
)

// needJava skips the test where ZooKeeper cannot run.
func needJava(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		t.Skip("SKIP-DEP: java is missing; Debian's zookeeper package is needed (scripts/install-deps.sh)")
	}
}

func startZK(t *testing.T) *zkserver.Server {
	t.Helper()
	needJava(t)
	s, err := zkserver.Start(context.Background(), zkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// startEnsemble starts 3 voters and o's observers, stopped when the test
// ends (after the registries it opened close: cleanups run last first).
// Not with -short: an ensemble takes seconds.
func startEnsemble(t *testing.T, o zkserver.Options) *zkserver.Ensemble {
	t.Helper()
	if testing.Short() {
		t.Skip("ensemble")
	}
	needJava(t)
	e, err := zkserver.StartEnsemble(context.Background(), 3, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

var meshSeq int

// childWatches makes open and openTrusted watch each bucket with a child
// watch, as against a ZooKeeper older than 3.6 (eachShape).
var childWatches bool

// eachShape runs f once with the persistent watch a ZooKeeper 3.6 or
// later gives (follow.go) and once with a child watch per bucket.
func eachShape(t *testing.T, f func(t *testing.T, child bool)) {
	for _, child := range []bool{false, true} {
		name := "follow"
		if child {
			name = "child-watches"
		}
		t.Run(name, func(t *testing.T) {
			childWatches = child
			defer func() { childWatches = false }()
			f(t, child)
		})
	}
}

func open(t *testing.T, servers []string, mesh, stateDir string) *Registry {
	t.Helper()
	r, err := Open(context.Background(), Options{Servers: servers, Mesh: mesh, SessionTimeout: 4 * time.Second,
		Pool: testPool, Quarantine: time.Hour, StateDir: stateDir, ChildWatches: childWatches})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func hostFor(id, network string, n int) Host {
	k, _ := wgtypes.GeneratePrivateKey()
	return Host{InstanceID: id, PublicKey: k.PublicKey(), Network: network,
		PrivateIP: netip.AddrFrom4([4]byte{198, 18, 2, byte(n)}), ListenPort: 51820, StartTime: time.Now().UTC()}
}

// expect reads events until it has one of each wanted "kind id", failing on
// anything else (other than events for ignore).
func expect(t *testing.T, r *Registry, limit time.Duration, want ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, w := range want {
		left[w] = true
	}
	deadline := time.After(limit)
	for len(left) > 0 {
		select {
		case ev := <-r.Events():
			k := ev.Kind.String() + " " + ev.Host.InstanceID
			if ev.Decommissioned {
				k = "decommissioned " + ev.Host.InstanceID
			}
			if !left[k] {
				t.Fatalf("unexpected event %q (waiting for %v)", k, left)
			}
			delete(left, k)
		case <-deadline:
			t.Fatalf("timed out waiting for %v", left)
		}
	}
}

func expectQuiet(t *testing.T, r *Registry, d time.Duration) {
	t.Helper()
	select {
	case ev := <-r.Events():
		t.Fatalf("unexpected event %s %s", ev.Kind, ev.Host.InstanceID)
	case <-time.After(d):
	}
}

func meshName(t *testing.T) string {
	meshSeq++
	return fmt.Sprintf("t%d-%d", os.Getpid(), meshSeq)
}

func TestRegisterWatchUpdateRemove(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	a := open(t, []string{zs.Addr()}, mesh, t.TempDir())
	b := open(t, []string{zs.Addr()}, mesh, "")
	ha := hostFor("host-a", "vpc", 1)
	ipA, err := a.Register(context.Background(), ha, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, b, 5*time.Second, "added host-a")
	expect(t, a, 5*time.Second, "added host-a") // a sees itself too; the mesh skips it
	if got := b.Hosts(); len(got) != 1 || got[0].OverlayIP != ipA || got[0].PublicKey != ha.PublicKey {
		t.Fatalf("b's view: %+v", got)
	}
	// An update is a new record; watchers see one update.
	ha.PublicIP = netip.MustParseAddr("198.19.2.1")
	a.UpdateSelf(ha)
	expect(t, b, 5*time.Second, "updated host-a")
	// Re-registering the same id gets the same address.
	if ip2, err := a.Lease(context.Background(), "host-a"); err != nil || ip2 != ipA {
		t.Fatalf("lease again: %v %v, want %v", ip2, err, ipA)
	}
	// Close removes the record: b sees the removal.
	a.Close()
	expect(t, b, 5*time.Second, "removed host-a")
	st, _ := b.State()
	if st != Connected {
		t.Errorf("state %s", st)
	}
}

func TestConcurrentLeasesAreDistinct(t *testing.T) {
	zs := startZK(t)
	r := open(t, []string{zs.Addr()}, meshName(t), "")
	const n = 500
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips[i], errs[i] = r.Lease(context.Background(), fmt.Sprintf("i-%04d", i))
		}()
	}
	// One id registering twice at once gets one lease.
	var same [2]netip.Addr
	for j := range same {
		wg.Add(1)
		go func() { defer wg.Done(); same[j], _ = r.Lease(context.Background(), "twice") }()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("lease %d: %v", i, errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("%s leased to i-%04d and i-%04d", ip, j, i)
		}
		seen[ip] = i
	}
	if !same[0].IsValid() || same[0] != same[1] {
		t.Errorf("one id, two concurrent leases: %v", same)
	}
	owners, _, _ := r.conn.Children(path.Join(r.root, "owners"))
	leases, _, _ := r.conn.Children(path.Join(r.root, "leases"))
	if len(owners) != n+1 || len(leases) != n+1 {
		t.Errorf("%d owners and %d leases, want %d each", len(owners), len(leases), n+1)
	}
}

func TestPoolExhaustionAndQuarantine(t *testing.T) {
	zs := startZK(t)
	r, err := Open(context.Background(), Options{Servers: []string{zs.Addr()}, Mesh: meshName(t), Pool: netip.MustParsePrefix("100.100.9.0/29"), Quarantine: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := 0; i < 6; i++ {
		if _, err := r.Lease(context.Background(), fmt.Sprintf("h%d", i)); err != nil {
			t.Fatalf("lease %d of 6: %v", i, err)
		}
	}
	_, err = r.Lease(context.Background(), "h6")
	if !errors.Is(err, ErrPoolFull) || !contains(err.Error(), "100.100.9.0/29") || !contains(err.Error(), "all 6 addresses") {
		t.Fatalf("want a full-pool error naming the pool and its size, got %v", err)
	}
	if ok, _, _ := r.conn.Exists(r.ownerPath("h6")); ok {
		t.Errorf("failed lease left an owner node behind")
	}
	// A decommissioned address is quarantined: still not available.
	if err := r.Decommission(context.Background(), "h0"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lease(context.Background(), "h6"); !errors.Is(err, ErrPoolFull) {
		t.Errorf("quarantined address handed out: %v", err)
	}
	// Each time an address leaves its host, the decommission counter
	// moves, naming the host: every watcher's lease reads count no more.
	counted := func(want string, version int32) {
		t.Helper()
		data, st, err := r.conn.Get(r.decommissionsPath())
		if err != nil {
			t.Errorf("read the decommission counter: %v", err)
		} else if string(data) != want || st.Version != version {
			t.Errorf("decommission counter holds %q at version %d, want %q at %d", data, st.Version, want, version)
		}
	}
	counted("h0", 1)
	r.o.Quarantine = 0 // quarantine over
	if ip, err := r.Lease(context.Background(), "h6"); err != nil {
		t.Errorf("after quarantine: %v %v", ip, err)
	}
	counted("h6", 2) // the takeover of h0's address
	if err := r.Decommission(context.Background(), "nobody"); err == nil || !contains(err.Error(), "nobody") {
		t.Errorf("decommission of unknown host: %v", err)
	}
	// An id is a path element: one that climbs out names nothing.
	if err := r.Decommission(context.Background(), "../owners/h1"); err == nil || !contains(err.Error(), "not an instance id") {
		t.Errorf("decommission of a path: %v", err)
	}
	if ok, _, _ := r.conn.Exists(r.ownerPath("h1")); !ok {
		t.Error("h1's owner node went with a decommission of another id")
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestPoisonRecordsSkippedAndCounted(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	r := open(t, []string{zs.Addr()}, mesh, "")
	good := hostFor("good", "vpc", 2)
	if _, err := r.Register(context.Background(), good, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, r, 5*time.Second, "added good")
	c, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hijack := hostFor("evil", "vpc", 3)
	hijack.OverlayIP, hijack.Schema = r.Hosts()[0].OverlayIP, Schema // claims good's address
	hj, _ := json.Marshal(hijack)
	poison := map[string][]byte{
		"junk#0000000001":   []byte("{{{"),
		"future#0000000001": []byte(`{"schema":7}`),
		"evil#0000000001":   hj,
		"noseq":             []byte("x"),
	}
	for name, data := range poison {
		b := r.bucketPath(BucketOf(name))
		if id, _, ok := splitName(name); ok {
			b = r.bucketPath(BucketOf(id))
		}
		r.ensurePath(b)
		if _, err := c.Create(path.Join(b, name), data, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		counts := r.Stats().BadRecordCounts()
		if counts["decode"] >= 1 && counts["schema"] >= 1 && counts["lease"] >= 1 && counts["name"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bad records not all counted: %v", counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	expectQuiet(t, r, 300*time.Millisecond)
	if hs := r.Hosts(); len(hs) != 1 || hs[0].InstanceID != "good" {
		t.Errorf("view after poison: %+v", hs)
	}
}

func TestOutageSnapshotAndResync(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	dir := t.TempDir()
	a := open(t, []string{zs.Addr()}, mesh, "")
	watcher := open(t, []string{zs.Addr()}, mesh, dir)
	if _, err := a.Register(context.Background(), hostFor("stays", "vpc", 10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	leaver := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := leaver.Register(context.Background(), hostFor("leaves", "vpc", 11), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, watcher, 5*time.Second, "added stays", "added leaves")
	// Wait for the snapshot to be written.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, _ := watcher.loadSnapshot()
		if len(s.Hosts) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("snapshot not written")
		}
		time.Sleep(100 * time.Millisecond)
	}
	watcher.Close()

	zs.Halt()
	// "leaves" dies while ZooKeeper is down: its record goes only when the
	// restarted server expires its session.
	leaver.Close()
	// Starting while ZooKeeper is down: the snapshot's hosts are the view.
	w2 := open(t, []string{zs.Addr()}, mesh, dir)
	if got := ids(w2.Hosts()); got != "leaves stays" {
		t.Errorf("view from the snapshot: %q, want leaves and stays", got)
	}
	// ZooKeeper stays down 30 s: no event at all, nothing removed.
	expectQuiet(t, w2, 30*time.Second)
	if st, _ := w2.State(); st == Connected {
		t.Errorf("state %s while ZooKeeper is down", st)
	}
	if err := zs.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Meanwhile a new host joins.
	n := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := n.Register(context.Background(), hostFor("joined", "dc", 20), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, w2, 20*time.Second, "added joined", "removed leaves")
	expectQuiet(t, w2, 500*time.Millisecond)
}

func ids(hs []*Host) string {
	var out []string
	for _, h := range hs {
		out = append(out, h.InstanceID)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestOpenLargeSnapshot: a snapshot larger than the events channel is the
// view as soon as Open returns, and Open returns at once (it used to push
// every host into a 4096-slot channel nobody read yet, and hung).
func TestOpenLargeSnapshot(t *testing.T) {
	const n = 10000
	dir := t.TempDir()
	s := snapshot{SavedAt: time.Now().UTC(), Lease: netip.MustParseAddr("100.100.0.1")}
	for i := 0; i < n; i++ {
		h := hostFor(fmt.Sprintf("h%05d", i), "vpc", i%250+1)
		h.Schema, h.OverlayIP = Schema, netip.AddrFrom4([4]byte{100, 100, byte(64 + i/250), byte(i%250 + 1)})
		s.Hosts = append(s.Hosts, h)
	}
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SnapshotFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	opened := make(chan *Registry, 1)
	go func() {
		// Nothing listens on loopback port 1: ZooKeeper is down.
		r, err := Open(context.Background(), Options{Servers: []string{"127.0.0.1:1"}, Mesh: "big", Pool: testPool, StateDir: dir})
		if err != nil {
			t.Error(err)
		}
		opened <- r
	}()
	select {
	case r := <-opened:
		if r == nil {
			return
		}
		defer r.Close()
		if got := len(r.Hosts()); got != n {
			t.Errorf("view after Open: %d hosts, want %d", got, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Open with a %d-host snapshot has not returned after 5s", n)
	}
}

// TestRefusalsForgottenWithTheirNodes: what the registry keeps of refused
// records lives as long as their nodes. A ZooKeeper writer churning fresh
// garbage nodes would otherwise grow every host's memory for good.
func TestRefusalsForgottenWithTheirNodes(t *testing.T) {
	zs := startZK(t)
	r := open(t, []string{zs.Addr()}, meshName(t), "")
	c, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 200
	var nodes []string
	for i := range n {
		id := fmt.Sprintf("junk%d", i)
		b := r.bucketPath(BucketOf(id))
		r.ensurePath(b)
		p := path.Join(b, id+"#0000000001")
		if _, err := c.Create(p, []byte("{{{"), 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, p)
	}
	remembered := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		total := 0
		for _, seen := range r.badSeen {
			total += len(seen)
		}
		return total
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("%d decode refusals", n), func() bool { return r.Stats().BadRecordCounts()["decode"] == n })
	if got := remembered(); got != n {
		t.Fatalf("refusals remembered: %d, want %d", got, n)
	}
	for _, p := range nodes {
		if err := c.Delete(p, -1); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "no refusal remembered or listed once the nodes are deleted", func() bool { return remembered() == 0 && len(r.Refused()) == 0 })
	// The same node made again is refused and counted again.
	if _, err := c.Create(nodes[0], []byte("{{{"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the node made again counted again", func() bool { return r.Stats().BadRecordCounts()["decode"] == n+1 })
}

// TestSessionQueueKeepsEveryStateChange: go-zookeeper calls the registry
// with every event; a burst of watch events neither wakes watchSession
// nor crowds out a state change, and state changes come in order.
func TestSessionQueueKeepsEveryStateChange(t *testing.T) {
	q := sessionQueue{poke: make(chan struct{}, 1)}
	for i := 0; i < 1000; i++ {
		q.add(zk.Event{Type: zk.EventNodeChildrenChanged, Path: fmt.Sprintf("/b/%d", i)})
	}
	select {
	case <-q.poke:
		t.Fatal("watch events poked watchSession")
	default:
	}
	states := []zk.State{zk.StateDisconnected, zk.StateConnecting, zk.StateExpired, zk.StateConnecting, zk.StateHasSession}
	for i, st := range states {
		q.add(zk.Event{Type: zk.EventSession, State: st})
		q.add(zk.Event{Type: zk.EventNodeDataChanged, Path: fmt.Sprintf("/d/%d", i)})
	}
	select {
	case <-q.poke:
	default:
		t.Fatal("state changes did not poke watchSession")
	}
	var got []zk.State
	for _, ev := range q.take() {
		got = append(got, ev.State)
	}
	if !slices.Equal(got, states) {
		t.Errorf("took %v, want %v", got, states)
	}
	if evs := q.take(); len(evs) != 0 {
		t.Errorf("took %d events again", len(evs))
	}
}
