// Package firewall replaces security groups with allowlists in the host
// firewall: ipset sets hold the members (every overlay address, one set per
// group, the underlay addresses of peers), and a small fixed set of
// iptables rules in meshd's own chains refers to them. A member change is a
// set add or delete, O(1), never a rule reload; the number of rules does not
// grow with the fleet. Modes: enforce, shadow (count what would be dropped,
// drop nothing), off (the caller installs nothing).
//
// Nothing outside meshd's chains and sets is touched: one jump rule hooks
// each chain in, built-in policies are left alone, and Close removes it all.
package firewall

import (
	"bufio"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/meshd/meshd/internal/policy"
)

// Config configures the firewall of one host.
type Config struct {
	Mode          string // enforce | shadow
	Interface     string // the mesh interface
	ListenPort    int    // WireGuard's UDP port
	Overlay       netip.Prefix
	BreakglassSSH []netip.Prefix
	Groups        []string // this host's groups: which policy rules apply here
	// DNSPort, if set, admits members' DNS queries (UDP and TCP) on the
	// overlay whatever the policy says: meshd's names are for every member.
	DNSPort int
	Logger  *slog.Logger
}

// Host is one mesh member as the firewall sees it.
type Host struct {
	ID        string
	OverlayIP netip.Addr
	Groups    []string
	Underlay  []netip.Addr // addresses its WireGuard packets may come from
}

// Firewall is one host's allowlist firewall.
type Firewall struct {
	cfg   Config
	log   *slog.Logger
	sets  sets
	rules rules

	mu        sync.Mutex
	hosts     map[string]Host
	underlay  map[netip.Addr]int // refcounts: hosts behind one NAT share an address
	groupSets map[string]bool
	policy    *policy.Policy
}

// New returns a firewall on the kernel's ipset and iptables.
func New(cfg Config) *Firewall {
	return newWith(cfg, netlinkSets{}, iptables{})
}

func newWith(cfg Config, s sets, r rules) *Firewall {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Firewall{cfg: cfg, log: cfg.Logger.With("component", "firewall"), sets: s, rules: r,
		hosts: map[string]Host{}, underlay: map[netip.Addr]int{}, groupSets: map[string]bool{}}
}

// Start creates the sets (adopting those a crashed run left), installs the
// chains in one transaction and hooks them in with one jump each. Members
// already in adopted sets stay until Resync replaces them, so a restart
// never opens an empty window.
func (f *Firewall) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	raiseConntrack(f.log)
	for name, typ := range map[string]string{setMembers: "hash:ip", setPeers: "hash:ip", setSSH: "hash:net"} {
		if err := f.sets.Ensure(name, typ); err != nil {
			return err
		}
	}
	for _, p := range f.cfg.BreakglassSSH {
		if err := f.sets.Add(setSSH, p); err != nil {
			return err
		}
	}
	rc := ruleConfig{Mode: f.cfg.Mode, Interface: f.cfg.Interface, ListenPort: f.cfg.ListenPort, Overlay: f.cfg.Overlay, SSH: len(f.cfg.BreakglassSSH) > 0, DNSPort: f.cfg.DNSPort}
	// The policy chain must exist before the chain that jumps to it.
	if err := f.rules.Restore(renderPolicy(nil, nil)); err != nil {
		return fmt.Errorf("firewall: install policy chain: %w", err)
	}
	if err := f.rules.Restore(renderFixed(rc)); err != nil {
		return fmt.Errorf("firewall: install chains: %w", err)
	}
	if err := f.applyPolicyLocked(); err != nil {
		return err
	}
	for _, h := range f.hooks() {
		if err := f.rules.EnsureJump(h.table, h.from, h.to, h.match...); err != nil {
			return fmt.Errorf("firewall: hook %s into %s: %w", h.to, h.from, err)
		}
	}
	f.log.Info("firewall started", "mode", f.cfg.Mode, "interface", f.cfg.Interface, "wg_port", f.cfg.ListenPort)
	return nil
}

// SetHost brings one member's entries up to date: only what changed for
// this host is added or deleted.
func (f *Firewall) SetHost(h Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.hosts[h.ID]
	f.hosts[h.ID] = h
	if had {
		return f.diffLocked(old, h)
	}
	return f.diffLocked(Host{}, h)
}

// RemoveHost deletes one member's entries.
func (f *Firewall) RemoveHost(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.hosts[id]
	if !had {
		return nil
	}
	delete(f.hosts, id)
	return f.diffLocked(old, Host{})
}

func (f *Firewall) diffLocked(old, cur Host) error {
	var errs []error
	add := func(set string, a netip.Addr) {
		if err := f.sets.Add(set, netip.PrefixFrom(a, a.BitLen())); err != nil {
			errs = append(errs, err)
		}
	}
	del := func(set string, a netip.Addr) {
		if err := f.sets.Del(set, netip.PrefixFrom(a, a.BitLen())); err != nil {
			errs = append(errs, err)
		}
	}
	if old.OverlayIP != cur.OverlayIP {
		if old.OverlayIP.IsValid() {
			del(setMembers, old.OverlayIP)
		}
		if cur.OverlayIP.IsValid() {
			add(setMembers, cur.OverlayIP)
		}
	}
	for _, g := range cur.Groups {
		if err := f.ensureGroupLocked(g); err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(old.Groups, g) || old.OverlayIP != cur.OverlayIP {
			add(groupSet(g), cur.OverlayIP)
		}
	}
	for _, g := range old.Groups {
		if !slices.Contains(cur.Groups, g) || (old.OverlayIP != cur.OverlayIP && old.OverlayIP.IsValid()) {
			del(groupSet(g), old.OverlayIP)
		}
	}
	for _, a := range cur.Underlay {
		if f.underlay[a]++; f.underlay[a] == 1 {
			add(setPeers, a)
		}
	}
	for _, a := range old.Underlay {
		if f.underlay[a]--; f.underlay[a] <= 0 {
			delete(f.underlay, a)
			del(setPeers, a)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("firewall: host %s: %v", cur.ID+old.ID, errs)
	}
	return nil
}

func (f *Firewall) ensureGroupLocked(g string) error {
	name := groupSet(g)
	if f.groupSets[name] {
		return nil
	}
	if err := f.sets.Ensure(name, "hash:ip"); err != nil {
		return err
	}
	f.groupSets[name] = true
	return nil
}

// SetPolicy replaces the group policy (nil: every member may reach every
// member). Only the policy chain is rewritten, in one transaction.
func (f *Firewall) SetPolicy(p *policy.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.policy
	f.policy = p
	if err := f.applyPolicyLocked(); err != nil {
		f.policy = prev
		return err
	}
	f.log.Info("policy applied", "rules", ruleCount(p))
	return nil
}

func ruleCount(p *policy.Policy) int {
	if p == nil {
		return -1
	}
	return len(p.Rules)
}

func (f *Firewall) applyPolicyLocked() error {
	for _, s := range policySets(f.policy, f.cfg.Groups) {
		if s == setMembers {
			continue
		}
		if err := f.ensureGroupLocked(strings.TrimPrefix(s, "meshd-g-")); err != nil {
			return err
		}
	}
	if err := f.rules.Restore(renderPolicy(f.policy, f.cfg.Groups)); err != nil {
		return fmt.Errorf("firewall: apply policy: %w", err)
	}
	return nil
}

// Resync makes the sets hold exactly hosts: each set is filled under a
// staging name and swapped in atomically, so no set is ever empty in force.
func (f *Firewall) Resync(hosts []Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string][]netip.Addr{setMembers: nil, setPeers: nil}
	for name := range f.groupSets {
		want[name] = nil
	}
	f.hosts, f.underlay = map[string]Host{}, map[netip.Addr]int{}
	for _, h := range hosts {
		f.hosts[h.ID] = h
		want[setMembers] = append(want[setMembers], h.OverlayIP)
		for _, g := range h.Groups {
			if err := f.ensureGroupLocked(g); err != nil {
				return err
			}
			want[groupSet(g)] = append(want[groupSet(g)], h.OverlayIP)
		}
		for _, a := range h.Underlay {
			if f.underlay[a]++; f.underlay[a] == 1 {
				want[setPeers] = append(want[setPeers], a)
			}
		}
	}
	for name, addrs := range want {
		tmp := name + "-t"
		f.sets.Destroy(tmp)
		if err := f.sets.Ensure(tmp, "hash:ip"); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := f.sets.Add(tmp, netip.PrefixFrom(a, a.BitLen())); err != nil {
				return err
			}
		}
		if err := f.sets.Swap(tmp, name); err != nil {
			return err
		}
		if err := f.sets.Destroy(tmp); err != nil {
			return err
		}
	}
	return nil
}

// Close removes meshd's jumps, chains and sets.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hooks() {
		f.rules.RemoveJump(h.table, h.from, h.to)
	}
	f.rules.DeleteChain("raw", chainNoTrack)
	for _, c := range []string{chainInput, chainOverlay, chainPolicy} {
		f.rules.DeleteChain("filter", c)
	}
	f.rules.DeleteChain("mangle", chainMSS)
	names, _ := f.sets.Names()
	for _, n := range names {
		if strings.HasPrefix(n, "meshd-") {
			if err := f.sets.Destroy(n); err != nil {
				f.log.Warn("close: destroy set", "set", n, "err", err)
			}
		}
	}
	return nil
}

var counterRe = regexp.MustCompile(`^\[(\d+):(\d+)\] .*--comment "(meshd [^"]*)"`)

// Counters reports packets per meshd rule, by the rule's comment: drops in
// enforce mode, would-drops in shadow mode.
func (f *Firewall) Counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	text, err := f.rules.Save("filter")
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if m := counterRe.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			out[m[3]] += n
		}
	}
	return out, nil
}

// Conntrack reports the connection-tracking table's use.
func Conntrack() (count, max int) {
	return readInt("/proc/sys/net/netfilter/nf_conntrack_count"), readInt("/proc/sys/net/netfilter/nf_conntrack_max")
}

func readInt(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// raiseConntrack lifts nf_conntrack_max to a floor scaled to memory: a full
// table drops new connections, which the rollout of the design this
// replaces learned the hard way.
func raiseConntrack(log *slog.Logger) {
	const path = "/proc/sys/net/netfilter/nf_conntrack_max"
	cur := readInt(path)
	if cur == 0 {
		return // conntrack not loaded yet; the sysctl.d drop-in covers boot
	}
	memMiB := readMemMiB()
	floor := min(max(memMiB*32, 131072), 2097152)
	if cur >= floor {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(floor)), 0o644); err != nil {
		log.Warn("conntrack table below the floor and not writable here", "nf_conntrack_max", cur, "floor", floor, "err", err)
		return
	}
	log.Info("raised nf_conntrack_max", "from", cur, "to", floor)
}

func readMemMiB() int {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}
