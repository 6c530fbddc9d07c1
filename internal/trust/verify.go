package trust

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// maxCache bounds the verified-certificate cache: well above a fleet, so
// it is only ever cleared by someone feeding it junk certificates.
const maxCache = 200_000

// Pool verifies what hosts and operators signed against the fleet CA(s).
type Pool struct {
	roots  *x509.CertPool
	direct []directRoot // roots whose leaves may take the fast path
	now    func() time.Time

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
	var direct []directRoot
	for _, c := range certs {
		roots.AddCert(c)
		if d, ok := newDirectRoot(c); ok {
			direct = append(direct, d)
		}
	}
	return &Pool{roots: roots, direct: direct, now: time.Now, cache: map[[32]byte]*verified{}, revoked: map[string]bool{}}, nil
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
	if v, ok := p.directLeaf(leaf, len(chain)); ok {
		p.remember(fp, v)
		return v, nil
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
	p.remember(fp, v)
	return v, nil
}

func (p *Pool) remember(fp [32]byte, v *verified) {
	p.mu.Lock()
	if len(p.cache) >= maxCache {
		p.cache = map[[32]byte]*verified{}
	}
	p.cache[fp] = v
	p.mu.Unlock()
}

// directRoot is a fleet root whose leaves chain() may accept without
// x509's chain builder: an Ed25519 CA with nothing x509 would weigh beyond
// its dates and its signature (no name or policy constraints, no unknown
// critical extension). meshctl ca init makes such roots.
//
// Why: on a host's first sync every member's certificate is new, and the
// CA's signature on it is half the CPU of believing the fleet (issue 22:
// 10 000 records in at most 2 s of CPU). x509 checks it with crypto/ed25519;
// the fast path checks it with curve25519-voi against the root's key
// expanded once, about twice as fast (bench/PROFILES.md).
//
// The fast path only ever accepts: anything it does not accept, refusals
// included, goes to x509.Certificate.Verify, so every refusal and every
// unusual chain keeps x509's answer. TestDirectLeafAgreesWithX509 holds the
// two to the same verdict case by case.
type directRoot struct {
	cert *x509.Certificate
	key  *voi.ExpandedPublicKey
}

func newDirectRoot(c *x509.Certificate) (directRoot, bool) {
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok || !c.BasicConstraintsValid || !c.IsCA ||
		(c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0) ||
		len(c.UnhandledCriticalExtensions) > 0 || hasConstraints(c) {
		return directRoot{}, false
	}
	key, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return directRoot{}, false
	}
	return directRoot{cert: c, key: key}, true
}

// hasConstraints: name constraints or policy processing that x509 applies
// along a chain. Roots and leaves with any of them take x509's path.
func hasConstraints(c *x509.Certificate) bool {
	return c.PermittedDNSDomainsCritical || len(c.PermittedDNSDomains) > 0 || len(c.ExcludedDNSDomains) > 0 ||
		len(c.PermittedIPRanges) > 0 || len(c.ExcludedIPRanges) > 0 ||
		len(c.PermittedEmailAddresses) > 0 || len(c.ExcludedEmailAddresses) > 0 ||
		len(c.PermittedURIDomains) > 0 || len(c.ExcludedURIDomains) > 0 ||
		len(c.PolicyIdentifiers) > 0 || len(c.Policies) > 0 || len(c.PolicyMappings) > 0 ||
		c.RequireExplicitPolicy > 0 || c.RequireExplicitPolicyZero ||
		c.InhibitPolicyMapping > 0 || c.InhibitPolicyMappingZero ||
		c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero
}

// directLeaf accepts a leaf (sent alone) that one of the direct roots
// signed, both valid now: exactly what x509.Certificate.Verify would accept
// for a leaf directly under a root with no constraints, asked with
// ExtKeyUsageAny. Anything else reports false and is left to x509.
func (p *Pool) directLeaf(leaf *x509.Certificate, chainLen int) (*verified, bool) {
	if chainLen != 1 || leaf.SignatureAlgorithm != x509.PureEd25519 ||
		len(leaf.UnhandledCriticalExtensions) > 0 || hasConstraints(leaf) {
		return nil, false
	}
	now := p.now()
	for _, r := range p.direct {
		if !bytes.Equal(leaf.RawIssuer, r.cert.RawSubject) {
			continue
		}
		if bytes.Equal(leaf.RawSubject, r.cert.RawSubject) && bytes.Equal(leaf.RawSubjectPublicKeyInfo, r.cert.RawSubjectPublicKeyInfo) {
			return nil, false // the root itself, or a copy of it: x509's loop rules apply
		}
		if !validAt(leaf, now) || !validAt(r.cert, now) {
			return nil, false // x509 names the date that fails
		}
		if !voi.VerifyExpandedWithOptions(r.key, leaf.RawTBSCertificate, leaf.Signature, stdlibRules) {
			continue
		}
		id, err := IdentityOf(leaf)
		if err != nil {
			return nil, false
		}
		v := &verified{id: id, pub: leaf.PublicKey, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
		if r.cert.NotAfter.Before(v.notAfter) {
			v.notAfter = r.cert.NotAfter
		}
		if r.cert.NotBefore.After(v.notBefore) {
			v.notBefore = r.cert.NotBefore
		}
		v.id.NotAfter = v.notAfter
		return v, true
	}
	return nil, false
}

// validAt is x509's date check: NotBefore and NotAfter both inclusive.
func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}
