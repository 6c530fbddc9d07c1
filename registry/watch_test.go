package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// logBuffer collects a registry's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// openLogged opens a registry whose log is returned.
func openLogged(t *testing.T, servers []string, mesh string) (*Registry, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	r, err := Open(context.Background(), Options{Servers: servers, Mesh: mesh, SessionTimeout: 10 * time.Second,
		Pool: testPool, Quarantine: time.Hour, Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, lb
}

// seedHosts writes n hosts' leases and records as meshd would, with a
// plain client and in batches, so a test can start with a large fleet.
func seedHosts(t *testing.T, c *zk.Conn, mesh string, n int) {
	t.Helper()
	root := "/meshd/" + mesh
	acl := zk.WorldACL(zk.PermAll)
	parents := []string{"/meshd", root, root + "/hosts", root + "/leases", root + "/owners"}
	for b := 0; b < Buckets; b++ {
		parents = append(parents, fmt.Sprintf("%s/hosts/%02x", root, b))
	}
	for _, p := range parents {
		if _, err := c.Create(p, nil, 0, acl); err != nil && err != zk.ErrNodeExists {
			t.Fatalf("create %s: %v", p, err)
		}
	}
	var ops []any
	flush := func() {
		if _, err := c.Multi(ops...); err != nil {
			t.Fatalf("seed hosts: %v", err)
		}
		ops = ops[:0]
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("h%05d", i)
		h := hostFor(id, "vpc", i%250+1)
		h.Schema, h.OverlayIP = Schema, netip.AddrFrom4([4]byte{100, 100, byte(1 + i/250), byte(i%250 + 1)})
		data, err := h.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops,
			&zk.CreateRequest{Path: path.Join(root, "leases", h.OverlayIP.String()), Data: []byte(id), Acl: acl},
			&zk.CreateRequest{Path: path.Join(root, "owners", id), Data: []byte(h.OverlayIP.String()), Acl: acl},
			&zk.CreateRequest{Path: fmt.Sprintf("%s/hosts/%02x/%s#0000000001", root, BucketOf(id), id), Data: data, Acl: acl})
		if len(ops) >= 300 {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
}

func rawConn(t *testing.T, addr string) *zk.Conn {
	t.Helper()
	c, _, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// whenRequests waits until r has sent at least n requests: its first
// listing is under way and reads are in flight.
func whenRequests(t *testing.T, r *Registry, n int64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d requests", n), func() bool { return r.Stats().Requests.Load() >= n })
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitForView waits until r's view holds n hosts. On a timeout it says
// what a reader of CI's log needs to tell a slow sync from a stuck one:
// how far the view got, the requests and listings in flight, refusals,
// the registry's log, and where its goroutines wait.
func waitForView(t *testing.T, r *Registry, log *logBuffer, n int, limit time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for len(r.Hosts()) != n {
		if time.Now().After(deadline) {
			st, synced := r.State()
			var stacks bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Fatalf("timed out after %s waiting until all %d hosts are in the view %s: it holds %d; %d requests sent, %d listings in flight, refusals %v, state %v (last listing %s)\nregistry log (last 4000 bytes):\n%s\ngoroutines:\n%s",
				limit, n, what, len(r.Hosts()), r.Stats().Requests.Load(), r.listing.Load(), r.Stats().BadRecordCounts(), st, synced.Format(time.RFC3339Nano), tail(log.String(), 4000), stacks.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func noRefusals(t *testing.T, r *Registry, log *logBuffer) {
	t.Helper()
	if counts := r.Stats().BadRecordCounts(); len(counts) > 0 {
		t.Errorf("refused records counted: %v", counts)
	}
	if rs := r.Refused(); len(rs) > 0 {
		t.Errorf("%d records refused, first %+v", len(rs), rs[0])
	}
	if l := log.String(); strings.Contains(l, "bad host record") {
		t.Errorf("refusals logged:\n%.600s", l)
	}
}

// TestConnectionLossIsNoRefusal: reads that fail because the connection
// dropped are neither counted nor logged as refused records, and the
// records they missed are read once the client is back (the bucket's watch
// would not fire for them).
func TestConnectionLossIsNoRefusal(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	const n = 2000
	seedHosts(t, rawConn(t, zs.Addr()), mesh, n)
	fz := newFreezer(t, zs.Addr())
	r, log := openLogged(t, []string{fz.addr()}, mesh)
	whenRequests(t, r, Buckets+400)
	fz.dropAll() // in the middle of the first listing's reads
	waitForView(t, r, log, n, 30*time.Second, "after the drop")
	noRefusals(t, r, log)
}

// TestCloseWhileReadingIsNoRefusal: reads cut short by Close are not
// refused records (the fleet simulator's teardown logged thousands).
func TestCloseWhileReadingIsNoRefusal(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	const n = 2000
	seedHosts(t, rawConn(t, zs.Addr()), mesh, n)
	r, log := openLogged(t, []string{zs.Addr()}, mesh)
	whenRequests(t, r, Buckets+400)
	if len(r.Hosts()) == n {
		t.Fatal("the first listing was over before Close: nothing was in flight")
	}
	r.Close()
	noRefusals(t, r, log)
}

// TestListingsInFlightBounded: a registry lists at most listSlots buckets
// at once, its first sync included, which is what N hosts do together
// after a fleet-wide session expiry. It used to list all 256.
func TestListingsInFlightBounded(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	const n = 2000
	seedHosts(t, rawConn(t, zs.Addr()), mesh, n)
	r, log := openLogged(t, []string{zs.Addr()}, mesh)
	waitForView(t, r, log, n, 30*time.Second, "")
	if m := r.listingMax.Load(); m > 16 {
		t.Errorf("%d listings in flight at once, want at most 16", m)
	}
}

// TestTransientErrors: what a request fails with when the connection goes
// is read again, not refused. go-zookeeper hands a request the raw socket
// error when its send loop cannot write it; taken for an answer, that
// refused a good record for good (CI, TestConnectionLossIsNoRefusal).
func TestTransientErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{zk.ErrConnectionClosed, true},
		{zk.ErrNoServer, true},
		{zk.ErrSessionExpired, true},
		{zk.ErrSessionMoved, true},
		{&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{fmt.Errorf("read: %w", io.EOF), true},
		{zk.ErrNoNode, false},
		{zk.ErrNoAuth, false},
		{bad("lease", "claims %s, which has no lease", "100.64.0.1"), false},
	} {
		if got := transient(tc.err); got != tc.want {
			t.Errorf("transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
