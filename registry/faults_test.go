package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"

	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/internal/zkserver"
)

// freezer is a TCP proxy that can stop forwarding without closing, as a
// network partition does, so the server expires a client's session.
type freezer struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{l: l, target: target}
	t.Cleanup(func() { l.Close(); f.dropAll() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			frozen := f.frozen
			f.mu.Unlock()
			if frozen {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			go f.pipe(c, s)
			go f.pipe(s, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		for {
			f.mu.Lock()
			frozen := f.frozen
			f.mu.Unlock()
			if !frozen {
				break
			}
			time.Sleep(20 * time.Millisecond) // held, like a partition
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

func (f *freezer) set(frozen bool) {
	f.mu.Lock()
	f.frozen = frozen
	f.mu.Unlock()
}

func (f *freezer) dropAll() {
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
}

func (f *freezer) addr() string { return f.l.Addr().String() }

// TestSessionExpiryKeepsAddress: a partition longer than the session
// timeout expires the session; the host re-registers by itself with the
// same address, and a watcher sees at most the record's brief absence.
func TestSessionExpiryKeepsAddress(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	fz := newFreezer(t, zs.Addr())
	r, err := Open(context.Background(), Options{Servers: []string{fz.addr()}, Mesh: mesh, SessionTimeout: 2 * time.Second, Pool: testPool})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := open(t, []string{zs.Addr()}, mesh, "")
	ip, err := r.Register(context.Background(), hostFor("expiring", "vpc", 30), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w, 5*time.Second, "added expiring")
	sid := r.conn.SessionID()

	fz.set(true)
	expect(t, w, 15*time.Second, "removed expiring") // the server expired it
	fz.set(false)
	fz.dropAll() // the client reconnects and learns of the expiry
	expect(t, w, 20*time.Second, "added expiring")
	if r.conn.SessionID() == sid {
		t.Errorf("session id unchanged: expiry not exercised")
	}
	hs := w.Hosts()
	if len(hs) != 1 || hs[0].OverlayIP != ip {
		t.Errorf("after expiry: %+v, want %s", hs, ip)
	}
}

// TestLeaderKilledNoRemovals: killing the ensemble's leader removes nobody
// and changes no address.
func TestLeaderKilledNoRemovals(t *testing.T) {
	e := startEnsemble(t, zkserver.Options{})
	defer e.Stop() // at the test's end, before the registries' cleanups close them
	mesh := meshName(t)
	for i, id := range []string{"a", "b", "c"} {
		r := open(t, e.Addrs(), mesh, "")
		if _, err := r.Register(context.Background(), hostFor(id, "vpc", 40+i), 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	w := open(t, e.Addrs(), mesh, "")
	expect(t, w, 10*time.Second, "added a", "added b", "added c")
	before := map[string]netip.Addr{}
	for _, h := range w.Hosts() {
		before[h.InstanceID] = h.OverlayIP
	}
	l, err := e.Leader()
	if err != nil {
		t.Fatal(err)
	}
	l.Kill()
	expectQuiet(t, w, 8*time.Second)
	for _, h := range w.Hosts() {
		if before[h.InstanceID] != h.OverlayIP {
			t.Errorf("%s moved from %s to %s", h.InstanceID, before[h.InstanceID], h.OverlayIP)
		}
	}
	if len(w.Hosts()) != 3 {
		t.Errorf("view after leader loss: %d hosts", len(w.Hosts()))
	}
}

// TestDigestACL: with a digest secret, an anonymous client can read
// nothing of meshd's and write nothing.
func TestDigestACL(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("meshd:s3cret\n"), 0o600)
	r, err := Open(context.Background(), Options{Servers: []string{zs.Addr()}, Mesh: mesh, Pool: testPool, DigestSecretFile: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Register(context.Background(), hostFor("guarded", "vpc", 50), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	anon, _, err := zk.Connect([]string{zs.Addr()}, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	root := "/meshd/" + mesh
	if _, err := anon.Create(root+"/leases/100.100.200.1", []byte("intruder"), 0, zk.WorldACL(zk.PermAll)); err != zk.ErrNoAuth {
		t.Errorf("anonymous create under leases: %v, want not authenticated", err)
	}
	if _, _, err := anon.Children(root + "/owners"); err != zk.ErrNoAuth {
		t.Errorf("anonymous list of owners: %v, want not authenticated", err)
	}
	if _, err := anon.Set(root+"/owners/guarded", []byte("100.100.200.1"), -1); err != zk.ErrNoAuth {
		t.Errorf("anonymous rewrite of a lease owner: %v, want not authenticated", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("no-colon"), 0o600)
	if _, err := Open(context.Background(), Options{Servers: []string{zs.Addr()}, Mesh: mesh, Pool: testPool, DigestSecretFile: bad}); err == nil || !strings.Contains(err.Error(), "user:password") {
		t.Errorf("malformed secret: %v", err)
	}
}

// TestTLS: registration and watch over ZooKeeper's TLS port; a server
// whose certificate another CA signed is refused with an error that says so.
func TestTLS(t *testing.T) {
	startZK(t) // skips without ZooKeeper
	dir := t.TempDir()
	ca, caKey := makeCA(t, "meshd test CA")
	serverPEM := issue(t, ca, caKey, "zookeeper", dir, time.Now().Add(24*time.Hour))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644)
	port, _ := zkserver.FreePort()
	zs, err := zkserver.Start(context.Background(), zkserver.Options{TLS: &zkserver.TLS{CertKeyFile: serverPEM, CAFile: caFile, Port: port}})
	if err != nil {
		t.Fatal(err)
	}
	defer zs.Stop()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	mesh := meshName(t)
	tlsOpen := func(roots *x509.CertPool) *Registry {
		r, err := Open(context.Background(), Options{Servers: []string{zs.SecureAddr()}, Mesh: mesh, Pool: testPool,
			TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	a, w := tlsOpen(pool), tlsOpen(pool)
	if _, err := a.Register(context.Background(), hostFor("secure", "vpc", 60), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	expect(t, w, 10*time.Second, "added secure")

	other, _ := makeCA(t, "someone else's CA")
	wrong := x509.NewCertPool()
	wrong.AddCert(other)
	r := tlsOpen(wrong)
	_, err = r.Register(context.Background(), hostFor("fooled", "vpc", 61), 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("server signed by another CA: got %v, want an error naming the untrusted certificate", err)
	}

	// A server whose certificate has expired is refused, and the error says so.
	expiredPEM := issue(t, ca, caKey, "expired", dir, time.Now().Add(-time.Hour))
	port2, _ := zkserver.FreePort()
	zx, err := zkserver.Start(context.Background(), zkserver.Options{TLS: &zkserver.TLS{CertKeyFile: expiredPEM, CAFile: caFile, Port: port2}})
	if err != nil {
		t.Fatal(err)
	}
	defer zx.Stop()
	rx, err := Open(context.Background(), Options{Servers: []string{zx.SecureAddr()}, Mesh: mesh, Pool: testPool,
		TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	_, err = rx.Register(context.Background(), hostFor("late", "vpc", 62), 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "certificate has expired") {
		t.Errorf("expired server certificate: got %v, want an error saying it expired", err)
	}
}

func makeCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// issue writes a server certificate for 127.0.0.1 with its PKCS#8 key in
// one PEM file, as ZooKeeper's PEM key store wants.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name, dir string, notAfter time.Time) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, NotBefore: notAfter.Add(-48 * time.Hour),
		NotAfter: notAfter, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := x509.MarshalPKCS8PrivateKey(key)
	p := filepath.Join(dir, name+".pem")
	f, _ := os.Create(p)
	defer f.Close()
	pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	pem.Encode(f, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return p
}

// TestRegisterWaitHoldsOnAMuteServer: a server that takes the connection
// and never answers (a ZooKeeper stuck before creating the session) is
// waited for no longer than Register's limit: with a lease in the snapshot
// the host starts on it at once, without one it is told so. go-zookeeper's
// requests take no deadline, so the wait used to last until the client
// gave the connection up, ten receive timeouts later.
func TestRegisterWaitHoldsOnAMuteServer(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	dir := t.TempDir()
	h := hostFor("mute", "vpc", 31)
	first := open(t, []string{zs.Addr()}, mesh, dir)
	ip, err := first.Register(context.Background(), h, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // writes the snapshot, lease and all

	mute := muteServer(t)
	// A short session: the client gives a mute connection up after ten
	// receive timeouts (2/3 of it each), 6.7 s here. Both waits below are
	// well inside that.
	for _, tc := range []struct {
		dir   string
		limit time.Duration
	}{{dir, 3 * time.Second}, {t.TempDir(), 4 * time.Second}} {
		r, err := Open(context.Background(), Options{Servers: []string{mute}, Mesh: mesh,
			SessionTimeout: time.Second, Pool: testPool, Quarantine: time.Hour, StateDir: tc.dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		start := time.Now()
		got, err := r.Register(context.Background(), h, 2*time.Second)
		took := time.Since(start)
		if took > tc.limit {
			t.Errorf("Register against a mute server took %s, want at most %s", took.Round(time.Millisecond), tc.limit)
		}
		if tc.dir == dir && (err != nil || got != ip) {
			t.Errorf("with a lease in the snapshot: %v %v, want %s at once", got, err, ip)
		}
		if tc.dir != dir && (err == nil || !strings.Contains(err.Error(), "no lease in the snapshot")) {
			t.Errorf("without a snapshot: %v %v, want an error saying there is no lease to start on", got, err)
		}
	}
}

// muteServer listens on loopback, takes every connection and never reads
// or answers: a ZooKeeper stuck before creating the session.
func muteServer(t *testing.T) string {
	t.Helper()
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mute.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return mute.Addr().String()
}

// TestCloseHoldsOnAMuteServer: a stopping meshd does not wait for a server
// that took the connection and answers nothing. go-zookeeper ends the
// requests in flight only when it gives the connection up, ten receive
// timeouts later (20 s with this 3 s session, 67 s with meshd's default),
// and Close used to wait for them. The snapshot is still written.
func TestCloseHoldsOnAMuteServer(t *testing.T) {
	zs := startZK(t)
	mesh := meshName(t)
	dir := t.TempDir()
	first := open(t, []string{zs.Addr()}, mesh, dir)
	ip, err := first.Register(context.Background(), hostFor("stays", "vpc", 32), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	peer := open(t, []string{zs.Addr()}, mesh, "")
	if _, err := peer.Register(context.Background(), hostFor("peer", "vpc", 33), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both hosts in the view", func() bool { return ids(first.Hosts()) == "peer stays" })
	first.Close() // the snapshot: the peer (and itself, unless its delete came first) and the lease
	r, err := Open(context.Background(), Options{Servers: []string{muteServer(t)}, Mesh: mesh,
		SessionTimeout: 3 * time.Second, Pool: testPool, Quarantine: time.Hour, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.Close()
	if took, limit := time.Since(start), 2*closeWait+500*time.Millisecond; took > limit {
		t.Errorf("Close against a mute server took %s, want at most %s", took.Round(time.Millisecond), limit)
	}
	s, err := r.loadSnapshot()
	var saved []*Host
	for i := range s.Hosts {
		saved = append(saved, &s.Hosts[i])
	}
	if got := ids(saved); err != nil || !strings.Contains(got, "peer") || s.Lease != ip {
		t.Errorf("snapshot after Close: hosts %q, lease %s, %v; want the peer and lease %s", got, s.Lease, err, ip)
	}
}
