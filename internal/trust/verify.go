package trust

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// maxCache bounds the verified-certificate cache: well above a fleet, so
// it is only ever cleared by someone feeding it junk certificates.
const maxCache = 200_000

// Pool verifies what hosts and operators signed against the fleet CA(s).
type Pool struct {
	roots *x509.CertPool
	now   func() time.Time

	mu      sync.RWMutex
	cache   map[[32]byte]*verified
	revoked map[string]bool // serials (hex)
}

// verified is a leaf whose chain to a root was checked once.
type verified struct {
	id        Identity
	pub       crypto.PublicKey
	notBefore time.Time // latest NotBefore along the chain
	notAfter  time.Time // earliest NotAfter along the chain
}

// NewPool trusts the PEM certificates in caPEM.
func NewPool(caPEM []byte) (*Pool, error) {
	certs, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c)
	}
	return &Pool{roots: roots, now: time.Now, cache: map[[32]byte]*verified{}, revoked: map[string]bool{}}, nil
}

// LoadPool reads trust.ca_file.
func LoadPool(caFile string) (*Pool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("trust.ca_file: %w", err)
	}
	p, err := NewPool(data)
	if err != nil {
		return nil, fmt.Errorf("trust.ca_file %s: %w", caFile, err)
	}
	return p, nil
}

// SetRevoked replaces the revoked serials (from a verified revocation list).
func (p *Pool) SetRevoked(serials []string) {
	m := make(map[string]bool, len(serials))
	for _, s := range serials {
		m[normalSerial(s)] = true
	}
	p.mu.Lock()
	p.revoked = m
	p.mu.Unlock()
}

// RevokedCount is how many serials the revocation list holds.
func (p *Pool) RevokedCount() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.revoked)
}

// Revoked reports whether a serial is on the revocation list.
func (p *Pool) Revoked(serial string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.revoked[normalSerial(serial)]
}

// normalSerial writes a hex serial as SerialOf does: upper case, no
// leading zeros or colons (openssl pads and may separate bytes).
func normalSerial(s string) string {
	s = strings.ToUpper(strings.ReplaceAll(s, ":", ""))
	if t := strings.TrimLeft(s, "0"); t != "" {
		return t
	}
	return s
}

// VerifyRecord checks a host record's signature: by the leaf of chain (DER,
// leaf first), which chains to the CA, is valid now, is not revoked and is
// a host certificate.
func (p *Pool) VerifyRecord(payload, sig []byte, chain [][]byte) (Identity, error) {
	id, err := p.verify(domainRecord, payload, sig, chain)
	if err == nil && id.Operator {
		return id, refuse(ReasonRole, "certificate %s of %s is an operator's, not a host's", id.Serial, id.InstanceID)
	}
	return id, err
}

// VerifyDocument checks a fleet document's signature: as VerifyRecord, by
// an operator certificate (URI SAN meshd:role:operator).
func (p *Pool) VerifyDocument(payload, sig []byte, chain [][]byte) (Identity, error) {
	id, err := p.verify(domainDocument, payload, sig, chain)
	if err == nil && !id.Operator {
		return id, refuse(ReasonRole, "certificate %s of %s has no %s:%s:%s", id.Serial, id.InstanceID, uriScheme, kindRole, roleOp)
	}
	return id, err
}

func (p *Pool) verify(domain string, payload, sig []byte, chain [][]byte) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, refuse(ReasonCertificate, "no certificate")
	}
	v, err := p.chain(chain)
	if err != nil {
		return Identity{}, err
	}
	now := p.now()
	if now.After(v.notAfter) {
		return v.id, refuse(ReasonExpired, "certificate %s of %s expired at %s", v.id.Serial, v.id.InstanceID, v.notAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(v.notBefore) {
		return v.id, refuse(ReasonExpired, "certificate %s of %s is not valid before %s", v.id.Serial, v.id.InstanceID, v.notBefore.UTC().Format(time.RFC3339))
	}
	if p.Revoked(v.id.Serial) {
		return v.id, refuse(ReasonRevoked, "certificate %s of %s is revoked", v.id.Serial, v.id.InstanceID)
	}
	if !verifySig(v.pub, domain, payload, sig) {
		return v.id, refuse(ReasonSignature, "signature does not match certificate %s of %s", v.id.Serial, v.id.InstanceID)
	}
	return v.id, nil
}

// chain returns the verified leaf, from the cache or by checking the chain
// once. Validity dates are left to the caller, at every use.
func (p *Pool) chain(chain [][]byte) (*verified, error) {
	fp := sha256.Sum256(chain[0])
	p.mu.RLock()
	v, ok := p.cache[fp]
	p.mu.RUnlock()
	if ok {
		return v, nil
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, refuse(ReasonCertificate, "parse: %v", err)
	}
	if err := checkKey(leaf.PublicKey); err != nil {
		return nil, refuse(ReasonCertificate, "certificate %s: %v", SerialOf(leaf), err)
	}
	inter := x509.NewCertPool()
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, refuse(ReasonCertificate, "intermediate: %v", err)
		}
		inter.AddCert(c)
	}
	// Checked now; the cached result is asked again about its dates at
	// every use, so it expires on time.
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: inter,
		CurrentTime: p.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		var ua x509.UnknownAuthorityError
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(err, &ua):
			return nil, refuse(ReasonUnknownCA, "certificate %s (CN %q) does not chain to the fleet CA", SerialOf(leaf), leaf.Subject.CommonName)
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return nil, refuse(ReasonExpired, "certificate %s (CN %q): %v", SerialOf(leaf), leaf.Subject.CommonName, inv.Detail)
		}
		return nil, refuse(ReasonCertificate, "certificate %s (CN %q): %v", SerialOf(leaf), leaf.Subject.CommonName, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, refuse(ReasonCertificate, "%v", err)
	}
	v = &verified{id: id, pub: leaf.PublicKey, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, c := range chains[0][1:] {
		if c.NotAfter.Before(v.notAfter) {
			v.notAfter = c.NotAfter
		}
		if c.NotBefore.After(v.notBefore) {
			v.notBefore = c.NotBefore
		}
	}
	v.id.NotAfter = v.notAfter
	p.mu.Lock()
	if len(p.cache) >= maxCache {
		p.cache = map[[32]byte]*verified{}
	}
	p.cache[fp] = v
	p.mu.Unlock()
	return v, nil
}
