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
		if p.State != "up" && p.Reason != "" {
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
	row("public key", s.PublicKey)
	row("interface", fmt.Sprintf("%s (port %d, mtu %d)", s.Interface, s.ListenPort, s.MTU))
	row("registry", fmt.Sprintf("%s, last sync %s", s.Registry, orDash(s.LastSync)))
	row("peers", fmt.Sprintf("%d (%s; %s)", s.Peers, counts(s.PeersByState), counts(s.PeersByPath)))
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
	if len(s.BadRecords) > 0 {
		row("bad records", counts(intMap(s.BadRecords)))
	}
	if s.TagError != "" {
		row("ec2 tags", "FAILING: "+s.TagError)
	}
	row("version", s.Version+", up "+s.Uptime)
	tw.Flush()
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
	fmt.Fprintln(tw, "NAME\tNETWORK\tOVERLAY IP\tVERSION\tSTATE")
	for _, h := range f.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.Network, h.OverlayIP, h.Version, h.State)
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

func uint64Map(m map[string]uint64) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
