package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
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

// trustGate is what the registry holds: trust may be turned on later by a
// reload (none -> permissive without a restart), so the registry asks the
// gate each time.
type trustGate struct{ p atomic.Pointer[hostTrust] }

var (
	_ registry.Trust      = (*trustGate)(nil)
	_ registry.HostDigest = (*trustGate)(nil)
)

func (g *trustGate) SignRecord(payload []byte) ([]byte, [][]byte, error) {
	t := g.p.Load()
	if t == nil {
		return nil, nil, errors.New("trust is off")
	}
	return t.signer.SignRecord(payload)
}

func (g *trustGate) VerifyRecord(payload, sig []byte, chain [][]byte) (registry.Signer, error) {
	t := g.p.Load()
	if t == nil {
		return registry.Signer{}, errors.New("trust is off")
	}
	id, err := t.pool.VerifyRecord(payload, sig, chain)
	return registry.Signer(id), err
}

func (g *trustGate) Strict() bool {
	t := g.p.Load()
	return t != nil && t.strict.Load()
}

func (g *trustGate) Enabled() bool { return g.p.Load() != nil }

// ZKPassword lets the registry authenticate to ZooKeeper as this host and
// keep its own nodes to itself (registry.HostDigest).
func (g *trustGate) ZKPassword(user string) (string, error) {
	t := g.p.Load()
	if t == nil {
		return "", errors.New("trust is off")
	}
	return t.signer.ZKPassword(user)
}

func (g *trustGate) Revoked(serial string) bool {
	t := g.p.Load()
	return t != nil && t.pool.Revoked(serial)
}

// tr is the trust in force, nil when none.
func (d *Daemon) tr() *hostTrust { return d.gate.p.Load() }

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
	t := d.tr()
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
	if d.tr() == nil {
		return
	}
	s.Trust, s.TrustMode = "ca", config.TrustPermissive
	if d.tr().Strict() {
		s.TrustMode = config.TrustStrict
	}
	id := d.tr().signer.Identity()
	s.Cert = &admin.Cert{Serial: id.Serial, NotAfter: id.NotAfter.UTC().Format(time.RFC3339), Network: id.Network, Groups: id.Groups}
	if s.Cert.Groups == nil {
		s.Cert.Groups = []string{}
	}
	d.tr().mu.Lock()
	if d.tr().certErr != nil {
		s.CertError = d.tr().certErr.Error()
	}
	d.tr().mu.Unlock()
	s.UnsignedHosts = d.reg.Unsigned()
	s.RevokedCerts = d.tr().pool.RevokedCount()
	for _, r := range d.reg.Refusals() {
		s.Refusals = append(s.Refusals, admin.Refusal{At: r.At.Format(time.RFC3339), Node: r.Node, Reason: r.Reason, Detail: r.Detail})
	}
	d.mu.Lock()
	s.Refusals = append(s.Refusals, d.docRefusals...)
	if len(d.docRefused) > 0 {
		s.DocumentsRefused = maps.Clone(d.docRefused)
	}
	d.mu.Unlock()
}

// reloadTrust applies the trust keys of a reloaded config: a fleet goes
// none -> permissive -> strict host by host with SIGHUP, no restart, so
// traffic keeps flowing. Turning trust off again needs a restart.
func (d *Daemon) reloadTrust(cfg config.Config) {
	t := d.tr()
	switch {
	case t == nil && cfg.Trust.Enabled():
		nt, err := loadTrust(cfg, d.log)
		if err != nil {
			d.log.Error("reload: trust not turned on", "err", err)
			return
		}
		if err := checkOwnCert(nt.signer.Identity(), d.cfg.Identity); err != nil {
			d.log.Error("reload: trust not turned on", "err", err)
			return
		}
		d.mu.Lock()
		d.cfg.Trust = cfg.Trust
		d.self.Groups = slices.Clone(nt.signer.Identity().Groups)
		self := d.self
		d.mu.Unlock()
		d.gate.p.Store(nt)
		d.reg.UpdateSelf(self)
		d.reg.Resign()
		go d.reg.Reverify()
		d.log.Info("trust turned on", "mode", cfg.Trust.Mode)
	case t != nil && !cfg.Trust.Enabled():
		d.log.Error("reload: turning trust off needs a restart; keeping it on")
	case t != nil:
		t.strict.Store(cfg.Trust.Mode == config.TrustStrict)
		d.mu.Lock()
		d.cfg.Trust.Mode = cfg.Trust.Mode
		d.mu.Unlock()
		d.reloadCert()
	}
}
