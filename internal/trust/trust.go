// Package trust owns meshd's identities: the fleet CA, host and operator
// X.509 certificates (crypto/x509, Ed25519 or ECDSA P-256), the identity
// key that signs a host's record, and the verification of what others
// signed. ZooKeeper carries records; this package decides whether to
// believe them.
//
// What a certificate says, in URI SANs (any PKI can issue them):
//
//	meshd:host:<instance-id>   the host (else the subject CN)
//	meshd:network:<network>    the network the host lives in
//	meshd:group:<group>        a group, one SAN each
//	meshd:role:operator        may sign fleet documents (policy, links, ...)
//
// Signatures cover exactly the bytes that are stored, prefixed by a domain
// string (record or document) so a signature made for one use is worthless
// for the other. A verified certificate chain is cached by the SHA-256 of
// the leaf, so a fleet of N hosts costs N chain checks, not one per record
// change; expiry and revocation are checked at every use.
package trust

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/name"
)

// URI SAN prefixes.
const (
	uriScheme   = "meshd"
	kindHost    = "host"
	kindNetwork = "network"
	kindGroup   = "group"
	kindRole    = "role"
	roleOp      = "operator"
)

// Domains separate what a signature is for.
const (
	domainRecord   = "meshd record v1\n"
	domainDocument = "meshd document v1\n"
)

// Identity is what a verified certificate says. Its fields match
// registry.Signer field for field, so the daemon converts one into the
// other without either package knowing the other.
type Identity struct {
	InstanceID string
	Network    string
	Groups     []string
	Operator   bool
	Serial     string // hex, as `openssl x509 -serial` prints it
	NotAfter   time.Time
}

// Refusal is why something signed (or not) was not believed. Reason is a
// short, bounded word used as a metric label.
type Refusal struct {
	Reason string
	Detail string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Detail }

// RefusalReason lets consumers label the refusal without importing trust.
func (r *Refusal) RefusalReason() string { return r.Reason }

func refuse(reason, format string, args ...any) error {
	return &Refusal{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Refusal reasons.
const (
	ReasonCertificate = "certificate" // unparsable, wrong key type, bad SANs
	ReasonUnknownCA   = "unknown_ca"  // does not chain to the fleet CA
	ReasonExpired     = "expired"     // outside its validity period
	ReasonRevoked     = "revoked"     // on the signed revocation list
	ReasonSignature   = "signature"   // signature does not match
	ReasonRole        = "role"        // operator certificate on a record, or host certificate on a document
)

// IdentityOf reads the meshd SANs of a certificate.
func IdentityOf(c *x509.Certificate) (Identity, error) {
	id := Identity{Serial: SerialOf(c), NotAfter: c.NotAfter}
	host := ""
	for _, u := range c.URIs {
		kind, val, ok := meshdURI(u)
		if !ok {
			continue // other SANs belong to other uses of the certificate
		}
		switch kind {
		case kindHost:
			if host != "" && host != val {
				return id, fmt.Errorf("certificate %s names two hosts: %q and %q", id.Serial, host, val)
			}
			host = val
		case kindNetwork:
			if id.Network != "" && id.Network != val {
				return id, fmt.Errorf("certificate %s names two networks: %q and %q", id.Serial, id.Network, val)
			}
			id.Network = val
		case kindGroup:
			id.Groups = append(id.Groups, val)
		case kindRole:
			if val == roleOp {
				id.Operator = true
			}
		}
	}
	if host == "" {
		host = c.Subject.CommonName
	}
	id.InstanceID = host
	if !name.Valid(id.InstanceID) {
		return id, fmt.Errorf("certificate %s: instance id %q (CN or %s:%s:) is not a valid name", id.Serial, id.InstanceID, uriScheme, kindHost)
	}
	if id.Network != "" && !name.Valid(id.Network) {
		return id, fmt.Errorf("certificate %s: network %q is not a valid name", id.Serial, id.Network)
	}
	for _, g := range id.Groups {
		if !name.Valid(g) {
			return id, fmt.Errorf("certificate %s: group %q is not a valid name", id.Serial, g)
		}
	}
	return id, nil
}

// meshdURI splits meshd:<kind>:<value>.
func meshdURI(u *url.URL) (kind, val string, ok bool) {
	if u == nil || u.Scheme != uriScheme {
		return "", "", false
	}
	kind, val, ok = strings.Cut(u.Opaque, ":")
	return kind, val, ok && val != ""
}

func uri(kind, val string) *url.URL {
	return &url.URL{Scheme: uriScheme, Opaque: kind + ":" + val}
}

// SerialOf renders a certificate's serial number in hex.
func SerialOf(c *x509.Certificate) string {
	return strings.ToUpper(c.SerialNumber.Text(16))
}
