package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshd/meshd/internal/admin"
)

func writePeersTable(w io.Writer, peers []admin.Peer, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOVERLAY IP\tNETWORK\tENDPOINT\tPATH\tHANDSHAKE\tRX\tTX\tSTATE")
	for _, p := range peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.OverlayIP, p.Network, orDash(p.Endpoint),
			orDash(p.Path), handshakeAge(p.LastHandshake, now), humanBytes(p.RxBytes), humanBytes(p.TxBytes), p.State)
	}
	tw.Flush()
	for _, p := range peers {
		switch {
		case p.StaleReason != "":
			fmt.Fprintf(w, "%s: stale: %s\n", p.Name, p.StaleReason)
		case p.State != "up" && p.State != "idle" && p.Reason != "":
			fmt.Fprintf(w, "%s: %s\n", p.Name, p.Reason)
		}
	}
}

func writeStatus(w io.Writer, s admin.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("host", s.Name)
	row("overlay ip", s.OverlayIP)
	row("network", s.Network)
	if s.PrivateIP6 != "" || s.PublicIP6 != "" {
		row("underlay ipv6", fmt.Sprintf("private %s, public %s", orDash(s.PrivateIP6), orDash(s.PublicIP6)))
	}
	row("public key", s.PublicKey)
	row("interface", fmt.Sprintf("%s (port %d, mtu %d)", s.Interface, s.ListenPort, s.MTU))
	row("registry", fmt.Sprintf("%s, last sync %s", s.Registry, orDash(s.LastSync)))
	row("peers", fmt.Sprintf("%d (%s; %s)", s.Peers, counts(s.PeersByState), counts(s.PeersByPath)))
	if s.KeptAlive > 0 {
		row("kept alive", fmt.Sprintf("%d peer(s) missing from the registry but alive on the wire (%s): kept until silent for the hold-down",
			s.KeptAlive, counts(s.KeptAliveByNetwork)))
	}
	row("firewall", fmt.Sprintf("%s (conntrack %d of %d)", s.Firewall, s.Conntrack[0], s.Conntrack[1]))
	if len(s.FirewallDrops) > 0 {
		row("firewall drops", counts(uint64Map(s.FirewallDrops)))
	}
	if s.FirewallError != "" {
		row("firewall error", s.FirewallError)
	}
	if s.PolicyWarning != "" {
		row("policy warning", s.PolicyWarning)
	}
	if s.PolicyError != "" {
		row("policy", "REJECTED, previous kept: "+strings.ReplaceAll(s.PolicyError, "\n  ", " "))
	}
	b := "closed"
	if s.Breaker.Tripped {
		b = fmt.Sprintf("TRIPPED: holding %d removal(s) (limit %d); release with `meshctl breaker release`", s.Breaker.Held, s.Breaker.Limit)
	}
	row("breaker", b)
	row("device updates", applyText(s.Apply))
	if s.DNS != nil {
		row("dns", dnsLine(*s.DNS))
	}
	if l := s.Lazy; l != nil {
		row("lazy peers", fmt.Sprintf("%d in the device, %d idle (out after %s without traffic); packets for idle peers: held %d, sent on %d, dropped %d; initiations: identified %d, refused %d, throttled %d",
			l.InDevice, l.Idle, l.IdleAfter, l.Held, l.Replayed, l.HeldDrops, l.Identified, l.Refused, l.Throttled))
	} else {
		// On by default: say so when a config turned them off.
		row("lazy peers", "off (peers.lazy: false): every known peer is in the device")
	}
	row("trust", trustLine(s))
	if len(s.UnsignedHosts) > 0 {
		row("unsigned", fmt.Sprintf("%d host(s) not yet signing: %s", len(s.UnsignedHosts), strings.Join(s.UnsignedHosts, ", ")))
	}
	if len(s.BadRecords) > 0 {
		row("bad records", counts(intMap(s.BadRecords))+" since start")
	}
	for _, f := range s.RefusedRecords {
		row("refused", fmt.Sprintf("%s: %s: %s", f.Host, f.Reason, f.Detail))
	}
	if more := s.RefusedTotal - len(s.RefusedRecords); more > 0 {
		row("refused", fmt.Sprintf("and %d more", more))
	}
	for _, r := range s.Refusals {
		row("recently refused", fmt.Sprintf("%s %s %s: %s", r.At, r.Reason, r.Node, r.Detail))
	}
	if s.TagError != "" {
		row("ec2 tags", "FAILING: "+s.TagError)
	}
	row("version", s.Version+", up "+s.Uptime)
	tw.Flush()
}

// applyText says whether the device holds what meshd wants it to.
func applyText(a admin.Apply) string {
	switch {
	case a.Pending > 0:
		return fmt.Sprintf("FAILING: %d peer change(s) not in the device, retry at %s; %d failure(s), last: %s", a.Pending, orDash(a.RetryAt), a.Failures, a.LastError)
	case a.Failures > 0:
		return fmt.Sprintf("in step (%d failure(s) since start, all retried; last at %s: %s)", a.Failures, a.LastErrorAt, a.LastError)
	}
	return "in step"
}

// trustLine says whether records are signed, and under which certificate.
func trustLine(s admin.Status) string {
	if s.Trust != "ca" {
		return "none (ZooKeeper is trusted for identity; set trust.ca_file)"
	}
	line := "ca, " + s.TrustMode
	if c := s.Cert; c != nil {
		line += fmt.Sprintf(", cert %s until %s, groups [%s]", c.Serial, c.NotAfter, strings.Join(c.Groups, " "))
	}
	if s.CertError != "" {
		line += "; RENEWAL REFUSED: " + s.CertError
	}
	return line
}

func intMap(m map[string]int64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func handshakeAge(rfc3339 string, now time.Time) string {
	if rfc3339 == "" {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, rfc3339)
	if err != nil {
		return rfc3339
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func writeExplanation(w io.Writer, ex admin.Explanation) {
	for _, s := range ex.Steps {
		mark := "ok  "
		if !s.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s %-16s %s\n", mark, s.Check, s.Detail)
	}
	fmt.Fprintf(w, "\n%s\n", ex.Cause)
}

func writeFleet(w io.Writer, f admin.Fleet) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNETWORK\tOVERLAY IP\tVERSION\tSTATE\tSIGNED")
	for _, h := range f.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Network, h.OverlayIP, h.Version, h.State, orDash(h.Signed))
	}
	tw.Flush()
	fmt.Fprintln(w)
	nets := make([]string, 0, len(f.ByNetwork))
	for n := range f.ByNetwork {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		fmt.Fprintf(w, "network %s: %s\n", n, counts(f.ByNetwork[n]))
	}
	fmt.Fprintf(w, "versions: %s\n%s\n", counts(f.ByVersion), f.Summary)
}

// dnsLine says which zone this host serves, where, and who routes to it.
func dnsLine(d admin.DNSStatus) string {
	if d.Listen == "" {
		return fmt.Sprintf("%s NOT SERVED: %s", d.Domain, d.Error)
	}
	return fmt.Sprintf("%s on %s (%d answered, %d from non-members dropped); systemd-resolved: %s", d.Domain, d.Listen, d.Answered, d.Dropped, d.Resolved)
}

func uint64Map(m map[string]uint64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
