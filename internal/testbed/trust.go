package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/meshd/meshd/internal/trust"
)

// caMu guards making the testbed's fleet CA in Dir/ca on first use.
var caMu sync.Mutex

// CA is the testbed's fleet CA (Dir/ca/ca.crt and ca.key), created the
// first time a host asks for a certificate: tests, the demo and the
// benchmarks provision hosts the way an operator without a PKI would.
func (tb *Testbed) CA() (*trust.CA, error) {
	caMu.Lock()
	defer caMu.Unlock()
	dir := filepath.Join(tb.Dir, "ca")
	if ca, err := trust.LoadCA(dir); err == nil {
		return ca, nil
	}
	return trust.InitCA(dir, "testbed fleet CA "+tb.Prefix)
}

// CAFile is the CA certificate hosts put in trust.ca_file.
func (tb *Testbed) CAFile() string { return filepath.Join(tb.Dir, "ca", trust.CACertFile) }

// CertFile and KeyFile are where a meshd's certificate and identity key live.
func (m *Meshd) CertFile() string { return filepath.Join(filepath.Dir(m.Config), "host.crt") }

// KeyFile is the meshd's identity key (trust.key_file).
func (m *Meshd) KeyFile() string { return filepath.Join(filepath.Dir(m.Config), "identity.key") }

// Certify (re)issues the meshd's certificate for its identity key, which
// it creates if missing (as `meshd csr` does), with the given template;
// the network is the host's unless t names one.
func (m *Meshd) Certify(t trust.Template) error {
	ca, err := m.tb.CA()
	if err != nil {
		return err
	}
	key, err := trust.LoadOrCreateKey(m.KeyFile())
	if err != nil {
		return err
	}
	if t.Network == "" {
		t.Network = m.Host.Network
	}
	cert, err := ca.Issue(key.Public(), m.InstanceID(), t)
	if err != nil {
		return err
	}
	// Written whole then renamed: a meshd watching the file never reads
	// half a certificate.
	tmp := m.CertFile() + ".new"
	if err := os.WriteFile(tmp, cert, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, m.CertFile())
}

// InstanceID is the id the meshd registers under.
func (m *Meshd) InstanceID() string {
	if m.opts.InstanceID != "" {
		return m.opts.InstanceID
	}
	return m.Host.Name
}

// trustConfig is the config's trust block for o.Trust, certifying the
// host on first use.
func (m *Meshd) trustConfig() (string, error) {
	if m.opts.Trust == "" {
		return "", nil
	}
	if _, err := os.Stat(m.CertFile()); err != nil {
		groups := m.opts.CertGroups
		if groups == nil {
			groups = m.opts.Groups
		}
		if err := m.Certify(trust.Template{Groups: groups}); err != nil {
			return "", fmt.Errorf("certify %s: %w", m.Host.Name, err)
		}
	}
	return fmt.Sprintf("trust:\n  mode: %s\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n",
		m.opts.Trust, m.tb.CAFile(), m.CertFile(), m.KeyFile()), nil
}

// SetTrust changes the trust mode for the next WriteConfig ("" = none).
func (m *Meshd) SetTrust(mode string) { m.opts.Trust = mode }
