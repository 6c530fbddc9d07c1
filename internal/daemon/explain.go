package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/policy"
	"github.com/meshd/meshd/internal/probe"
	"github.com/meshd/meshd/registry"
)

// NotFound marks an unknown peer for the admin API (404).
type NotFound struct{ What string }

func (n NotFound) Error() string  { return n.What }
func (n NotFound) NotFound() bool { return true }

// findPeer resolves a name or overlay address to a peer.
func (d *Daemon) findPeer(ctx context.Context, name string) (admin.Peer, error) {
	peers, _ := d.Peers(ctx)
	for _, p := range peers {
		if p.Name == name || p.OverlayIP == name {
			return p, nil
		}
	}
	return admin.Peer{}, NotFound{fmt.Sprintf("no peer %q: not in the registry view of this host (check the name with meshctl peers)", name)}
}

// Ping pings a peer over the overlay from this host and says which path
// and endpoint carried it.
func (d *Daemon) Ping(ctx context.Context, name string, count int) (admin.PingResult, error) {
	p, err := d.findPeer(ctx, name)
	if err != nil {
		return admin.PingResult{}, err
	}
	addr, _ := netip.ParseAddr(p.OverlayIP)
	res := admin.PingResult{Peer: p.Name, OverlayIP: p.OverlayIP}
	for i := 0; i < max(count, 1); i++ {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		rtt, err := probe.Echo(pctx, addr)
		cancel()
		reply := admin.PingReply{Seq: i + 1}
		if err != nil {
			reply.Error = err.Error()
		} else {
			reply.RTTms = float64(rtt.Microseconds()) / 1000
			res.Received++
		}
		res.Replies = append(res.Replies, reply)
	}
	if after, err := d.findPeer(ctx, name); err == nil {
		res.Path, res.Endpoint, res.Reason = after.Path, after.Endpoint, after.Reason
	}
	return res, nil
}

// Explain walks the chain from registry record to firewall for one peer
// and names the first link that is broken.
func (d *Daemon) Explain(ctx context.Context, name string) (admin.Explanation, error) {
	ex := admin.Explanation{Peer: name}
	step := func(check string, ok bool, format string, args ...any) bool {
		ex.Steps = append(ex.Steps, admin.Step{Check: check, OK: ok, Detail: fmt.Sprintf(format, args...)})
		if !ok && ex.Cause == "" {
			ex.Cause = fmt.Sprintf(format, args...)
		}
		return ok
	}
	var rec *registry.Host
	for _, h := range d.reg.Hosts() {
		if h.InstanceID == name || h.OverlayIP.String() == name {
			rec = &h
			break
		}
	}
	p, perr := d.findPeer(ctx, name)
	st, _ := d.reg.State()
	if rec == nil && perr != nil {
		step("registry record", false, "%s has no record in the registry: it is not running meshd, its record is malformed (see bad_records in meshctl status), or it was decommissioned", name)
		return ex, nil
	}
	if rec != nil {
		step("registry record", true, "%s in network %s, private %s, public %s, groups %v", rec.InstanceID, rec.Network, rec.PrivateIP, orNone(rec.PublicIP), rec.Groups)
		step("lease", true, "overlay address %s, leased to %s", rec.OverlayIP, rec.InstanceID)
	} else {
		step("registry record", st == registry.Connected, "no live record for %s; kept from the snapshot while the registry is %s", name, st)
	}
	if perr != nil {
		step("peer", false, "%s is in the registry but not configured as a peer on this host", name)
		return ex, nil
	}
	if p.RemovalHeld {
		s := d.rec.Summary()
		held := "its hold-down"
		if s.Breaker.Tripped {
			held = "the mass-removal breaker (release with meshctl breaker release)"
		}
		step("record present", false, "%s's record is gone; the peer is kept by %s", p.Name, held)
	}
	if !step("path", p.Path != "", "%s", orText(p.Reason, "no usable path")) {
		return ex, nil
	}
	step("path", true, "%s via %s: %s", p.Path, p.Endpoint, p.Reason)
	switch {
	case p.State == "up":
		step("handshake", true, "last handshake %s on %s", p.LastHandshake, p.Endpoint)
	case p.LastHandshake == "":
		step("handshake", false, "no handshake ever completed with %s on %s: the peer does not answer there (its meshd down, or UDP %s blocked between the hosts)", p.Name, p.Endpoint, p.Endpoint)
	default:
		step("handshake", false, "no handshake with %s since %s on %s: the path stopped answering", p.Name, p.LastHandshake, p.Endpoint)
	}
	step("mtu", true, "interface MTU %d", d.dev.MTU())
	d.explainFirewall(p, step)
	if st != registry.Connected {
		step("registry", false, "the registry is %s: this host works from its snapshot and marks peers stale", st)
	}
	if ex.Cause == "" {
		ex.Cause = fmt.Sprintf("%s is reachable over the %s path (%s).", p.Name, p.Path, p.Endpoint)
	}
	return ex, nil
}

// explainFirewall says what the policy lets through each way.
func (d *Daemon) explainFirewall(p admin.Peer, step func(string, bool, string, ...any) bool) {
	if d.fw == nil {
		step("firewall", true, "firewall off on this host")
		return
	}
	doc, _ := d.reg.Document(registry.DocPolicy)
	if len(doc) == 0 {
		step("firewall", true, "no policy: every member reaches every member")
		return
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		step("firewall", false, "the registry's policy is malformed: %v", err)
		return
	}
	if pol.AllowAll {
		step("firewall", true, "allow-all policy: every member reaches every member")
		return
	}
	in := allowed(pol, p.Groups, d.self.Groups)
	out := allowed(pol, d.self.Groups, p.Groups)
	step("firewall", true, "%s -> this host: %s; this host -> %s: %s (ICMP echo %v)", p.Name, orText(in, "nothing"), p.Name, orText(out, "nothing"), pol.AllowsEcho())
}

// allowed lists the ports the policy opens from groups "from" to groups "to".
func allowed(p policy.Policy, from, to []string) string {
	in := func(g string, gs []string) bool {
		if g == policy.Any {
			return true
		}
		for _, x := range gs {
			if x == g {
				return true
			}
		}
		return false
	}
	var ports []string
	for _, r := range p.Rules {
		if in(r.To, to) && in(r.From, from) {
			for _, port := range r.Ports {
				ports = append(ports, port.String())
			}
		}
	}
	return strings.Join(ports, ", ")
}

func orNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// Decommission releases a host's address into quarantine and removes its
// record.
func (d *Daemon) Decommission(ctx context.Context, id string) error {
	return d.reg.Decommission(ctx, id)
}

// Links returns the fleet-wide direct-connect links.
func (d *Daemon) Links(ctx context.Context) ([]byte, error) { return d.reg.Document(registry.DocLinks) }

// SetLinks validates and stores the fleet-wide links.
func (d *Daemon) SetLinks(ctx context.Context, pairs [][]string) error {
	for i, p := range pairs {
		if len(p) != 2 || p[0] == "" || p[1] == "" || p[0] == p[1] {
			return badInput(fmt.Errorf("links[%d]: %v: a link joins two different networks, e.g. vpc:dc", i, p))
		}
	}
	doc, _ := jsonMarshal(pairs)
	return d.reg.SetDocument(registry.DocLinks, doc)
}

// Fleet reports every host that holds a lease, live or not: the migration
// report ("N hosts, M in the mesh").
func (d *Daemon) Fleet(ctx context.Context) (admin.Fleet, error) {
	leases, err := d.reg.Leases(ctx)
	if err != nil {
		return admin.Fleet{}, err
	}
	live := map[string]registry.Host{}
	for _, h := range d.reg.Hosts() {
		live[h.InstanceID] = h
	}
	f := admin.Fleet{ByNetwork: map[string]map[string]int{}, ByVersion: map[string]int{}}
	for id, ip := range leases {
		fh := admin.FleetHost{Name: id, OverlayIP: ip.String(), State: "absent", Network: "-", Version: "-"}
		if h, ok := live[id]; ok {
			fh.State, fh.Network, fh.Version = "in-mesh", h.Network, h.Version
			f.InMesh++
		}
		if f.ByNetwork[fh.Network] == nil {
			f.ByNetwork[fh.Network] = map[string]int{}
		}
		f.ByNetwork[fh.Network][fh.State]++
		f.ByVersion[fh.Version]++
		f.Hosts = append(f.Hosts, fh)
	}
	slices.SortFunc(f.Hosts, func(a, b admin.FleetHost) int { return strings.Compare(a.Name, b.Name) })
	f.Total = len(f.Hosts)
	pct := 0.0
	if f.Total > 0 {
		pct = 100 * float64(f.InMesh) / float64(f.Total)
	}
	f.Summary = fmt.Sprintf("%d hosts, %d in the mesh (%.0f%%)", f.Total, f.InMesh, pct)
	return f, nil
}
