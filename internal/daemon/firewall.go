package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/meshd/meshd/firewall"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/policy"
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

// onPolicy validates a policy document from the registry and applies it; a
// bad one is refused and the previous policy stays.
func (d *Daemon) onPolicy(data []byte) {
	var p *policy.Policy
	if len(data) > 0 {
		parsed, err := policy.Parse(data)
		if err == nil {
			err = parsed.Validate(d.knownGroups())
		}
		if err != nil {
			d.setPolicyError(err)
			d.log.Error("policy in the registry rejected; keeping the previous policy", "err", err)
			return
		}
		p = &parsed
	}
	if d.fw != nil {
		if err := d.fw.SetPolicy(p); err != nil {
			d.setPolicyError(err)
			return
		}
	}
	d.setPolicyError(nil)
}

func (d *Daemon) setPolicyError(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policyErr = err
}

// knownGroups are the groups of every host in the registry and this one.
func (d *Daemon) knownGroups() map[string]bool {
	known := map[string]bool{}
	for _, g := range d.self.Groups {
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
	return d.reg.Document(registry.DocPolicy)
}

// ValidatePolicy checks a policy document against the fleet's groups.
func (d *Daemon) ValidatePolicy(ctx context.Context, data []byte) error {
	p, err := policy.Parse(data)
	if err != nil {
		return badInput(err)
	}
	if err := p.Validate(d.knownGroups()); err != nil {
		return badInput(err)
	}
	return nil
}

// SetPolicy validates and stores the fleet's policy; every meshd applies it.
func (d *Daemon) SetPolicy(ctx context.Context, data []byte) error {
	if err := d.ValidatePolicy(ctx, data); err != nil {
		return err
	}
	p, _ := policy.Parse(data)
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
