package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net/url"
	"testing"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// rootCA is a hand-made root: the shapes InitCA never makes are the ones
// the fast path must leave to x509.
type rootCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func makeRoot(t *testing.T, name string, key crypto.Signer, edit func(*x509.Certificate)) rootCA {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("root %s: %v", name, err)
	}
	c, _ := x509.ParseCertificate(der)
	return rootCA{c, key}
}

func edKey(t *testing.T) crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func makeLeaf(t *testing.T, issuer rootCA, edit func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "h1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 1, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{uri(kindHost, "h1"), uri(kindGroup, "web")},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.cert, edKey(t).Public(), issuer.key)
	if err != nil {
		t.Fatalf("leaf: %v", err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func poolOf(t *testing.T, roots ...rootCA) *Pool {
	t.Helper()
	var data []byte
	for _, r := range roots {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw})...)
	}
	p, err := NewPool(data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The fast path (curve25519-voi, no chain builder) must never accept what
// x509.Certificate.Verify refuses, and must give the same verdict and
// refusal reason for every shape of chain. Each case also names whether the
// fast path should be the one deciding, so a fast path that silently never
// runs fails here too.
func TestDirectLeafAgreesWithX509(t *testing.T) {
	good := makeRoot(t, "fleet CA", edKey(t), nil)
	impostor := makeRoot(t, "fleet CA", edKey(t), nil) // same name, other key
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecRoot := makeRoot(t, "ec CA", ecKey, nil)
	notCA := makeRoot(t, "not a CA", edKey(t), func(c *x509.Certificate) { c.IsCA = false })
	noCertSign := makeRoot(t, "no certsign", edKey(t), func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	expiredRoot := makeRoot(t, "expired CA", edKey(t), func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().AddDate(-2, 0, 0), time.Now().AddDate(-1, 0, 0)
	})
	constrained := makeRoot(t, "constrained CA", edKey(t), func(c *x509.Certificate) { c.PermittedURIDomains = []string{"example.org"} })
	unknownExt := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Critical: true, Value: []byte{5, 0}}

	cases := []struct {
		name   string
		pool   []rootCA
		leaf   *x509.Certificate
		accept bool
		fast   bool // the fast path decides (accepts)
	}{
		{"leaf of the fleet CA", []rootCA{good}, makeLeaf(t, good, nil), true, true},
		{"two roots of one name, leaf of the second", []rootCA{impostor, good}, makeLeaf(t, good, nil), true, true},
		{"leaf of an impostor of the same name", []rootCA{good}, makeLeaf(t, impostor, nil), false, false},
		{"expired leaf", []rootCA{good}, makeLeaf(t, good, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
		}), false, false},
		{"leaf not yet valid", []rootCA{good}, makeLeaf(t, good, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(time.Hour)
		}), false, false},
		{"leaf with an unknown critical extension", []rootCA{good}, makeLeaf(t, good, func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{unknownExt}
		}), false, false},
		{"leaf with a policy", []rootCA{good}, makeLeaf(t, good, func(c *x509.Certificate) {
			oid, _ := x509.OIDFromInts([]uint64{1, 3, 6, 1, 4, 1, 55555, 2})
			c.Policies = []x509.OID{oid}
		}), true, false},
		{"leaf that is itself a CA", []rootCA{good}, makeLeaf(t, good, func(c *x509.Certificate) {
			c.IsCA, c.BasicConstraintsValid = true, true
		}), true, true},
		{"leaf of an ECDSA root", []rootCA{ecRoot}, makeLeaf(t, ecRoot, nil), true, false},
		{"leaf of a root that is not a CA", []rootCA{notCA}, makeLeaf(t, notCA, nil), false, false},
		{"leaf of a root without certSign", []rootCA{noCertSign}, makeLeaf(t, noCertSign, nil), false, false},
		{"leaf of an expired root", []rootCA{expiredRoot}, makeLeaf(t, expiredRoot, nil), false, false},
		{"leaf of a name-constrained root", []rootCA{constrained}, makeLeaf(t, constrained, nil), false, false},
		{"the root itself", []rootCA{good}, good.cert, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fast := poolOf(t, c.pool...)
			slow := poolOf(t, c.pool...)
			slow.direct = nil // x509 alone

			_, took := fast.directLeaf(c.leaf, 1)
			if took != c.fast {
				t.Errorf("fast path decided: %v, want %v", took, c.fast)
			}
			chain := [][]byte{c.leaf.Raw}
			vf, errF := fast.chain(chain)
			vs, errS := slow.chain(chain)
			if (errF == nil) != c.accept {
				t.Errorf("verdict %v, want accept=%v", errF, c.accept)
			}
			if (errF == nil) != (errS == nil) || (errF != nil && reason(errF) != reason(errS)) {
				t.Fatalf("fast path says %v, x509 says %v", errF, errS)
			}
			if errF == nil && (vf.id.InstanceID != vs.id.InstanceID || !vf.notAfter.Equal(vs.notAfter) ||
				!vf.notBefore.Equal(vs.notBefore) || len(vf.id.Groups) != len(vs.id.Groups)) {
				t.Errorf("fast path verified %+v, x509 %+v", vf, vs)
			}
		})
	}

	// A tampered signature under the fleet CA: refused by both.
	leaf := makeLeaf(t, good, nil)
	der := append([]byte(nil), leaf.Raw...)
	der[len(der)-1] ^= 1 // the signature is the DER's last field
	tampered, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := poolOf(t, good)
	if _, ok := p.directLeaf(tampered, 1); ok {
		t.Error("fast path accepted a tampered signature")
	}
	if _, err := p.chain([][]byte{der}); reason(err) != ReasonUnknownCA {
		t.Errorf("tampered signature: %v, want %s", err, ReasonUnknownCA)
	}
	// With an intermediate in the chain, x509 decides.
	if _, ok := p.directLeaf(leaf, 2); ok {
		t.Error("fast path took a two-certificate chain")
	}
}

// BenchmarkEd25519Verify is why verifySig and the fast path use
// curve25519-voi: one record-sized verification by crypto/ed25519, by voi,
// and by voi against a key expanded once (the fleet CA's, on every leaf).
//
//	go test -run '^$' -bench Ed25519Verify ./internal/trust
func BenchmarkEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 400)
	rand.Read(msg)
	sig := ed25519.Sign(priv, msg)
	exp, _ := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	b.Run("crypto-ed25519", func(b *testing.B) {
		for range b.N {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("voi", func(b *testing.B) {
		for range b.N {
			if !voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlibRules) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("voi-expanded", func(b *testing.B) {
		for range b.N {
			if !voi.VerifyExpandedWithOptions(exp, msg, sig, stdlibRules) {
				b.Fatal("refused")
			}
		}
	})
}
