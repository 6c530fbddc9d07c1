package daemon

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/dns"
	"github.com/meshd/meshd/mesh"
	"github.com/meshd/meshd/registry"
)

// dnsPort is where meshd answers by default, on the overlay address.
const dnsPort = 53

// meshNames is the zone's view of the mesh: this host and every peer the
// reconciler knows whose record is present. A peer whose record vanished
// (hold-down, breaker) is already gone from the names: it left.
type meshNames struct{ d *Daemon }

func (s meshNames) Hosts() []dns.Host {
	d := s.d
	st, _ := d.reg.State()
	peers := d.rec.Peers(st == registry.Connected)
	out := make([]dns.Host, 0, len(peers)+1)
	d.mu.Lock()
	self := d.self
	d.mu.Unlock()
	out = append(out, dns.Host{Name: self.InstanceID, Addr: self.OverlayIP, Groups: self.Groups, Live: true})
	for _, p := range peers {
		if p.RemovalHeld {
			continue
		}
		// Live: up, idle, still connecting, or stale (state unknown while
		// the registry is away); a peer that answers on no path is down.
		out = append(out, dns.Host{Name: p.Name, Addr: p.OverlayIP, Groups: p.Groups, Live: p.State != mesh.StateDown})
	}
	return out
}

// dnsState is the resolver's part of the daemon.
type dnsState struct {
	zone     *dns.Zone
	srv      *dns.Server
	resolved *dns.Resolved // nil unless systemd-resolved routes the domain to us
	err      error         // why the server is not serving
}

// startDNS serves the zone and hooks it into systemd-resolved. A failure
// is logged and reported in status, never fatal: the mesh works without
// names.
func (d *Daemon) startDNS() {
	c := d.cfg.DNS
	if !c.Enabled {
		return
	}
	d.dns.zone = dns.NewZone(dns.Config{Domain: c.Domain, Pool: d.cfg.Overlay.CIDR}, meshNames{d})
	listen := netip.AddrPortFrom(d.self.OverlayIP, dnsPort)
	if c.Listen != "" {
		listen = netip.MustParseAddrPort(c.Listen) // validated with the config
	}
	d.dns.srv, d.dns.err = dns.Listen(listen, d.dns.zone, d.log)
	if d.dns.err != nil {
		d.log.Error("dns: not serving the mesh's names", "domain", c.Domain, "err", d.dns.err)
		return
	}
	d.log.Info("dns: serving", "domain", c.Domain, "listen", d.dns.srv.Addr())
	r, err := dns.ConfigureResolved(d.dev.Name(), d.dns.srv.Addr(), c.Domain, d.cfg.Overlay.CIDR, d.log)
	if err != nil {
		d.log.Error("dns: systemd-resolved: could not route the domain to meshd; point the host's resolver at it (README)", "err", err)
	}
	d.dns.resolved = r
}

func (d *Daemon) stopDNS() {
	if d.dns.resolved != nil {
		d.dns.resolved.Revert()
	}
	if d.dns.srv != nil {
		d.dns.srv.Close()
	}
}

// dnsStatus is the resolver's part of `meshctl status`.
func (d *Daemon) dnsStatus() *admin.DNSStatus {
	c := d.cfg.DNS
	if !c.Enabled {
		return nil
	}
	s := &admin.DNSStatus{Domain: c.Domain, Resolved: "not running (point the host's resolver at meshd: see README)"}
	if d.dns.err != nil {
		s.Error = d.dns.err.Error()
	}
	if d.dns.srv != nil {
		s.Listen = d.dns.srv.Addr().String()
		st := d.dns.srv.Stats()
		s.Answered, s.Dropped = st.Answered, st.Dropped
	}
	if d.dns.resolved != nil {
		s.Resolved = fmt.Sprintf("routes ~%s to %s on %s", c.Domain, s.Listen, d.dev.Name())
	}
	return s
}

// peerName turns a name of the zone into the instance id it names, so
// meshctl ping and explain take <id>.<domain> as well as the id or the
// overlay address. A group name names several hosts: that is an error.
func (d *Daemon) peerName(name string) (string, error) {
	dom := d.cfg.DNS.Domain
	lower := strings.ToLower(strings.TrimSuffix(name, "."))
	if dom == "" || !strings.HasSuffix(lower, "."+dom) {
		return name, nil
	}
	id := name[:len(lower)-len(dom)-1]
	if g, ok := strings.CutSuffix(strings.ToLower(id), ".group"); ok {
		var members []string
		for _, h := range (meshNames{d}).Hosts() {
			for _, hg := range h.Groups {
				if strings.EqualFold(hg, g) && h.Live {
					members = append(members, h.Name)
				}
			}
		}
		return "", NotFound{fmt.Sprintf("%s names the group %s (live members: %s): name one host", name, g, orText(strings.Join(members, ", "), "none"))}
	}
	// Names are case-insensitive; instance ids are not.
	for _, h := range (meshNames{d}).Hosts() {
		if strings.EqualFold(h.Name, id) {
			return h.Name, nil
		}
	}
	return id, nil
}

// dnsFirewallPort is the port the firewall opens to members on the overlay
// for meshd's DNS: only when meshd serves there.
func (d *Daemon) dnsFirewallPort() int {
	c := d.cfg.DNS
	if !c.Enabled {
		return 0
	}
	if c.Listen == "" {
		return dnsPort
	}
	ap := netip.MustParseAddrPort(c.Listen)
	if a := ap.Addr(); a.IsUnspecified() || d.cfg.Overlay.CIDR.Contains(a) {
		return int(ap.Port())
	}
	return 0
}
