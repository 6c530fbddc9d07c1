package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshd/meshd/internal/policy"
)

// Set and chain names. Set names are limited to 31 bytes by the kernel.
// Each set has an IPv6 twin named with a "6" (see setName).
const (
	setMembers = "meshd-members" // overlay addresses of every member (and their underlay addresses when judged by policy)
	setPeers   = "meshd-peers"   // underlay addresses WireGuard packets may come from
	setSSH     = "meshd-ssh"     // break-glass SSH sources (hash:net)

	chainInput    = "MESHD-INPUT"
	chainOverlay  = "MESHD-OVERLAY"
	chainUnderlay = "MESHD-UNDERLAY"
	chainPolicy   = "MESHD-POLICY"
	chainForward  = "MESHD-FORWARD" // forwarded traffic: which new connections are judged
	chainFPolicy  = "MESHD-FPOLICY" // ...and the judgement, by original destination
	chainMSS      = "MESHD-MSS"
	// chainNoTrack is retired: an older meshd untracked WireGuard's
	// datagrams in raw (see retiredHooks).
	chainNoTrack = "MESHD-NOTRACK"
)

// Rule comments name the counters the metrics report, one per drop reason.
const (
	CounterWGUnknown  = "meshd wg from unknown"
	CounterOverlayDen = "meshd overlay denied"
	CounterSpoofed    = "meshd overlay via underlay"
	CounterUnderlay   = "meshd underlay denied"
	CounterForwardDen = "meshd forward denied"
)

// setName is the set of one family: IPv6 members live in the twin set
// with a "6" appended, as ipset sets hold one family each.
func setName(base string, v6 bool) string {
	if v6 {
		return base + "6"
	}
	return base
}

// setOf is the set of addr's family.
func setOf(base string, a netip.Addr) string { return setName(base, a.Is6() && !a.Is4In6()) }

// groupSet is the set holding a group's members' addresses.
func groupSet(g string) string {
	if g == policy.Any {
		return setMembers
	}
	if n := "meshd-g-" + g; len(n) <= 28 { // room for the family and staging suffixes
		return n
	}
	sum := sha256.Sum256([]byte(g))
	return "meshd-g-" + hex.EncodeToString(sum[:10])
}

// Allow opens ports on the underlay to sources whatever the policy says.
type Allow struct {
	Ports []policy.Port
	From  []netip.Prefix
}

// ruleConfig is what the fixed rules depend on.
type ruleConfig struct {
	Mode       string // enforce | shadow
	Interface  string
	ListenPort int
	Overlay    netip.Prefix // the pool: reachable only through the mesh interface
	SSH        bool         // break-glass sources configured
	V6         bool         // render for ip6tables
	// Members: members' underlay addresses are judged by the group policy.
	Members bool
	Allow   []Allow
	DNSPort int // meshd's DNS on the overlay, open to members; 0 = none
}

// verdict renders the end of a denying rule that shadow mode only counts:
// a drop when enforcing; in shadow mode no target at all.
func verdict(mode string) string {
	if mode == "enforce" {
		return " -j DROP"
	}
	return ""
}

// renderFixed renders meshd's chains of one family for
// iptables-restore --noflush (ip6tables-restore for V6). Listed chains are
// flushed and refilled in one transaction, so a restart after a crash
// leaves exactly one copy of each rule and never an open window. Their
// number does not depend on the number of members: members are set
// entries.
//
// In enforce mode every new inbound connection is dropped unless a rule
// admits it; shadow mode only counts what the policy and the underlay
// default deny would drop. The WireGuard-port allowlist and the
// anti-spoof rules drop in both modes: they never block legitimate
// traffic, so there is nothing to roll out in stages.
func renderFixed(c ruleConfig) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	set := func(base string) string { return setName(base, c.V6) }
	w("*filter")
	w(":%s - [0:0]", chainInput)
	w(":%s - [0:0]", chainOverlay)
	w(":%s - [0:0]", chainUnderlay)
	w(":%s - [0:0]", chainForward)
	// Loopback first: a host calling its own overlay address does so over
	// lo, which the anti-spoof rules below would take for the underlay.
	w(`-A %s -i lo -j ACCEPT`, chainInput)
	// Established flows first, WireGuard's own among them: its datagrams
	// are tracked like any flow, so all but a flow's first skip the
	// allowlist's set lookup (which, with the raw-table walk untracking
	// cost, was half of what the firewall cost a 64-byte flood; see
	// bench/PROFILES.md). A new flow to the WireGuard port still passes
	// the allowlist, and a member's flows are forgotten when it leaves
	// (Firewall.forgetLocked), so leaving cuts it off as a set delete did.
	// A datagram forging a member's source address now leaves an
	// unreplied entry for 30 s; a full table evicts unreplied entries
	// first, so such a flood cannot push out established flows.
	w(`-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT`, chainInput)
	if c.SSH {
		w(`-A %s -p tcp --dport 22 -m set --match-set %s src -m comment --comment "meshd breakglass ssh" -j ACCEPT`, chainInput, set(setSSH))
	}
	w(`-A %s -p udp --dport %d -m set --match-set %s src -m comment --comment "meshd wg from peers" -j ACCEPT`, chainInput, c.ListenPort, set(setPeers))
	w(`-A %s -p udp --dport %d -m comment --comment "%s" -j DROP`, chainInput, c.ListenPort, CounterWGUnknown)
	if !c.V6 {
		// The kernel answers for a local address on any interface: without
		// these, a neighbour on the underlay could reach overlay addresses
		// directly, around WireGuard and the policy, or pass for a member
		// with an overlay source.
		w(`-A %s -s %s ! -i %s -m comment --comment "%s" -j DROP`, chainInput, c.Overlay, c.Interface, CounterSpoofed)
		w(`-A %s -d %s ! -i %s -m comment --comment "%s" -j DROP`, chainInput, c.Overlay, c.Interface, CounterSpoofed)
	}
	w(`-A %s -i %s -j %s`, chainInput, c.Interface, chainOverlay)
	w(`-A %s ! -i %s -j %s`, chainInput, c.Interface, chainUnderlay)
	if c.DNSPort != 0 && !c.V6 {
		// meshd's names are for every member, whatever the policy opens.
		for _, proto := range []string{"udp", "tcp"} {
			w(`-A %s -p %s --dport %d -m set --match-set %s src -m comment --comment "meshd dns from members" -j ACCEPT`, chainOverlay, proto, c.DNSPort, set(setMembers))
		}
	}
	w(`-A %s -j %s`, chainOverlay, chainPolicy)
	w(`-A %s -m comment --comment "%s"%s`, chainOverlay, CounterOverlayDen, verdict(c.Mode))
	renderUnderlay(w, c)
	// Forwarded traffic (DNAT'd ports such as Docker-published ones and
	// NodePorts, and anything arriving over the overlay for a network
	// behind this host) is judged like local traffic, by its original
	// destination. Established flows and containers' own outbound
	// connections (neither DNAT'd nor from the overlay) are left to the
	// rest of FORWARD: meshd only drops here, it never accepts.
	w(`-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN`, chainForward)
	w(`-A %s -m conntrack --ctstate DNAT -j %s`, chainForward, chainFPolicy)
	w(`-A %s -i %s -j %s`, chainForward, c.Interface, chainFPolicy)
	w("COMMIT")
	if !c.V6 { // the overlay is IPv4: no IPv6 crosses the mesh interface
		w("*mangle")
		w(":%s - [0:0]", chainMSS)
		w(`-A %s -o %s -p tcp --tcp-flags SYN,RST SYN -m comment --comment "meshd clamp mss" -j TCPMSS --clamp-mss-to-pmtu`, chainMSS, c.Interface)
		w("COMMIT")
	}
	return b.String()
}

// renderUnderlay renders the chain for new inbound connections on every
// interface but the overlay: what the network itself needs, the explicit
// allows, members judged by the policy, and the default deny.
func renderUnderlay(w func(string, ...any), c ruleConfig) {
	ch, set := chainUnderlay, setName(setPeers, c.V6)
	if c.V6 {
		// Path MTU discovery and errors conntrack cannot relate to a flow
		// (one already expired; live flows get theirs as RELATED), and neighbour discovery,
		// without which IPv6 does not work at all. NDP is link-local:
		// the kernel checks its hop limit of 255.
		for _, t := range []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
			"router-advertisement", "neighbour-solicitation", "neighbour-advertisement"} {
			w(`-A %s -p ipv6-icmp -m icmp6 --icmpv6-type %s -j ACCEPT`, ch, t)
		}
		w(`-A %s -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -m set --match-set %s src -m comment --comment "meshd echo from members" -j ACCEPT`, ch, set)
		w(`-A %s -p udp --sport 547 --dport 546 -m comment --comment "meshd dhcp client" -j ACCEPT`, ch)
	} else {
		for _, t := range []string{"destination-unreachable", "time-exceeded", "parameter-problem"} {
			w(`-A %s -p icmp -m icmp --icmp-type %s -j ACCEPT`, ch, t)
		}
		w(`-A %s -p icmp -m icmp --icmp-type echo-request -m set --match-set %s src -m comment --comment "meshd echo from members" -j ACCEPT`, ch, set)
		w(`-A %s -p udp --sport 67 --dport 68 -m comment --comment "meshd dhcp client" -j ACCEPT`, ch)
	}
	renderAllows(w, ch, c, portMatch, "ACCEPT")
	if c.Members {
		w(`-A %s -m set --match-set %s src -j %s`, ch, set, chainPolicy)
	}
	w(`-A %s -m comment --comment "%s"%s`, ch, CounterUnderlay, verdict(c.Mode))
}

// renderAllows renders firewall.underlay.allow into chain ch, one rule per
// source and port of this family: local traffic is matched by its port,
// forwarded traffic by its original destination port (match), and target
// says what an admitted packet does there.
func renderAllows(w func(string, ...any), ch string, c ruleConfig, match func(policy.Port, bool) string, target string) {
	for i, a := range c.Allow {
		for _, from := range a.From {
			if from.Addr().Is6() != c.V6 {
				continue
			}
			src := ""
			if from.Bits() > 0 {
				src = " -s " + from.String()
			}
			for _, p := range a.Ports {
				w(`-A %s%s %s -m comment --comment "meshd underlay allow %d %s" -j %s`, ch, src, match(p, c.V6), i, p, target)
			}
		}
	}
}

// portMatch renders the match of one policy port.
func portMatch(p policy.Port, v6 bool) string {
	switch {
	case p.Proto == "icmp" && v6:
		return "-p ipv6-icmp"
	case p.Proto == "icmp":
		return "-p icmp"
	case p.From == p.To:
		return fmt.Sprintf("-p %s --dport %d", p.Proto, p.From)
	}
	return fmt.Sprintf("-p %s --dport %d:%d", p.Proto, p.From, p.To)
}

// renderPolicy renders the policy chain of one family for this host:
// accept rules for the policy's rules whose "to" is one of this host's
// groups. With no policy, every member is accepted. The chain judges
// overlay traffic and, when members are judged on the underlay, traffic
// from members' underlay addresses: the group sets hold both.
func renderPolicy(p *policy.Policy, selfGroups []string, v6 bool) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("*filter")
	w(":%s - [0:0]", chainPolicy)
	members := setName(setMembers, v6)
	if p == nil {
		w(`-A %s -m set --match-set %s src -m comment --comment "meshd members (no policy)" -j ACCEPT`, chainPolicy, members)
		w("COMMIT")
		return b.String()
	}
	if p.AllowsEcho() {
		echo := "-p icmp --icmp-type echo-request"
		if v6 {
			echo = "-p ipv6-icmp --icmpv6-type echo-request"
		}
		w(`-A %s %s -m set --match-set %s src -m comment --comment "meshd echo" -j ACCEPT`, chainPolicy, echo, members)
	}
	renderRules(w, chainPolicy, p, selfGroups, v6, portMatch, "ACCEPT")
	w("COMMIT")
	return b.String()
}

// renderRules renders into chain ch the policy's rules whose "to" is one
// of this host's groups, one rule per port: sources by their group's set,
// ports by match (local or original destination), target what an admitted
// packet does there.
func renderRules(w func(string, ...any), ch string, p *policy.Policy, selfGroups []string, v6 bool,
	match func(policy.Port, bool) string, target string) {
	mine := map[string]bool{policy.Any: true}
	for _, g := range selfGroups {
		mine[g] = true
	}
	for i, r := range p.Rules {
		if !mine[r.To] {
			continue
		}
		for _, port := range r.Ports {
			w(`-A %s %s -m set --match-set %s src -m comment --comment "meshd policy %d %s<-%s %s" -j %s`,
				ch, match(port, v6), setName(groupSet(r.From), v6), i, r.To, r.From, port, target)
		}
	}
}

// renderForwardPolicy renders the judgement of forwarded new connections:
// what the policy (or, with none, membership) and the underlay allows
// admit by original destination port returns to FORWARD; the rest is
// dropped (counted, in shadow mode).
func renderForwardPolicy(p *policy.Policy, selfGroups []string, c ruleConfig) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	ch := chainFPolicy
	w("*filter")
	w(":%s - [0:0]", ch)
	renderAllows(w, ch, c, origPortMatch, "RETURN")
	if p == nil {
		w(`-A %s -m set --match-set %s src -m comment --comment "meshd members (no policy)" -j RETURN`, ch, setName(setMembers, c.V6))
	} else {
		renderRules(w, ch, p, selfGroups, c.V6, origPortMatch, "RETURN")
	}
	w(`-A %s -m comment --comment "%s"%s`, ch, CounterForwardDen, verdict(c.Mode))
	w("COMMIT")
	return b.String()
}

// origPortMatch matches a policy port against the connection's original
// destination, before DNAT rewrote it.
func origPortMatch(p policy.Port, v6 bool) string {
	switch {
	case p.Proto == "icmp":
		return portMatch(p, v6)
	case p.From == p.To:
		return fmt.Sprintf("-m conntrack --ctproto %s --ctorigdstport %d", p.Proto, p.From)
	}
	return fmt.Sprintf("-m conntrack --ctproto %s --ctorigdstport %d:%d", p.Proto, p.From, p.To)
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

// hooks are meshd's jumps of one family. The MSS clamp's is narrowed to
// the packets its chain concerns and hooked where only forwarded packets
// cross it: a local socket takes its MSS from the mesh interface's MTU, so
// only forwarded handshakes (a container's, whose MTU is not the mesh's)
// need the clamp, and local traffic walks no mangle chain at all.
func (f *Firewall) hooks(v6 bool) []hook {
	hs := []hook{
		{"filter", "INPUT", chainInput, nil},
		{"filter", "FORWARD", chainForward, nil},
	}
	if !v6 {
		hs = append(hs, hook{"mangle", "FORWARD", chainMSS, []string{"-o", f.cfg.Interface, "-p", "tcp"}})
	}
	return hs
}

// retiredHooks are jumps an older meshd made and this one removes (at
// start, and in Flush): the raw table's, which untracked WireGuard's
// datagrams, and the MSS clamp's from mangle POSTROUTING, which every
// outgoing packet walked. The built-in chains they leave empty are
// deleted too, if nothing else uses them: iptables-nft hooks a built-in
// chain into the kernel whether or not it holds rules, and every packet
// would still walk it.
var retiredHooks = []hook{
	{"raw", "PREROUTING", chainNoTrack, nil},
	{"raw", "OUTPUT", chainNoTrack, nil},
	{"mangle", "POSTROUTING", chainMSS, nil},
}
