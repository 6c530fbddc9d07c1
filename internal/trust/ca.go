package trust

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/atomicfile"
	"github.com/meshd/meshd/internal/name"
)

// Files of a CA directory made by InitCA (meshctl ca init).
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA is a fleet CA for fleets without a PKI of their own.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte // the certificate, PEM: what hosts put in trust.ca_file
}

// InitCA creates a CA (Ed25519, ten years) in dir: ca.crt and ca.key
// (0600). It refuses to overwrite an existing CA.
func InitCA(dir, name string) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("ca init %s: a CA key is already there; refusing to replace it", dir)
	}
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = "meshd fleet CA"
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca init: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("ca init: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CACertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("ca init: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// LoadCA reads a CA directory made by InitCA.
func LoadCA(dir string) (*CA, error) {
	key, err := LoadKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", dir, err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", dir, err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("ca %s: %s: want one PEM certificate (%v)", dir, CACertFile, err)
	}
	return &CA{Cert: certs[0], Key: key, PEM: certPEM}, nil
}

// Template is what the signer, not the request, decides.
type Template struct {
	Groups    []string
	Network   string
	Operator  bool
	NotBefore time.Time // zero: an hour ago (clock skew)
	NotAfter  time.Time // zero: a year after NotBefore
}

// SignCSR issues a certificate for a PEM PKCS#10 request: the request's CN
// is the instance id (or operator name); everything else comes from t.
func (ca *CA) SignCSR(csrPEM []byte, t Template) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr for %q: signature: %w", csr.Subject.CommonName, err)
	}
	return ca.Issue(csr.PublicKey, csr.Subject.CommonName, t)
}

// Issue makes a certificate for pub naming id (a host's instance id, or an
// operator's name with t.Operator).
func (ca *CA) Issue(pub crypto.PublicKey, id string, t Template) ([]byte, error) {
	if err := checkKey(pub); err != nil {
		return nil, fmt.Errorf("issue for %q: %w", id, err)
	}
	if !name.Valid(id) {
		return nil, fmt.Errorf("issue: name %q: use letters, digits, '.', '_' or '-' (at most 63)", id)
	}
	if t.Network != "" && !name.Valid(t.Network) {
		return nil, fmt.Errorf("issue for %s: network %q is not a valid name", id, t.Network)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    t.NotBefore,
		NotAfter:     t.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = tmpl.NotBefore.AddDate(1, 0, 0)
	}
	if t.Operator {
		tmpl.URIs = append(tmpl.URIs, uri(kindRole, roleOp))
	} else {
		tmpl.URIs = append(tmpl.URIs, uri(kindHost, id))
	}
	if t.Network != "" {
		tmpl.URIs = append(tmpl.URIs, uri(kindNetwork, t.Network))
	}
	for _, g := range t.Groups {
		if !name.Valid(g) {
			return nil, fmt.Errorf("issue for %s: group %q is not a valid name", id, g)
		}
		tmpl.URIs = append(tmpl.URIs, uri(kindGroup, g))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// parseCertsPEM reads every CERTIFICATE block.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
