package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"sync"
	"time"
)

// Signer signs with an identity key under a certificate that may be
// renewed in place: Reload picks up a new trust.cert_file without a
// restart.
type Signer struct {
	keyFile, certFile string
	pool              *Pool
	key               crypto.Signer

	mu      sync.Mutex
	certPEM []byte
	chain   [][]byte
	id      Identity
}

// LoadSigner reads the identity key and the certificate file (leaf first,
// then any intermediates) and checks that they belong together and that
// the certificate chains to pool's CA: a host must not start signing
// records its peers will refuse without saying so.
func LoadSigner(keyFile, certFile string, pool *Pool) (*Signer, error) {
	key, err := LoadKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("trust.key_file: %w", err)
	}
	s := &Signer{keyFile: keyFile, certFile: certFile, pool: pool, key: key}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the certificate file; changed is false when it is the
// same. A certificate that does not fit the key or the CA is refused and
// the previous one is kept. With a nil pool (LoadSigner for an operator
// without the CA at hand) the certificate is not checked against a CA.
func (s *Signer) Reload() (changed bool, err error) {
	data, err := os.ReadFile(s.certFile)
	if err != nil {
		return false, fmt.Errorf("trust.cert_file: %w", err)
	}
	s.mu.Lock()
	same := bytes.Equal(data, s.certPEM)
	s.mu.Unlock()
	if same {
		return false, nil
	}
	if err := s.install(data); err != nil {
		return false, fmt.Errorf("trust.cert_file %s: %w", s.certFile, err)
	}
	return true, nil
}

// NewSigner signs with key under certPEM, without files: for tools,
// tests and benchmarks.
func NewSigner(key crypto.Signer, certPEM []byte, pool *Pool) (*Signer, error) {
	s := &Signer{key: key, pool: pool, keyFile: "the key"}
	return s, s.install(certPEM)
}

// install checks a certificate (chain) against the key and the CA and
// makes it the one signatures carry.
func (s *Signer) install(data []byte) error {
	certs, err := parseCertsPEM(data)
	if err != nil {
		return err
	}
	if !publicKeysEqual(certs[0].PublicKey, s.key.Public()) {
		return fmt.Errorf("certificate %s is not for the key in %s", SerialOf(certs[0]), s.keyFile)
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	if s.pool == nil {
		// An operator's machine may not hold the CA: hosts check it.
		id, err := IdentityOf(certs[0])
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.certPEM, s.chain, s.id = data, chain, id
		s.mu.Unlock()
		return nil
	}
	// Check it the way peers will: sign something and verify it.
	verify, domain := s.pool.VerifyRecord, domainRecord
	if isOperator(certs[0]) {
		verify, domain = s.pool.VerifyDocument, domainDocument
	}
	probe := []byte("meshd self-check")
	sig, err := sign(s.key, domain, probe)
	if err != nil {
		return err
	}
	id, err := verify(probe, sig, chain)
	if err != nil {
		return fmt.Errorf("peers would refuse it: %w", err)
	}
	s.mu.Lock()
	s.certPEM, s.chain, s.id = data, chain, id
	s.mu.Unlock()
	return nil
}

// Identity is what this signer's certificate says.
func (s *Signer) Identity() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// SignRecord signs a host record's bytes.
func (s *Signer) SignRecord(payload []byte) (sig []byte, chain [][]byte, err error) {
	return s.signAs(domainRecord, payload)
}

// SignDocument signs a fleet document's bytes (operator certificates).
func (s *Signer) SignDocument(payload []byte) (sig []byte, chain [][]byte, err error) {
	return s.signAs(domainDocument, payload)
}

func (s *Signer) signAs(domain string, payload []byte) ([]byte, [][]byte, error) {
	s.mu.Lock()
	chain := s.chain
	s.mu.Unlock()
	sig, err := sign(s.key, domain, payload)
	return sig, chain, err
}

// zkDigestInfo separates the ZooKeeper password from any other use of the
// identity key's bytes.
const zkDigestInfo = "meshd zookeeper digest v1\n"

// ZKPassword is this host's password for ZooKeeper's digest scheme as
// user, derived from the identity key (HKDF-SHA256): the host proves the
// same key to ZooKeeper that it signs its records with, and nobody has a
// new secret to distribute. The same key and user give the same password
// on every start; another key cannot compute it.
func (s *Signer) ZKPassword(user string) (string, error) {
	var secret []byte
	switch k := s.key.(type) {
	case ed25519.PrivateKey:
		secret = k.Seed()
	case *ecdsa.PrivateKey:
		b, err := k.Bytes()
		if err != nil {
			return "", fmt.Errorf("zookeeper password: %w", err)
		}
		secret = b
	default:
		// A key held elsewhere (an HSM) does not show its bytes.
		return "", fmt.Errorf("zookeeper password: identity key %T does not expose its bytes", s.key)
	}
	pw, err := hkdf.Key(sha256.New, secret, nil, zkDigestInfo+user, 32)
	if err != nil {
		return "", fmt.Errorf("zookeeper password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(pw), nil
}

// Expiry is when the certificate (or its chain) stops being valid.
func (s *Signer) Expiry() time.Time { return s.Identity().NotAfter }

func isOperator(c *x509.Certificate) bool {
	for _, u := range c.URIs {
		if k, v, ok := meshdURI(u); ok && k == kindRole && v == roleOp {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
