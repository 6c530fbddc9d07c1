package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/policy"
	"github.com/meshd/meshd/internal/probe"
	"github.com/meshd/meshd/internal/trust"
	"github.com/meshd/meshd/registry"
)

// NotFound marks an unknown peer for the admin API (404).
type NotFound struct{ What string }

func (n NotFound) Error() string  { return n.What }
func (n NotFound) NotFound() bool { return true }

// findPeer resolves a name or overlay address to a peer.
func (d *Daemon) findPeer(ctx context.Context, name string) (admin.Peer, error) {
	name, err := d.peerName(name)
	if err != nil {
		return admin.Peer{}, err
	}
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
		// The endpoint the device used for these echoes, not the one the
		// reconciler last read (up to a second old).
		if l, err := d.readLive(after); err == nil {
			l.overlay(&after, time.Now())
		}
		res.Path, res.Endpoint, res.Reason = after.Path, after.Endpoint, after.Reason
	}
	return res, nil
}

// Explain walks the chain from registry record to firewall for one peer
// and names the first link that is broken.
func (d *Daemon) Explain(ctx context.Context, name string) (admin.Explanation, error) {
	ex := admin.Explanation{Peer: name}
	name, err := d.peerName(name)
	if err != nil {
		return ex, err
	}
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
			rec = h
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
		step("registry record", true, "%s in network %s, private %s, public %s%s, groups %v", rec.InstanceID, rec.Network, rec.PrivateIP, orNone(rec.PublicIP),
			ip6Words(*rec), rec.Groups)
		step("lease", true, "overlay address %s, leased to %s", rec.OverlayIP, rec.InstanceID)
	} else if st == registry.Connected {
		step("registry record", false, "%s has no record in the registry while this host is connected to it: %s", name, orText(p.StaleReason, "its record vanished"))
	} else {
		step("registry record", false, "no live record for %s; kept from the snapshot while the registry is %s", name, st)
	}
	if perr != nil {
		step("peer", false, "%s is in the registry but not configured as a peer on this host", name)
		return ex, nil
	}
	switch {
	case p.KeptAlive:
		step("record present", false, "%s's record is gone from the registry, but the data plane is alive: %s. Is %s cut off from ZooKeeper?", p.Name, p.StaleReason, p.Network)
	case p.RemovalHeld:
		held := "its hold-down"
		if p.HeldByBreaker {
			held = "the mass-removal breaker (release with meshctl breaker release)"
		}
		step("record present", false, "%s's record is gone; the peer is kept by %s: %s", p.Name, held, p.StaleReason)
	}
	if !step("path", p.Path != "", "%s", orText(p.Reason, "no usable path")) {
		return ex, nil
	}
	// The handshake is judged from the device as it is now; without a
	// session, one is started and awaited before the peer is called
	// unreachable.
	live, err := d.readLive(p)
	if err != nil {
		step("device", false, "%v", err)
		return ex, nil
	}
	tried := false
	if !live.up(time.Now()) {
		live, tried = d.awaitHandshake(ctx, p, live), true
	}
	live.overlay(&p, time.Now())
	step("path", true, "%s via %s: %s", p.Path, p.Endpoint, p.Reason)
	waited := ""
	if tried {
		waited = fmt.Sprintf(", not even after one was started just now and awaited for %s", handshakeWait)
	}
	switch {
	case live.up(time.Now()):
		step("handshake", true, "last handshake %s on %s", p.LastHandshake, p.Endpoint)
	case !live.inDevice:
		step("handshake", false, "%s is not in the WireGuard device and traffic sent to it brought no handshake within %s", p.Name, handshakeWait)
	case p.LastHandshake == "":
		step("handshake", false, "no handshake ever completed with %s on %s%s: the peer does not answer there (its meshd down, or UDP %s blocked between the hosts)", p.Name, p.Endpoint, waited, p.Endpoint)
	default:
		step("handshake", false, "no handshake with %s since %s on %s%s: the path stopped answering", p.Name, p.LastHandshake, p.Endpoint, waited)
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
	// The policy the firewall enforces, not the registry's node: with
	// trust that node may hold a refused document, and a missing one keeps
	// the last policy.
	d.mu.Lock()
	pol, applied := d.policyInForce, d.policyApplied
	d.mu.Unlock()
	if !applied || pol == nil {
		step("firewall", true, "no policy in force: every member reaches every member")
		return
	}
	in := allowed(*pol, p.Groups, d.self.Groups)
	out := allowed(*pol, d.self.Groups, p.Groups)
	groups := func(gs []string) string { return "groups " + orText(strings.Join(gs, ","), "none") }
	// A denial names the groups on both sides, so an operator sees which
	// rule is missing.
	step("firewall", true, "%s (%s) -> this host (%s): %s; this host -> %s: %s (ICMP echo %v)",
		p.Name, groups(p.Groups), groups(d.self.Groups), orText(in, "nothing: no rule opens a port"),
		p.Name, orText(out, "nothing: no rule opens a port"), pol.AllowsEcho())
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
func (d *Daemon) Links(ctx context.Context) ([]byte, error) {
	data, err := d.reg.Document(registry.DocLinks)
	doc, _ := trust.Unseal(data)
	return doc, err
}

// SetLinks validates and stores the fleet-wide links.
func (d *Daemon) SetLinks(ctx context.Context, pairs [][]string) error {
	if d.tr() != nil {
		return badInput(errors.New("trust is on: sign the links with --sign-key KEY --sign-cert CERT (an operator certificate)"))
	}
	if err := checkLinks(pairs); err != nil {
		return err
	}
	doc, _ := jsonMarshal(pairs)
	return d.reg.SetDocument(registry.DocLinks, doc)
}

// SetLinksSigned stores operator-signed links as signed.
func (d *Daemon) SetLinksSigned(ctx context.Context, sealed []byte) error {
	doc, err := d.storeDocument(registry.DocLinks, sealed)
	if err != nil {
		return err
	}
	var pairs [][]string
	if err := json.Unmarshal(doc, &pairs); err != nil {
		return badInput(fmt.Errorf("links: want a JSON list of pairs: %v", err))
	}
	if err := checkLinks(pairs); err != nil {
		return err
	}
	return d.reg.SetDocument(registry.DocLinks, sealed)
}

func checkLinks(pairs [][]string) error {
	for i, p := range pairs {
		if len(p) != 2 || p[0] == "" || p[1] == "" || p[0] == p[1] {
			return badInput(fmt.Errorf("links[%d]: %v: a link joins two different networks, e.g. vpc:dc", i, p))
		}
	}
	return nil
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
		live[h.InstanceID] = *h
	}
	wire := d.rec.KeptAlive()
	f := admin.Fleet{ByNetwork: map[string]map[string]int{}, ByVersion: map[string]int{}}
	for id, ip := range leases {
		fh := admin.FleetHost{Name: id, OverlayIP: ip.String(), State: "absent", Network: "-", Version: "-", Signed: "-"}
		if h, ok := live[id]; ok {
			fh.State, fh.Network, fh.Version, fh.Signed, fh.Cert = "in-mesh", h.Network, h.Version, "yes", h.CertSerial
			if h.Seq == 0 {
				fh.Signed = "no"
				f.Unsigned++
			}
			f.InMesh++
		} else if p, ok := wire[id]; ok {
			fh.State, fh.Network = "stale", p.Network
			f.Stale++
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
	f.Summary = fmt.Sprintf("%d hosts, %d in the mesh (%.0f%%), %d not yet signing", f.Total, f.InMesh, pct, f.Unsigned)
	if f.Stale > 0 {
		f.Summary += fmt.Sprintf(", %d missing from the registry but alive on the wire", f.Stale)
	}
	return f, nil
}

// ip6Words names a record's IPv6 underlay addresses, if it has any.
func ip6Words(h registry.Host) string {
	if !h.PrivateIP6.IsValid() && !h.PublicIP6.IsValid() {
		return ""
	}
	return fmt.Sprintf(", IPv6 private %s, public %s", orNone(h.PrivateIP6), orNone(h.PublicIP6))
}
