package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/meshd/meshd/internal/atomicfile"
	"github.com/meshd/meshd/internal/name"
)

// LoadOrCreateKey returns the identity key at path, creating an Ed25519
// key (PKCS#8 PEM, mode 0600) the first time. Like the WireGuard key, a
// file readable by group or others is refused: it may have leaked.
func LoadOrCreateKey(path string) (crypto.Signer, error) {
	k, err := LoadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("save identity key %s: %w", path, err)
	}
	return priv, nil
}

// LoadKey reads a PEM private key (PKCS#8, or SEC1 "EC PRIVATE KEY"):
// Ed25519 or ECDSA P-256.
func LoadKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity key %s has mode %04o: it must not be readable by group or others; fix with chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	return k, nil
}

// ParseKey reads a PEM private key.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok || checkKey(s.Public()) != nil {
		return nil, fmt.Errorf("key type %T: want Ed25519 or ECDSA P-256", k)
	}
	return s, nil
}

// checkKey admits the two key types meshd signs and verifies with.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return nil
		}
	}
	return fmt.Errorf("public key %T: want Ed25519 or ECDSA P-256", pub)
}

// NewKey makes a fresh Ed25519 key, as PEM, for tests and operators.
func NewKey() (crypto.Signer, []byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CSR is a PEM PKCS#10 request for key, naming the host in its CN. It asks
// for nothing else: the signer decides groups and network.
func CSR(key crypto.Signer, instanceID string) ([]byte, error) {
	if !name.Valid(instanceID) {
		return nil, fmt.Errorf("csr: instance id %q is not a valid name", instanceID)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: instanceID},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("csr for %s: %w", instanceID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// sign signs domain||payload: Ed25519 over the bytes, ECDSA over their
// SHA-256.
func sign(key crypto.Signer, domain string, payload []byte) ([]byte, error) {
	msg := append([]byte(domain), payload...)
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		h := crypto.SHA256.New()
		h.Write(msg)
		return key.Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
	}
	return nil, fmt.Errorf("sign: key %T: want Ed25519 or ECDSA P-256", key.Public())
}

// stdlibRules makes curve25519-voi accept exactly the signatures
// crypto/ed25519 accepts (cofactorless, the same encodings), so a record is
// believed or refused the same whichever library checked it.
var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// verifySig checks sig over domain||payload with pub.
//
// Ed25519 goes through curve25519-voi rather than crypto/ed25519: its
// variable-time double-base multiplication is 1.6x faster on this CPU
// (bench/PROFILES.md), and a host's first sync verifies one record per
// fleet member.
func verifySig(pub crypto.PublicKey, domain string, payload, sig []byte) bool {
	msg := make([]byte, 0, len(domain)+len(payload))
	msg = append(append(msg, domain...), payload...)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return false // voi panics on a short key, as crypto/ed25519 does
		}
		return voi.VerifyWithOptions(voi.PublicKey(k), msg, sig, stdlibRules)
	case *ecdsa.PublicKey:
		h := crypto.SHA256.New()
		h.Write(msg)
		return ecdsa.VerifyASN1(k, h.Sum(nil), sig)
	}
	return false
}
