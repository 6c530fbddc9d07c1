package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/policy"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/mesh"
	"github.com/meshd/meshd/registry"
)

// members adapts the firewall to the reconciler's Members seam: the two
// packages do not know each other.
type members struct{ fw *firewall.Firewall }

func (m members) SetHost(h mesh.MemberHost) error {
	return m.fw.SetHost(firewall.Host{ID: h.ID, OverlayIP: h.OverlayIP, Groups: h.Groups, Underlay: h.Underlay})
}

func (m members) RemoveHost(id string) error { return m.fw.RemoveHost(id) }

// resyncFirewall makes the sets exactly the reconciler's view: shortly
// after start (dropping what a crashed run left) and then every ten
// minutes, each set swapped in whole.
func (d *Daemon) resyncFirewall(ctx context.Context) {
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var hosts []firewall.Host
		for _, h := range d.rec.Members() {
			hosts = append(hosts, firewall.Host{ID: h.ID, OverlayIP: h.OverlayIP, Groups: h.Groups, Underlay: h.Underlay})
		}
		if err := d.fw.Resync(hosts); err != nil {
			d.log.Error("firewall resync", "err", err)
		}
		t.Reset(10 * time.Minute)
	}
}

// startFirewall brings the firewall up from the snapshot, before the
// WireGuard device exists: the last members and, through the registry's
// document cache (filled from the snapshot), the last policy. A restart
// while ZooKeeper is down thus enforces what was in force before.
func (d *Daemon) startFirewall(cfg config.Config, log *slog.Logger) error {
	t0 := time.Now()
	defer func() { log.Info("firewall up from the snapshot", "took", time.Since(t0).Round(time.Millisecond)) }()
	if cfg.Firewall.Mode != config.ModeOff {
		fc := firewallConfig(cfg, len(d.reg.Hosts()), log)
		fc.DNSPort = d.dnsFirewallPort()
		d.fw = firewall.New(fc)
		if err := d.fw.Start(); err != nil {
			return err
		}
		var hosts []firewall.Host
		for _, h := range d.reg.Hosts() {
			if h.InstanceID == cfg.Identity.InstanceID {
				continue
			}
			m := mesh.MemberOf(*h)
			hosts = append(hosts, firewall.Host{ID: m.ID, OverlayIP: m.OverlayIP, Groups: m.Groups, Underlay: m.Underlay})
		}
		if err := d.fw.Resync(hosts); err != nil {
			return err
		}
		log.Debug("firewall members from the snapshot", "hosts", len(hosts), "took", time.Since(t0).Round(time.Millisecond))
	}
	d.reg.OnDocument(registry.DocPolicy, d.onPolicy)
	return nil
}

// onPolicy applies a policy document from the registry (or the snapshot).
// It fails static: a bad document is refused and a missing or emptied one
// ignored, the previous policy staying in force either way; only an
// explicit allow_all document opens every member to every member. A
// fleet that never had a policy lets members reach each other.
func (d *Daemon) onPolicy(data []byte) {
	// With trust, only an operator-signed document is opened; anything
	// else is refused and counted, and the policy in force stays.
	data, err := d.openDocument(registry.DocPolicy, data)
	if err != nil {
		return
	}
	if len(bytes.TrimSpace(data)) == 0 || string(bytes.TrimSpace(data)) == "null" {
		d.mu.Lock()
		had := d.policyApplied
		d.mu.Unlock()
		if had {
			d.setPolicyState(nil, "the registry's policy node is missing or empty: the last policy stays in force (meshctl policy set --allow-all opens it)")
			d.log.Warn("policy node missing or empty; keeping the last policy")
			return
		}
		d.applyPolicy(nil)
		return
	}
	parsed, err := policy.Parse(data)
	if err != nil {
		d.setPolicyState(err, "")
		d.log.Error("policy in the registry rejected; keeping the previous policy", "err", err)
		return
	}
	var p *policy.Policy
	if !parsed.AllowAll {
		p = &parsed
	}
	if d.applyPolicy(p) {
		warn := strings.Join(parsed.UnknownGroups(d.knownGroups()), "; ")
		if warn != "" {
			d.log.Warn("policy names groups no live host has", "warning", warn)
		}
		d.setPolicyState(nil, warn)
	}
}

// applyPolicy puts p (nil: members reach members) in force.
func (d *Daemon) applyPolicy(p *policy.Policy) bool {
	if d.fw != nil {
		if err := d.fw.SetPolicy(p); err != nil {
			d.setPolicyState(err, "")
			return false
		}
	}
	d.mu.Lock()
	d.policyApplied, d.policyInForce = true, p
	d.mu.Unlock()
	d.setPolicyState(nil, "")
	return true
}

func (d *Daemon) setPolicyState(err error, warning string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policyErr, d.policyWarning = err, warning
}

// knownGroups are the groups of every host in the registry and this one
// (from the identity, which trust filled from the certificate: the policy
// may arrive before the record is built).
func (d *Daemon) knownGroups() map[string]bool {
	known := map[string]bool{}
	for _, g := range d.cfg.Identity.Groups {
		known[g] = true
	}
	for _, h := range d.reg.Hosts() {
		for _, g := range h.Groups {
			known[g] = true
		}
	}
	return known
}

// Policy returns the fleet's policy document ("" when none is set).
func (d *Daemon) Policy(ctx context.Context) ([]byte, error) {
	data, err := d.reg.Document(registry.DocPolicy)
	doc, _ := trust.Unseal(data)
	return doc, err
}

// ValidatePolicy checks a policy document; groups no live host has are
// warnings, not errors: such a group matches nobody until a host joins it.
func (d *Daemon) ValidatePolicy(ctx context.Context, data []byte) ([]string, error) {
	// A signed document is judged by what it says; its signature is
	// checked where it is stored (SetPolicy) and where it is applied.
	doc, _ := trust.Unseal(data)
	p, err := policy.Parse(doc)
	if err != nil {
		return nil, badInput(err)
	}
	return p.UnknownGroups(d.knownGroups()), nil
}

// SetPolicy validates and stores the fleet's policy; every meshd applies it.
func (d *Daemon) SetPolicy(ctx context.Context, data []byte) error {
	doc, err := d.storeDocument(registry.DocPolicy, data)
	if err != nil {
		return err
	}
	if _, err := d.ValidatePolicy(ctx, doc); err != nil {
		return err
	}
	if _, sealed := trust.Unseal(data); sealed {
		return d.reg.SetDocument(registry.DocPolicy, data) // the signed bytes, as signed
	}
	p, _ := policy.Parse(doc)
	return d.reg.SetDocument(registry.DocPolicy, p.JSON())
}

// BadInput marks an error caused by the request, not by meshd.
type BadInput struct{ Err error }

func (b BadInput) Error() string { return b.Err.Error() }
func (b BadInput) Unwrap() error { return b.Err }

func badInput(err error) error { return BadInput{err} }

// BadInput marks the error for the admin API as a 400.
func (b BadInput) BadInput() bool { return true }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// firewallConfig turns the config file's firewall keys into the firewall's
// configuration; fleet is how many hosts the snapshot holds, to size the
// sets.
func firewallConfig(cfg config.Config, fleet int, log *slog.Logger) firewall.Config {
	fc := firewall.Config{Mode: cfg.Firewall.Mode, Interface: cfg.Interface.Name, ListenPort: cfg.Interface.ListenPort,
		Overlay: cfg.Overlay.CIDR, BreakglassSSH: cfg.Firewall.BreakglassSSHFrom, Groups: cfg.Identity.Groups,
		UnderlayMembers: cfg.Firewall.Underlay.Members == config.MembersPolicy, FleetSize: fleet, Logger: log}
	for _, a := range cfg.Firewall.Underlay.Allow {
		allow := firewall.Allow{From: a.From}
		for _, s := range a.Ports {
			p, _ := policy.ParsePort(s) // validated with the config
			allow.Ports = append(allow.Ports, p)
		}
		fc.UnderlayAllow = append(fc.UnderlayAllow, allow)
	}
	return fc
}
