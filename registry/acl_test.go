package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/trust"
)

// digestTrust is hostTrust with the daemon's HostDigest capability: the
// registry then gives the host's own nodes a per-host ACL.
type digestTrust struct{ *hostTrust }

func (d digestTrust) ZKPassword(user string) (string, error) { return d.signer.ZKPassword(user) }

// waitUntil polls cond until it holds or five seconds pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHostACL: with trust, a host's lease, owner node and records are its
// own in ZooKeeper too. A client holding the fleet's digest secret - every
// host holds it - and another host's own session can read them but not
// rewrite them or their ACL; the host itself can, and keeps renewing its
// record, rotating its key and its lease across a restart; a decommission
// made through another host (as meshctl's is) still works.
func TestHostACL(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("meshd:s3cret\n"), 0o600)
	fca := newFleetCA(t)
	pool, _ := trust.NewPool(fca.ca.PEM)
	open := func(tr Trust) *Registry {
		r, err := Open(context.Background(), Options{Servers: []string{zs.Addr()}, Mesh: mesh, SessionTimeout: 4 * time.Second,
			Pool: testPool, Quarantine: time.Hour, DigestSecretFile: secret, Trust: tr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	h1t := digestTrust{fca.host(t, pool, "h1", trust.Template{Network: "vpc"})}
	r1 := open(h1t)
	r2 := open(digestTrust{fca.host(t, pool, "h2", trust.Template{Network: "vpc"})})
	h1 := hostFor("h1", "vpc", 1)
	ip1, err := r1.Register(context.Background(), h1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Register(context.Background(), hostFor("h2", "vpc", 2), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	selfNode := func(r *Registry) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.selfPublished.node
	}
	waitUntil(t, "h2 sees h1", func() bool { _, ok := hostInView(r2, "h1"); return ok })
	record := selfNode(r1)

	fleet, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	if err := fleet.AddAuth("digest", []byte("meshd:s3cret")); err != nil {
		t.Fatal(err)
	}
	own := []string{r1.leasePath(ip1), r1.ownerPath("h1"), record}
	for _, p := range own {
		if _, _, err := fleet.Get(p); err != nil {
			t.Errorf("fleet credential reads %s: %v", p, err)
		}
		if _, err := fleet.Set(p, []byte("h2"), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("fleet credential rewrites h1's %s: %v, want not authenticated", p, err)
		}
		if _, err := fleet.SetACL(p, zk.WorldACL(zk.PermAll), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("fleet credential opens h1's %s: %v, want not authenticated", p, err)
		}
		if _, err := r2.conn.Set(p, []byte("h2"), -1); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("h2 rewrites h1's %s: %v, want not authenticated", p, err)
		}
		acl, _, err := fleet.GetACL(p)
		if err != nil || len(acl) != 2 || !strings.HasPrefix(acl[0].ID, "meshd-host-h1:") || acl[0].Perms != zk.PermAll || acl[1].Perms != zk.PermRead {
			t.Errorf("ACL of %s: %+v %v, want h1 all, the fleet read", p, acl, err)
		}
	}
	// h1 itself may write its own nodes.
	if _, err := r1.conn.Set(r1.leasePath(ip1), []byte("h1"), -1); err != nil {
		t.Errorf("h1 rewrites its own lease: %v", err)
	}

	// Key rotation: a new record node from h1, the old one removed by h1.
	k, _ := wgtypes.GeneratePrivateKey()
	h1.PublicKey = k.PublicKey()
	r1.UpdateSelf(h1)
	waitUntil(t, "h2 sees h1's new key", func() bool { h, _ := hostInView(r2, "h1"); return h.PublicKey == h1.PublicKey })
	if ok, _, _ := fleet.Exists(record); ok {
		t.Errorf("h1's old record %s is still there", record)
	}
	if _, err := fleet.Set(selfNode(r1), []byte("h2"), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("fleet credential rewrites h1's new record: %v, want not authenticated", err)
	}

	// A restart: a new session with the same key finds the same lease and
	// can still write it.
	r1.Close()
	r1 = open(h1t)
	if ip, err := r1.Register(context.Background(), h1, 10*time.Second); err != nil || ip != ip1 {
		t.Fatalf("h1 after a restart: %v %v, want %v", ip, err, ip1)
	}
	if _, err := r1.conn.Set(r1.leasePath(ip1), []byte("h1"), -1); err != nil {
		t.Errorf("h1 after a restart rewrites its own lease: %v", err)
	}

	// An operator revokes h1's certificate and decommissions h1 through
	// h2's meshd.
	pool.SetRevoked([]string{h1t.signer.Identity().Serial})
	if err := r2.Decommission(context.Background(), "h1"); err != nil {
		t.Fatalf("decommission h1 through h2: %v", err)
	}
	data, _, err := fleet.Get(r1.leasePath(ip1))
	if err != nil || !strings.HasPrefix(string(data), quarantinePrefix) {
		t.Errorf("h1's lease after the decommission: %q %v, want quarantined", data, err)
	}
	if ok, _, _ := fleet.Exists(r1.ownerPath("h1")); ok {
		t.Error("h1's owner node survived its decommission")
	}
}
