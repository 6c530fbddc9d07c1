package registry

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/internal/zkserver"
)

// hostTrust is the daemon's adapter, repeated here: the real trust
// package behind the registry's seam.
type hostTrust struct {
	pool   *trust.Pool
	signer *trust.Signer
	strict atomic.Bool
}

func (h *hostTrust) SignRecord(p []byte) ([]byte, [][]byte, error) { return h.signer.SignRecord(p) }
func (h *hostTrust) VerifyRecord(p, sig []byte, chain [][]byte) (Signer, error) {
	id, err := h.pool.VerifyRecord(p, sig, chain)
	return Signer(id), err
}
func (h *hostTrust) Strict() bool               { return h.strict.Load() }
func (h *hostTrust) Enabled() bool              { return true }
func (h *hostTrust) Revoked(serial string) bool { return h.pool.Revoked(serial) }

type fleetCA struct {
	ca   *trust.CA
	pool *trust.Pool
}

func newFleetCA(t *testing.T) *fleetCA {
	t.Helper()
	ca, err := trust.InitCA(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := trust.NewPool(ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	return &fleetCA{ca, pool}
}

// host makes an identity key and certificate for id, checked by pool.
func (f *fleetCA) host(t *testing.T, pool *trust.Pool, id string, tmpl trust.Template) *hostTrust {
	t.Helper()
	dir := t.TempDir()
	key, err := trust.LoadOrCreateKey(filepath.Join(dir, "id.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := f.ca.Issue(key.Public(), id, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "id.crt"), cert, 0o644)
	// The signer's own check runs against its CA; pool is the observer's.
	own, _ := trust.NewPool(f.ca.PEM)
	s, err := trust.LoadSigner(filepath.Join(dir, "id.key"), filepath.Join(dir, "id.crt"), own)
	if err != nil {
		t.Fatal(err)
	}
	ht := &hostTrust{pool: pool, signer: s}
	ht.strict.Store(true)
	return ht
}

func openTrusted(t *testing.T, servers []string, mesh, stateDir string, tr Trust) *Registry {
	t.Helper()
	r, err := Open(context.Background(), Options{Servers: servers, Mesh: mesh, SessionTimeout: 4 * time.Second,
		Pool: testPool, Quarantine: time.Hour, StateDir: stateDir, Trust: tr, ChildWatches: childWatches})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// attacker has full access to ZooKeeper and writes records by hand.
type attacker struct {
	t *testing.T
	c *zk.Conn
	r *Registry // for paths only
}

func (a *attacker) write(id string, data []byte) string {
	a.t.Helper()
	// The observer makes its buckets as its first sync lists them: write
	// into one only once it is there, as an attacker of a running fleet would.
	waitFor(a.t, 10*time.Second, "the observer's first sync", func() bool { return a.r.listed.Load() == Buckets })
	b := a.r.bucketPath(BucketOf(id))
	p, err := a.c.Create(path.Join(b, id+"#"), data, zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		a.t.Fatal(err)
	}
	return p
}

func signed(t *testing.T, h Host, seq uint64, tr Trust) []byte {
	t.Helper()
	h.Schema, h.Seq = Schema, seq
	data, err := SealRecord(h, tr)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// waitRefused waits until the observer counted one more refusal for
// reason, named with the node.
func waitRefused(t *testing.T, r *Registry, reason, node string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, rf := range r.Refusals() {
			if rf.Reason == reason && rf.Node == node {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s refusal named %s; refusals %+v, counts %v", reason, node, r.Refusals(), r.Stats().BadRecordCounts())
}

func hostInView(r *Registry, id string) (Host, bool) {
	for _, h := range r.Hosts() {
		if h.InstanceID == id {
			return *h, true
		}
	}
	return Host{}, false
}

// TestForgedRecordsRefused: with trust strict, someone who can write to
// ZooKeeper cannot replace a host's key, claim its id or address, replay
// its older record, or get an unsigned, foreign, expired or revoked
// certificate believed. The observer keeps the real record throughout.
func TestForgedRecordsRefused(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	fca := newFleetCA(t)
	obsPool, _ := trust.NewPool(fca.ca.PEM)
	h1t := fca.host(t, obsPool, "h1", trust.Template{Groups: []string{"web"}, Network: "vpc"})
	h2t := fca.host(t, obsPool, "h2", trust.Template{Groups: []string{"db"}, Network: "vpc"})
	obs := fca.host(t, obsPool, "obs", trust.Template{Network: "vpc"})

	r1 := openTrusted(t, []string{zs.Addr()}, mesh, "", h1t)
	r2 := openTrusted(t, []string{zs.Addr()}, mesh, "", h2t)
	stateDir := t.TempDir()
	ro := openTrusted(t, []string{zs.Addr()}, mesh, stateDir, obs)

	h1 := hostFor("h1", "vpc", 1)
	h1.Groups = []string{"web", "admin"} // admin is not in its certificate
	ip1, err := r1.Register(context.Background(), h1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h2 := hostFor("h2", "vpc", 2)
	ip2, err := r2.Register(context.Background(), h2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, ro, 5*time.Second, "added h1", "added h2")
	got, _ := hostInView(ro, "h1")
	if got.PublicKey != h1.PublicKey || got.Seq == 0 || got.CertSerial == "" || strings.Join(got.Groups, ",") != "web" {
		t.Fatalf("h1 as seen: key %v seq %d cert %q groups %v (want the certificate's groups only)", got.PublicKey, got.Seq, got.CertSerial, got.Groups)
	}
	firstRecord, _, err := r1.conn.Get(r1.selfPublished.node)
	if err != nil {
		t.Fatal(err)
	}
	// A legitimate update (key rotation) is accepted.
	k, _ := wgtypes.GeneratePrivateKey()
	h1.PublicKey = k.PublicKey()
	r1.UpdateSelf(h1)
	expect(t, ro, 5*time.Second, "updated h1")

	zc, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer zc.Close()
	a := &attacker{t: t, c: zc, r: ro}
	evilKey, _ := wgtypes.GeneratePrivateKey()
	forged := h1
	forged.OverlayIP, forged.PublicKey = ip1, evilKey.PublicKey()
	now := uint64(time.Now().UnixMicro()) + 1e9

	otherCA := newFleetCA(t)
	foreign := otherCA.host(t, obsPool, "h1", trust.Template{})
	expired := fca.host(t, obsPool, "h1", trust.Template{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(2 * time.Second)})
	revoked := fca.host(t, obsPool, "h1", trust.Template{})
	obsPool.SetRevoked([]string{revoked.signer.Identity().Serial})
	unsignedJSON, _ := json.Marshal(forged)
	h2claims := h2
	h2claims.OverlayIP = ip1

	cases := []struct {
		name, reason string
		data         func() []byte
		before       func()
	}{
		{"unsigned, another key", ReasonUnsigned, func() []byte { return unsignedJSON }, nil},
		{"h1 with another key, signed by h2", ReasonIdentity, func() []byte { return signed(t, forged, now, h2t) }, nil},
		{"older record of h1, replayed", ReasonReplay, func() []byte { return firstRecord }, nil},
		{"another CA", trust.ReasonUnknownCA, func() []byte { return signed(t, forged, now, foreign) }, nil},
		{"expired certificate", trust.ReasonExpired, func() []byte {
			for time.Now().Before(expired.signer.Identity().NotAfter.Add(time.Second)) {
				time.Sleep(100 * time.Millisecond)
			}
			return signed(t, forged, now, expired)
		}, nil},
		{"revoked certificate", trust.ReasonRevoked, func() []byte { return signed(t, forged, now, revoked) }, nil},
	}
	for _, c := range cases {
		node := a.write("h1", c.data())
		waitRefused(t, ro, c.reason, node)
		if h, ok := hostInView(ro, "h1"); !ok || h.PublicKey != h1.PublicKey || h.OverlayIP != ip1 {
			t.Fatalf("%s: the observer's h1 is now %+v", c.name, h)
		}
	}
	// h2, with its own valid certificate, claims h1's address; the lease
	// is rewritten to h2 so the lease check alone would let it through.
	if _, err := zc.Set(ro.leasePath(ip1), []byte("h2"), -1); err != nil {
		t.Fatal(err)
	}
	node := a.write("h2", signed(t, h2claims, now, h2t))
	waitRefused(t, ro, ReasonAddress, node)
	if h, _ := hostInView(ro, "h2"); h.OverlayIP != ip2 {
		t.Fatalf("h2 took %s", h.OverlayIP)
	}
	expectQuiet(t, ro, 300*time.Millisecond)
	if _, err := zc.Set(ro.leasePath(ip1), []byte("h1"), -1); err != nil {
		t.Fatal(err)
	}

	// The highest sequence survives a restart of the observer: the
	// replay is still refused from its snapshot.
	ro.Close()
	ro2 := openTrusted(t, []string{zs.Addr()}, mesh, stateDir, obs)
	node = a.write("h1", firstRecord)
	waitRefused(t, ro2, ReasonReplay, node)
	if h, ok := hostInView(ro2, "h1"); !ok || h.PublicKey != h1.PublicKey {
		t.Fatalf("after restart the observer's h1 is %+v", h)
	}
}

// TestPermissiveAcceptsUnsignedButNoDowngrade: in permissive mode an
// unsigned host (one not yet upgraded) is accepted and listed, but a host
// that has signed cannot be replaced by an unsigned record.
func TestPermissiveAcceptsUnsignedButNoDowngrade(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	fca := newFleetCA(t)
	pool, _ := trust.NewPool(fca.ca.PEM)
	obs := fca.host(t, pool, "obs", trust.Template{})
	obs.strict.Store(false)
	ro := openTrusted(t, []string{zs.Addr()}, mesh, "", obs)
	old := open(t, []string{zs.Addr()}, mesh, "") // the previous release: no trust
	r1 := openTrusted(t, []string{zs.Addr()}, mesh, "", fca.host(t, pool, "h1", trust.Template{}))

	if _, err := old.Register(context.Background(), hostFor("legacy", "vpc", 3), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	h1 := hostFor("h1", "vpc", 1)
	if _, err := r1.Register(context.Background(), h1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, ro, 5*time.Second, "added legacy", "added h1")
	// A reader without trust reads the signed record as before.
	expect(t, old, 5*time.Second, "added legacy", "added h1")
	if h, _ := hostInView(old, "h1"); h.PublicKey != h1.PublicKey {
		t.Fatalf("untrusting reader sees h1 as %+v", h)
	}
	if u := ro.Unsigned(); !slices.Equal(u, []string{"legacy"}) {
		t.Errorf("unsigned hosts %v, want [legacy]", u)
	}
	zc, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer zc.Close()
	forged := h1
	forged.OverlayIP, forged.Schema = r1.selfLease, Schema
	k, _ := wgtypes.GeneratePrivateKey()
	forged.PublicKey = k.PublicKey()
	data, _ := json.Marshal(forged)
	node := (&attacker{t: t, c: zc, r: ro}).write("h1", data)
	waitRefused(t, ro, ReasonDowngrade, node)
	if h, _ := hostInView(ro, "h1"); h.PublicKey != h1.PublicKey {
		t.Fatalf("downgraded: %+v", h)
	}
}

// signedPair is a trusted fleet: h1 registered and seen by an observer,
// and h2's identity, not registered.
type signedPair struct {
	zs       *zkserver.Server
	pool     *trust.Pool
	h1t, h2t *hostTrust
	r1, ro   *Registry
	ip1      netip.Addr
}

func newSignedPair(t *testing.T) *signedPair {
	t.Helper()
	f := &signedPair{zs: startZK(t)}
	mesh := meshName(t)
	fca := newFleetCA(t)
	f.pool, _ = trust.NewPool(fca.ca.PEM)
	f.h1t = fca.host(t, f.pool, "h1", trust.Template{})
	f.r1 = openTrusted(t, []string{f.zs.Addr()}, mesh, "", f.h1t)
	f.h2t = fca.host(t, f.pool, "h2", trust.Template{})
	f.ro = openTrusted(t, []string{f.zs.Addr()}, mesh, "", fca.host(t, f.pool, "obs", trust.Template{}))
	var err error
	if f.ip1, err = f.r1.Register(context.Background(), hostFor("h1", "vpc", 1), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, f.ro, 5*time.Second, "added h1")
	return f
}

// TestDeletionIsNotDecommission: with trust, deleting a host's record and
// owner node in ZooKeeper is a vanish, not a decommission: peers hold it
// down, and its address stays bound, so a valid host certificate cannot
// take the address next.
func TestDeletionIsNotDecommission(t *testing.T) {
	f := newSignedPair(t)
	r1, h2t, ro, ip1 := f.r1, f.h2t, f.ro, f.ip1
	zc, _, err := zk.Connect([]string{f.zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer zc.Close()
	r1.mu.Lock()
	node := r1.selfPublished.node
	r1.mu.Unlock()
	if err := zc.Delete(node, -1); err != nil {
		t.Fatal(err)
	}
	if err := zc.Delete(ro.ownerPath("h1"), -1); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ro.Events():
		if ev.Kind != Removed || ev.Host.InstanceID != "h1" || ev.Decommissioned {
			t.Fatalf("event %v %s decommissioned=%v, want a plain removal of h1", ev.Kind, ev.Host.InstanceID, ev.Decommissioned)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no removal")
	}
	if _, err := zc.Set(ro.leasePath(ip1), []byte("h2"), -1); err != nil {
		t.Fatal(err)
	}
	h2 := hostFor("h2", "vpc", 2)
	h2.OverlayIP = ip1
	p := (&attacker{t: t, c: zc, r: ro}).write("h2", signed(t, h2, uint64(time.Now().UnixMicro()), h2t))
	waitRefused(t, ro, ReasonAddress, p)
}

// TestRevokedThenDecommissionedFreesAddress: the operator's way to retire
// a signed host (revoke its certificate, then decommission it) frees its
// address on every watcher, so the host that leases the address after the
// quarantine is believed, not refused as a thief; a decommission before
// the revocation is refused. Also for a host that left (its address still
// bound to it) before it was revoked.
func TestRevokedThenDecommissionedFreesAddress(t *testing.T) {
	for _, leftFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "live", true: "left first"}[leftFirst], func(t *testing.T) {
			f := newSignedPair(t)
			pool, h1t, r1, h2t, ro, ip1 := f.pool, f.h1t, f.r1, f.h2t, f.ro, f.ip1
			if leftFirst {
				r1.Close()
				expect(t, ro, 10*time.Second, "removed h1")
			}
			// Decommissioned first, the signed host would keep its address
			// on every peer: refused, naming the certificate, nothing written.
			serial := h1t.signer.Identity().Serial
			if err := ro.Decommission(context.Background(), "h1"); err == nil || !strings.Contains(err.Error(), serial) || !strings.Contains(err.Error(), "meshctl revoke") {
				t.Fatalf("decommission of a signed host before its revocation: %v", err)
			}
			if owner, _, err := ro.conn.Get(ro.ownerPath("h1")); err != nil || string(owner) != ip1.String() {
				t.Fatalf("owner node after the refused decommission: %q %v", owner, err)
			}
			pool.SetRevoked([]string{serial})
			dropped := make(chan []string, 1)
			go func() { dropped <- ro.DropRevoked(pool.Revoked) }()
			want := []string{"h1"}
			if leftFirst {
				want = nil // not in the view: only its address binding goes
			} else {
				expect(t, ro, 5*time.Second, "decommissioned h1")
			}
			if gone := <-dropped; !slices.Equal(gone, want) {
				t.Fatalf("dropped %v, want %v", gone, want)
			}
			if err := ro.Decommission(context.Background(), "h1"); err != nil {
				t.Fatal(err)
			}
			zc, _, err := zk.Connect([]string{f.zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
			if err != nil {
				t.Fatal(err)
			}
			defer zc.Close()
			// The quarantine is over (by hand: the test's is an hour) and
			// h2 leases the address, as claim does.
			if _, err := zc.Multi(
				&zk.SetDataRequest{Path: ro.leasePath(ip1), Data: []byte("h2"), Version: -1},
				&zk.CreateRequest{Path: ro.ownerPath("h2"), Data: []byte(ip1.String()), Acl: zk.WorldACL(zk.PermAll)},
			); err != nil {
				t.Fatal(err)
			}
			h2 := hostFor("h2", "vpc", 2)
			h2.OverlayIP = ip1
			(&attacker{t: t, c: zc, r: ro}).write("h2", signed(t, h2, uint64(time.Now().UnixMicro()), h2t))
			waitFor(t, 5*time.Second, "h2 believed at h1's old address", func() bool {
				h, ok := hostInView(ro, "h2")
				return ok && h.OverlayIP == ip1
			})
		})
	}
}
