package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshd/meshd/internal/policy"
)

// Set and chain names. Set names are limited to 31 bytes by the kernel.
const (
	setMembers = "meshd-members" // overlay addresses of every member
	setPeers   = "meshd-peers"   // underlay addresses WireGuard packets may come from
	setSSH     = "meshd-ssh"     // break-glass SSH sources (hash:net)

	chainInput   = "MESHD-INPUT"
	chainOverlay = "MESHD-OVERLAY"
	chainPolicy  = "MESHD-POLICY"
	chainMSS     = "MESHD-MSS"
	chainNoTrack = "MESHD-NOTRACK"
)

// Rule comments name the counters the metrics report.
const (
	CounterWGUnknown  = "meshd wg from unknown"
	CounterOverlayDen = "meshd overlay denied"
	CounterSpoofed    = "meshd overlay via underlay"
)

// groupSet is the set holding a group's members' overlay addresses.
func groupSet(g string) string {
	if g == policy.Any {
		return setMembers
	}
	if n := "meshd-g-" + g; len(n) <= 28 { // room for the staging suffix
		return n
	}
	sum := sha256.Sum256([]byte(g))
	return "meshd-g-" + hex.EncodeToString(sum[:10])
}

// ruleConfig is what the fixed rules depend on.
type ruleConfig struct {
	Mode       string // enforce | shadow
	Interface  string
	ListenPort int
	Overlay    netip.Prefix // the pool: reachable only through the mesh interface
	SSH        bool         // break-glass sources configured
}

// verdict renders the end of a denying rule: a drop when enforcing; in
// shadow mode no target at all, so the rule only counts.
func verdict(mode string) string {
	if mode == "enforce" {
		return " -j DROP"
	}
	return ""
}

// renderFixed renders meshd's chains for iptables-restore --noflush. Listed
// chains are flushed and refilled in one transaction, so a restart after a
// crash leaves exactly one copy of each rule and never an open window.
// Their number does not depend on the number of members: members are set
// entries.
func renderFixed(c ruleConfig) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*filter")
	w(":%s - [0:0]", chainInput)
	w(":%s - [0:0]", chainOverlay)
	// Loopback first: a host calling its own overlay address does so over
	// lo, which the anti-spoof rule below would take for the underlay.
	w(`-A %s -i lo -j ACCEPT`, chainInput)
	if c.SSH {
		w(`-A %s -p tcp --dport 22 -m set --match-set %s src -m comment --comment "meshd breakglass ssh" -j ACCEPT`, chainInput, setSSH)
	}
	w(`-A %s -p udp --dport %d -m set --match-set %s src -m comment --comment "meshd wg from peers" -j ACCEPT`, chainInput, c.ListenPort, setPeers)
	w(`-A %s -p udp --dport %d -m comment --comment "%s"%s`, chainInput, c.ListenPort, CounterWGUnknown, verdict(c.Mode))
	// The kernel answers for a local address on any interface: without
	// this, a neighbour on the underlay could reach overlay addresses
	// directly, around WireGuard and the policy.
	w(`-A %s -d %s ! -i %s -m comment --comment "%s"%s`, chainInput, c.Overlay, c.Interface, CounterSpoofed, verdict(c.Mode))
	w(`-A %s -i %s -j %s`, chainInput, c.Interface, chainOverlay)
	w(`-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`, chainOverlay)
	w(`-A %s -j %s`, chainOverlay, chainPolicy)
	w(`-A %s -m comment --comment "%s"%s`, chainOverlay, CounterOverlayDen, verdict(c.Mode))
	w("COMMIT")
	// WireGuard's underlay datagrams are filtered by source set alone, so
	// tracking them only costs a conntrack entry lookup per packet.
	// The hooks into MESHD-NOTRACK and MESHD-MSS carry the match (see
	// hooks), so other packets skip each chain in one rule.
	w("*raw")
	w(":%s - [0:0]", chainNoTrack)
	w(`-A %s -m comment --comment "meshd wg untracked" -j CT --notrack`, chainNoTrack)
	w("COMMIT")
	w("*mangle")
	w(":%s - [0:0]", chainMSS)
	w(`-A %s -o %s -p tcp --tcp-flags SYN,RST SYN -m comment --comment "meshd clamp mss" -j TCPMSS --clamp-mss-to-pmtu`, chainMSS, c.Interface)
	w("COMMIT")
	return b.String()
}

// renderPolicy renders the policy chain for this host: accept rules for the
// policy's rules whose "to" is one of this host's groups. With no policy,
// every member is accepted.
func renderPolicy(p *policy.Policy, selfGroups []string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*filter")
	w(":%s - [0:0]", chainPolicy)
	if p == nil {
		w(`-A %s -m set --match-set %s src -m comment --comment "meshd members (no policy)" -j ACCEPT`, chainPolicy, setMembers)
		w("COMMIT")
		return b.String()
	}
	if p.AllowsEcho() {
		w(`-A %s -p icmp --icmp-type echo-request -m set --match-set %s src -m comment --comment "meshd echo" -j ACCEPT`, chainPolicy, setMembers)
	}
	mine := map[string]bool{policy.Any: true}
	for _, g := range selfGroups {
		mine[g] = true
	}
	for i, r := range p.Rules {
		if !mine[r.To] {
			continue
		}
		for _, port := range r.Ports {
			match := "-p " + port.Proto
			if port.Proto != "icmp" {
				match += fmt.Sprintf(" --dport %d", port.From)
				if port.To != port.From {
					match = fmt.Sprintf("-p %s --dport %d:%d", port.Proto, port.From, port.To)
				}
			}
			w(`-A %s %s -m set --match-set %s src -m comment --comment "meshd policy %d %s<-%s %s" -j ACCEPT`,
				chainPolicy, match, groupSet(r.From), i, r.To, r.From, port)
		}
	}
	w("COMMIT")
	return b.String()
}

// policyGroups lists the groups whose sets a rendered policy refers to;
// the sets must exist before the rules that name them.
func policyGroups(p *policy.Policy, selfGroups []string) []string {
	if p == nil {
		return nil
	}
	mine := map[string]bool{policy.Any: true}
	for _, g := range selfGroups {
		mine[g] = true
	}
	var out []string
	for _, r := range p.Rules {
		if mine[r.To] && r.From != policy.Any {
			out = append(out, r.From)
		}
	}
	return out
}

// hook is one jump from a built-in chain into one of meshd's.
type hook struct {
	table, from, to string
	match           []string // in iptables -S form, so an existing hook is recognised
}

// hooks are meshd's jumps. All but the filter hook are narrowed to the
// packets their chain concerns: unconditional, every packet walked the
// chain, and in a 64-byte UDP flood the raw OUTPUT and mangle POSTROUTING
// walks alone took 3% of both cores (perf, bench/PROFILES.md).
func (f *Firewall) hooks() []hook {
	port := strconv.Itoa(f.cfg.ListenPort)
	return []hook{
		{"filter", "INPUT", chainInput, nil},
		{"mangle", "POSTROUTING", chainMSS, []string{"-o", f.cfg.Interface, "-p", "tcp"}},
		{"raw", "PREROUTING", chainNoTrack, []string{"-p", "udp", "-m", "udp", "--dport", port}},
		{"raw", "OUTPUT", chainNoTrack, []string{"-p", "udp", "-m", "udp", "--sport", port}},
	}
}
