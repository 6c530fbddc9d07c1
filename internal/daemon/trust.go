package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/registry"
)

// certPoll is how often the certificate file is checked for a renewal;
// SIGHUP checks at once.
const certPoll = 5 * time.Second

// hostTrust joins the trust package to the registry's Trust seam: the two
// packages do not know each other.
type hostTrust struct {
	pool   *trust.Pool
	signer *trust.Signer
	strict atomic.Bool

	mu      sync.Mutex
	certErr error // last failed renewal
}

var _ registry.Trust = (*hostTrust)(nil)

func (t *hostTrust) SignRecord(payload []byte) ([]byte, [][]byte, error) {
	return t.signer.SignRecord(payload)
}

func (t *hostTrust) VerifyRecord(payload, sig []byte, chain [][]byte) (registry.Signer, error) {
	id, err := t.pool.VerifyRecord(payload, sig, chain)
	return registry.Signer(id), err
}

func (t *hostTrust) Strict() bool { return t.strict.Load() }

// loadTrust reads the CA, the identity key and the certificate, and checks
// that the certificate is this host's: a host must not start signing
// records its peers would refuse.
func loadTrust(cfg config.Config, log *slog.Logger) (*hostTrust, error) {
	if !cfg.Trust.Enabled() {
		log.Warn("trust: none: ZooKeeper is trusted for every host's identity, key and groups; set trust.ca_file and trust.cert_file (see meshd csr)")
		return nil, nil
	}
	pool, err := trust.LoadPool(cfg.Trust.CAFile)
	if err != nil {
		return nil, err
	}
	signer, err := trust.LoadSigner(cfg.TrustKeyFile(), cfg.Trust.CertFile, pool)
	if err != nil {
		return nil, err
	}
	if err := checkOwnCert(signer.Identity(), cfg.Identity); err != nil {
		return nil, err
	}
	t := &hostTrust{pool: pool, signer: signer}
	t.strict.Store(cfg.Trust.Mode == config.TrustStrict)
	id := signer.Identity()
	log.Info("trust: ca", "mode", cfg.Trust.Mode, "cert", id.Serial, "groups", id.Groups, "network", id.Network, "not_after", id.NotAfter)
	return t, nil
}

func checkOwnCert(id trust.Identity, self config.Identity) error {
	if id.InstanceID != self.InstanceID {
		return fmt.Errorf("trust.cert_file: certificate %s is for %q, this host is %q", id.Serial, id.InstanceID, self.InstanceID)
	}
	if id.Network != "" && id.Network != self.Network {
		return fmt.Errorf("trust.cert_file: certificate %s says network %q, identity.network is %q", id.Serial, id.Network, self.Network)
	}
	return nil
}

// watchCert picks up a renewed certificate without a restart: every
// certPoll, and at once on SIGHUP (Reload).
func (d *Daemon) watchCert(ctx context.Context) {
	t := time.NewTicker(certPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.reloadCert()
		}
	}
}

// reloadCert re-reads the certificate; a new one is published at once,
// signed anew, and its groups become this host's.
func (d *Daemon) reloadCert() {
	t := d.trust
	if t == nil {
		return
	}
	changed, err := t.signer.Reload()
	if err == nil && changed {
		err = checkOwnCert(t.signer.Identity(), d.cfg.Identity)
	}
	t.mu.Lock()
	t.certErr = err
	t.mu.Unlock()
	if err != nil {
		d.log.Error("certificate renewal refused; keeping the current certificate", "err", err)
		return
	}
	if !changed {
		return
	}
	id := t.signer.Identity()
	d.mu.Lock()
	d.self.Groups = slices.Clone(id.Groups)
	self := d.self
	d.mu.Unlock()
	d.reg.UpdateSelf(self)
	d.reg.Resign()
	d.log.Info("certificate renewed", "cert", id.Serial, "groups", id.Groups, "not_after", id.NotAfter)
}

// trustStatus fills the trust part of `meshctl status`.
func (d *Daemon) trustStatus(s *admin.Status) {
	s.Trust = "none"
	if d.trust == nil {
		return
	}
	s.Trust, s.TrustMode = "ca", config.TrustPermissive
	if d.trust.Strict() {
		s.TrustMode = config.TrustStrict
	}
	id := d.trust.signer.Identity()
	s.Cert = &admin.Cert{Serial: id.Serial, NotAfter: id.NotAfter.UTC().Format(time.RFC3339), Network: id.Network, Groups: id.Groups}
	if s.Cert.Groups == nil {
		s.Cert.Groups = []string{}
	}
	d.trust.mu.Lock()
	if d.trust.certErr != nil {
		s.CertError = d.trust.certErr.Error()
	}
	d.trust.mu.Unlock()
	s.UnsignedHosts = d.reg.Unsigned()
	for _, r := range d.reg.Refusals() {
		s.Refusals = append(s.Refusals, admin.Refusal{At: r.At.Format(time.RFC3339), Node: r.Node, Reason: r.Reason, Detail: r.Detail})
	}
}
