package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) (*CA, *Pool) {
	t.Helper()
	ca, err := InitCA(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := NewPool(ca.PEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca, pool
}

// hostSigner provisions a host the documented way: key file, CSR, signed
// by the CA with the signer's choice of groups and network.
func hostSigner(t *testing.T, ca *CA, pool *Pool, id string, tmpl Template) *Signer {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "identity.key")
	key, err := LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := CSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignCSR(csr, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "host.crt")
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(keyFile, certFile, pool)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reason(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return "not a refusal: " + err.Error()
}

func TestHostCertificateSaysWhoAndWhat(t *testing.T) {
	ca, pool := newCA(t)
	s := hostSigner(t, ca, pool, "h1", Template{Groups: []string{"web", "db"}, Network: "vpc"})
	payload := []byte(`{"instance_id":"h1"}`)
	sig, chain, err := s.SignRecord(payload)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pool.VerifyRecord(payload, sig, chain)
	if err != nil {
		t.Fatalf("own record refused: %v", err)
	}
	if id.InstanceID != "h1" || id.Network != "vpc" || strings.Join(id.Groups, ",") != "web,db" || id.Operator {
		t.Errorf("identity = %+v", id)
	}
	// The bytes signed are the bytes checked: one byte off, refused.
	if _, err := pool.VerifyRecord([]byte(`{"instance_id":"h2"}`), sig, chain); reason(err) != ReasonSignature {
		t.Errorf("changed payload: %v", err)
	}
	// A record signature is no document signature.
	if _, err := pool.VerifyDocument(payload, sig, chain); err == nil {
		t.Error("host record signature accepted as a document")
	}
}

func TestRefusals(t *testing.T) {
	ca, pool := newCA(t)
	other, _ := newCA(t)
	payload := []byte("record")
	signWith := func(ca *CA, tmpl Template) ([]byte, [][]byte) {
		key, _, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := ca.Issue(key.Public(), "h1", tmpl)
		if err != nil {
			t.Fatal(err)
		}
		certs, _ := parseCertsPEM(certPEM)
		sig, _ := sign(key, domainRecord, payload)
		return sig, [][]byte{certs[0].Raw}
	}
	sig, chain := signWith(other, Template{})
	if _, err := pool.VerifyRecord(payload, sig, chain); reason(err) != ReasonUnknownCA {
		t.Errorf("another CA: %v", err)
	}
	sig, chain = signWith(ca, Template{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if _, err := pool.VerifyRecord(payload, sig, chain); reason(err) != ReasonExpired {
		t.Errorf("expired: %v", err)
	}
	sig, chain = signWith(ca, Template{})
	if _, err := pool.VerifyRecord(payload, sig, chain); err != nil {
		t.Fatalf("valid: %v", err)
	}
	id, _ := pool.VerifyRecord(payload, sig, chain)
	pool.SetRevoked([]string{id.Serial})
	if _, err := pool.VerifyRecord(payload, sig, chain); reason(err) != ReasonRevoked {
		t.Errorf("revoked (cached certificate): %v", err)
	}
	sig, chain = signWith(ca, Template{Operator: true})
	if _, err := pool.VerifyRecord(payload, sig, chain); reason(err) != ReasonRole {
		t.Errorf("operator certificate on a record: %v", err)
	}
	if _, err := pool.VerifyRecord(payload, sig, nil); reason(err) != ReasonCertificate {
		t.Errorf("no chain: %v", err)
	}
}

// A cached certificate still expires on time.
func TestCachedCertificateExpires(t *testing.T) {
	ca, pool := newCA(t)
	key, _, _ := NewKey()
	certPEM, err := ca.Issue(key.Public(), "h1", Template{NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := parseCertsPEM(certPEM)
	sig, _ := sign(key, domainRecord, []byte("x"))
	chain := [][]byte{certs[0].Raw}
	if _, err := pool.VerifyRecord([]byte("x"), sig, chain); err != nil {
		t.Fatal(err)
	}
	pool.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := pool.VerifyRecord([]byte("x"), sig, chain); reason(err) != ReasonExpired {
		t.Errorf("after expiry: %v", err)
	}
}

func TestOperatorDocuments(t *testing.T) {
	ca, pool := newCA(t)
	op := hostSigner(t, ca, pool, "alice", Template{Operator: true})
	doc := []byte(`{"rules":[]}`)
	sig, chain, _ := op.SignDocument(doc)
	id, err := pool.VerifyDocument(doc, sig, chain)
	if err != nil || !id.Operator || id.InstanceID != "alice" {
		t.Fatalf("operator document: %+v %v", id, err)
	}
	host := hostSigner(t, ca, pool, "h1", Template{})
	sig, chain, _ = host.SignDocument(doc)
	if _, err := pool.VerifyDocument(doc, sig, chain); reason(err) != ReasonRole {
		t.Errorf("host-signed document: %v", err)
	}
}

// The signer, not the request, decides groups and network: SANs a CSR
// asks for are not copied.
func TestSignCSRIgnoresRequestedSANs(t *testing.T) {
	ca, pool := newCA(t)
	key, _, _ := NewKey()
	csr, _ := CSR(key, "h1")
	certPEM, err := ca.SignCSR(csr, Template{Groups: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := parseCertsPEM(certPEM)
	id, err := IdentityOf(certs[0])
	if err != nil || id.InstanceID != "h1" || strings.Join(id.Groups, ",") != "web" || id.Network != "" {
		t.Errorf("identity %+v %v", id, err)
	}
	_ = pool
	if _, err := ca.SignCSR([]byte("junk"), Template{}); err == nil {
		t.Error("junk CSR signed")
	}
}

func TestIdentityKeyFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "identity.key")
	k1, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(p)
	if err != nil || !publicKeysEqual(k1.Public(), k2.Public()) {
		t.Fatalf("second load gave another key: %v", err)
	}
	os.Chmod(p, 0o644)
	if _, err := LoadOrCreateKey(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
}

// ECDSA P-256 keys from an existing PKI sign and verify too.
func TestECDSAKey(t *testing.T) {
	ca, pool := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certPEM, err := ca.Issue(key.Public(), "h1", Template{})
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := parseCertsPEM(certPEM)
	sig, err := sign(key, domainRecord, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.VerifyRecord([]byte("x"), sig, [][]byte{certs[0].Raw}); err != nil {
		t.Error(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := ca.Issue(p384.Public(), "h1", Template{}); err == nil {
		t.Error("P-384 key certified")
	}
}

// Renewal in place: a new certificate for the same key is picked up; one
// for another key is refused and the old one kept.
func TestSignerReload(t *testing.T) {
	ca, pool := newCA(t)
	s := hostSigner(t, ca, pool, "h1", Template{Groups: []string{"web"}})
	cert, _ := ca.Issue(s.key.Public(), "h1", Template{Groups: []string{"web", "db"}})
	os.WriteFile(s.certFile, cert, 0o644)
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("renewal: changed=%v %v", changed, err)
	}
	if g := strings.Join(s.Identity().Groups, ","); g != "web,db" {
		t.Errorf("groups after renewal %s", g)
	}
	if changed, err := s.Reload(); err != nil || changed {
		t.Errorf("same file again: changed=%v %v", changed, err)
	}
	other, _, _ := NewKey()
	wrong, _ := ca.Issue(other.Public(), "h1", Template{})
	os.WriteFile(s.certFile, wrong, 0o644)
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "not for the key") {
		t.Errorf("certificate for another key: %v", err)
	}
	if g := strings.Join(s.Identity().Groups, ","); g != "web,db" {
		t.Errorf("kept groups %s", g)
	}
}

func TestSealedDocuments(t *testing.T) {
	ca, pool := newCA(t)
	op := hostSigner(t, ca, pool, "alice", Template{Operator: true})
	doc := []byte(`{"rules":[{"to":"db","from":"web","ports":["tcp/5432"]}]}`)
	sealed, err := SealDocument(op, "policy", doc)
	if err != nil {
		t.Fatal(err)
	}
	got, id, err := pool.OpenDocument("policy", sealed)
	if err != nil || string(got) != string(doc) || id.InstanceID != "alice" {
		t.Fatalf("open: %q %+v %v", got, id, err)
	}
	if _, _, err := pool.OpenDocument("links", sealed); reason(err) != ReasonDocName {
		t.Errorf("policy stored as links: %v", err)
	}
	if _, _, err := pool.OpenDocument("policy", doc); reason(err) != ReasonUnsignedDoc {
		t.Errorf("unsigned: %v", err)
	}
	tampered := strings.Replace(string(sealed), `"doc":"`, `"doc":"e30`, 1)
	if _, _, err := pool.OpenDocument("policy", []byte(tampered)); err == nil {
		t.Error("tampered document opened")
	}
	host := hostSigner(t, ca, pool, "h1", Template{})
	if _, err := SealDocument(host, "policy", doc); err == nil {
		t.Error("a host certificate sealed a document")
	}
	if inner, ok := Unseal(sealed); !ok || string(inner) != string(doc) {
		t.Errorf("unseal: %q %v", inner, ok)
	}
}

// The ZooKeeper password is the key's: the same on every load of the key
// file, different for another user or another key, Ed25519 or P-256.
func TestZKPassword(t *testing.T) {
	ca, pool := newCA(t)
	s1 := hostSigner(t, ca, pool, "h1", Template{})
	s2 := hostSigner(t, ca, pool, "h1", Template{})
	again, err := LoadSigner(s1.keyFile, s1.certFile, pool)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert, err := ca.Issue(ecKey.Public(), "h1", Template{})
	if err != nil {
		t.Fatal(err)
	}
	ec, err := NewSigner(ecKey, ecCert, pool)
	if err != nil {
		t.Fatal(err)
	}
	pw := func(s *Signer, user string) string {
		t.Helper()
		p, err := s.ZKPassword(user)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) < 40 {
			t.Fatalf("password %q: want 256 bits", p)
		}
		return p
	}
	base := pw(s1, "meshd-host-h1")
	if pw(again, "meshd-host-h1") != base {
		t.Error("the same key file gave another password")
	}
	for name, other := range map[string]string{
		"another user": pw(s1, "meshd-host-h2"),
		"another key":  pw(s2, "meshd-host-h1"),
		"a P-256 key":  pw(ec, "meshd-host-h1"),
	} {
		if other == base {
			t.Errorf("%s gave the same password", name)
		}
	}
	ec2, err := NewSigner(ecKey, ecCert, pool)
	if err != nil {
		t.Fatal(err)
	}
	if pw(ec2, "meshd-host-h1") != pw(ec, "meshd-host-h1") {
		t.Error("P-256: the same key gave another password")
	}
}
