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
	"errors"
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
	BreakglassSSH []netip.Prefix // IPv4 and IPv6
	Groups        []string       // this host's groups: which policy rules apply here
	// UnderlayMembers: traffic from members' underlay addresses is judged
	// by the group policy, as overlay traffic is (firewall.underlay.members:
	// policy). Without it members get in through the overlay only.
	UnderlayMembers bool
	// UnderlayAllow opens ports on the underlay whatever the policy says.
	UnderlayAllow []Allow
	// FleetSize is how many hosts the fleet is expected to hold (the
	// snapshot's count at start): the sets are created with room for
	// twice what it needs, and grown when they fill.
	FleetSize int
	// MinSetCapacity is the smallest maxelem a set is created with;
	// 0 means ipset's default, 65536. Tests lower it to grow sets cheaply.
	MinSetCapacity int
	// MaxSetCapacity bounds growth; 0 means 1<<24 entries. A set at the
	// bound is reported full (SetUse) and further adds fail.
	MaxSetCapacity int
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
	rules [2]rules // IPv4 (iptables), IPv6 (ip6tables)
	flows flows    // conntrack: a leaving member's WireGuard flows

	mu    sync.Mutex
	hosts map[string]Host
	// entries holds what each hash:ip set holds, with refcounts: hosts
	// behind one NAT share an address. It is the truth a set is refilled
	// from when it grows.
	entries   map[string]map[netip.Addr]int
	capacity  map[string]int // maxelem of each hash:ip set
	full      map[string]bool
	v6sets    map[string]bool // the hash:ip sets of family inet6
	groupSets map[string]bool
	policy    *policy.Policy
}

// New returns a firewall on the kernel's ipset and iptables.
func New(cfg Config) *Firewall {
	f := newWith(cfg, netlinkSets{}, iptables{}, iptables{v6: true})
	f.flows = netlinkFlows{}
	return f
}

func newWith(cfg Config, s sets, r4, r6 rules) *Firewall {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Firewall{cfg: cfg, log: cfg.Logger.With("component", "firewall"), sets: s, rules: [2]rules{r4, r6}, flows: noFlows{},
		hosts: map[string]Host{}, entries: map[string]map[netip.Addr]int{}, capacity: map[string]int{},
		full: map[string]bool{}, v6sets: map[string]bool{}, groupSets: map[string]bool{}}
}

// Start creates the sets (adopting those a crashed run left), installs the
// chains in one transaction and hooks them in with one jump each. Members
// already in adopted sets stay until Resync replaces them, so a restart
// never opens an empty window.
func (f *Firewall) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	raiseConntrack(f.log)
	for _, name := range []string{setMembers, setPeers} {
		if err := f.ensureIPSetLocked(name); err != nil {
			return err
		}
	}
	for _, v6 := range []bool{false, true} {
		if err := f.sets.Ensure(setName(setSSH, v6), setSpec{Type: "hash:net", V6: v6}); err != nil {
			return err
		}
	}
	for _, p := range f.cfg.BreakglassSSH {
		if err := f.sets.Add(setOf(setSSH, p.Addr()), p); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		v6 := i == 1
		rc := f.ruleConfig(v6)
		// The policy chains must exist before the chains that jump to them.
		if err := r.Restore(renderPolicy(nil, nil, v6) + renderForwardPolicy(f.policy, f.cfg.Groups, rc)); err != nil {
			return fmt.Errorf("firewall: install policy chain (%s): %w", family(v6), err)
		}
		if err := r.Restore(renderFixed(rc)); err != nil {
			return fmt.Errorf("firewall: install chains (%s): %w", family(v6), err)
		}
	}
	if err := f.applyPolicyLocked(); err != nil {
		return err
	}
	for _, r := range f.rules {
		retire(r)
	}
	for i, r := range f.rules {
		for _, h := range f.hooks(i == 1) {
			if err := r.EnsureJump(h.table, h.from, h.to, h.match...); err != nil {
				return fmt.Errorf("firewall: hook %s into %s (%s): %w", h.to, h.from, family(i == 1), err)
			}
		}
	}
	f.log.Info("firewall started", "mode", f.cfg.Mode, "interface", f.cfg.Interface, "wg_port", f.cfg.ListenPort)
	return nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func (f *Firewall) ruleConfig(v6 bool) ruleConfig {
	ssh := false
	for _, p := range f.cfg.BreakglassSSH {
		ssh = ssh || p.Addr().Is6() == v6
	}
	return ruleConfig{Mode: f.cfg.Mode, Interface: f.cfg.Interface, ListenPort: f.cfg.ListenPort, Overlay: f.cfg.Overlay,
		SSH: ssh, V6: v6, Members: f.cfg.UnderlayMembers, Allow: f.cfg.UnderlayAllow, DNSPort: f.cfg.DNSPort}
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
	for _, g := range cur.Groups {
		if err := f.ensureGroupLocked(g); err != nil {
			errs = append(errs, err)
		}
	}
	was, now := f.hostEntries(old), f.hostEntries(cur)
	for e := range now {
		if was[e] {
			continue
		}
		if err := f.addLocked(e.set, e.addr); err != nil {
			errs = append(errs, err)
		}
	}
	for e := range was {
		if now[e] {
			continue
		}
		if err := f.delLocked(e.set, e.addr); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("firewall: host %s: %v", cur.ID+old.ID, errs)
	}
	return nil
}

// setEntry is one address in one set.
type setEntry struct {
	set  string
	addr netip.Addr
}

// hostEntries is every set entry one host brings: its overlay address in
// the member set and its groups' sets, its underlay addresses in the peer
// set, and, when members are judged by the policy on the underlay too, its
// underlay addresses in the member and group sets. Each address goes into
// the set of its family.
func (f *Firewall) hostEntries(h Host) map[setEntry]bool {
	out := map[setEntry]bool{}
	judged := func(a netip.Addr) {
		out[setEntry{setOf(setMembers, a), a}] = true
		for _, g := range h.Groups {
			out[setEntry{setOf(groupSet(g), a), a}] = true
		}
	}
	if h.OverlayIP.IsValid() {
		judged(h.OverlayIP)
	}
	for _, a := range h.Underlay {
		out[setEntry{setOf(setPeers, a), a}] = true
		if f.cfg.UnderlayMembers {
			judged(a)
		}
	}
	return out
}

// addLocked counts one more user of addr in set, adding it to the kernel's
// set on the first, growing the set first when it is full.
func (f *Firewall) addLocked(set string, a netip.Addr) error {
	m := f.entries[set]
	if m == nil {
		m = map[netip.Addr]int{}
		f.entries[set] = m
	}
	if m[a]++; m[a] > 1 {
		return nil
	}
	if len(m) > f.capacity[set] {
		if err := f.growLocked(set, len(m)); err != nil {
			delete(m, a)
			return err
		}
	}
	if err := f.sets.Add(set, netip.PrefixFrom(a, a.BitLen())); err != nil {
		delete(m, a)
		return err
	}
	return nil
}

// delLocked counts one user of addr in set less, deleting it from the
// kernel's set with the last.
func (f *Firewall) delLocked(set string, a netip.Addr) error {
	m := f.entries[set]
	if m[a]--; m[a] > 0 {
		return nil
	}
	delete(m, a)
	if err := f.sets.Del(set, netip.PrefixFrom(a, a.BitLen())); err != nil {
		return err
	}
	if set == setOf(setPeers, a) {
		f.forgetLocked([]netip.Addr{a})
	}
	return nil
}

// forgetLocked deletes the WireGuard flows of addresses that just left the
// peer set. Established flows are admitted before the allowlist is asked
// (renderFixed), so without this a member that left would keep its flows
// to the WireGuard port for as long as it kept them busy. It runs after
// the set delete: no new flow from the address can be admitted since. A
// failure is logged, not returned: the set is already right, and the flow
// ends when it idles out.
func (f *Firewall) forgetLocked(addrs []netip.Addr) {
	n, err := f.flows.ForgetWireGuard(addrs, f.cfg.ListenPort)
	if err != nil {
		f.log.Warn("forget a leaving member's WireGuard flows", "addrs", addrs, "forgot", n, "err", err)
		return
	}
	if n > 0 {
		f.log.Debug("forgot a leaving member's WireGuard flows", "addrs", addrs, "flows", n)
	}
}

// retire removes what an older meshd hooked and this one does not
// (retiredHooks), and the built-in chains that leaves empty. One look at
// each table first: on a host that never ran an older meshd (most starts)
// it costs two iptables-save runs, not a dozen iptables ones.
func retire(r rules) {
	left := false
	for _, table := range []string{"raw", "mangle"} {
		out, err := r.Save(table)
		left = left || err != nil
		for _, line := range strings.Split(out, "\n") {
			for _, h := range retiredHooks {
				left = left || h.table == table && strings.Contains(line, "-A "+h.from+" ") && strings.HasSuffix(line, "-j "+h.to)
			}
		}
	}
	if !left {
		return
	}
	for _, h := range retiredHooks {
		r.RemoveJump(h.table, h.from, h.to)
	}
	r.DeleteChain("raw", chainNoTrack)
	for _, h := range retiredHooks {
		r.DropEmptyBuiltin(h.table, h.from)
	}
}

// noFlows forgets nothing: Flush's firewall, and tests, have no conntrack.
type noFlows struct{}

func (noFlows) ForgetWireGuard([]netip.Addr, int) (int, error) { return 0, nil }

func (f *Firewall) maxCapacity() int {
	if f.cfg.MaxSetCapacity > 0 {
		return f.cfg.MaxSetCapacity
	}
	return 1 << 24
}

// capacityFor is the maxelem a set needing n entries is created with:
// twice n, a power of two, at least the floor.
func (f *Firewall) capacityFor(n int) int {
	c := f.cfg.MinSetCapacity
	if c <= 0 {
		c = 65536
	}
	for c < 2*n {
		c *= 2
	}
	return min(c, max(f.maxCapacity(), n))
}

// initialCapacity sizes a new set from the fleet: each host brings at most
// an overlay and two underlay addresses to a set.
func (f *Firewall) initialCapacity() int { return f.capacityFor(3 * f.cfg.FleetSize) }

// ensureIPSetLocked creates a hash:ip set and its IPv6 twin sized from
// the fleet, or adopts those a previous run left and learns their size.
func (f *Firewall) ensureIPSetLocked(base string) error {
	for _, v6 := range []bool{false, true} {
		name := setName(base, v6)
		if err := f.sets.Ensure(name, setSpec{Type: "hash:ip", V6: v6, MaxElem: f.initialCapacity()}); err != nil {
			return err
		}
		c, err := f.sets.Capacity(name)
		if err != nil {
			return err
		}
		f.capacity[name], f.v6sets[name] = c, v6
	}
	return nil
}

// growLocked replaces set by a bigger one holding the same entries: ipset
// cannot change maxelem in place, so a set twice the size is filled under
// a staging name and swapped in atomically (no packet sees it empty or
// partial), then the old one is destroyed. At the bound the set is full:
// reported, and the add that needed room fails.
func (f *Firewall) growLocked(set string, need int) error {
	old := f.capacity[set]
	c := max(2*old, f.capacityFor(need))
	c = min(c, f.maxCapacity())
	if c < need {
		f.full[set] = true
		return fmt.Errorf("firewall: set %s is full at %d entries (bound %d): member left out", set, old, f.maxCapacity())
	}
	tmp := set + "-g"
	if err := f.sets.Destroy(tmp); err != nil {
		return err
	}
	if err := f.sets.Ensure(tmp, setSpec{Type: "hash:ip", V6: f.v6sets[set], MaxElem: c}); err != nil {
		return fmt.Errorf("firewall: grow set %s to %d: %w", set, c, err)
	}
	for a := range f.entries[set] {
		if err := f.sets.Add(tmp, netip.PrefixFrom(a, a.BitLen())); err != nil {
			f.sets.Destroy(tmp)
			return fmt.Errorf("firewall: grow set %s to %d: %w", set, c, err)
		}
	}
	if err := f.sets.Swap(tmp, set); err != nil {
		f.sets.Destroy(tmp)
		return err
	}
	if err := f.sets.Destroy(tmp); err != nil {
		return err
	}
	f.capacity[set] = c
	delete(f.full, set)
	f.log.Info("grew set", "set", set, "from", old, "to", c)
	return nil
}

// SetUse is how full one of meshd's sets is.
type SetUse struct {
	Entries  int  `json:"entries"`
	Capacity int  `json:"capacity"`
	Full     bool `json:"full,omitempty"` // at its bound: members are being left out
}

// Sets reports the use of every hash:ip set meshd manages.
func (f *Firewall) Sets() map[string]SetUse {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]SetUse{}
	for name, c := range f.capacity {
		out[name] = SetUse{Entries: len(f.entries[name]), Capacity: c, Full: f.full[name]}
	}
	return out
}

func (f *Firewall) ensureGroupLocked(g string) error {
	name := groupSet(g)
	if f.groupSets[name] || name == setMembers {
		return nil
	}
	if err := f.ensureIPSetLocked(name); err != nil {
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
	for _, g := range policyGroups(f.policy, f.cfg.Groups) {
		if err := f.ensureGroupLocked(g); err != nil {
			return err
		}
	}
	for i, r := range f.rules {
		if err := r.Restore(renderPolicy(f.policy, f.cfg.Groups, i == 1) + renderForwardPolicy(f.policy, f.cfg.Groups, f.ruleConfig(i == 1))); err != nil {
			return fmt.Errorf("firewall: apply policy (%s): %w", family(i == 1), err)
		}
	}
	return nil
}

// Resync makes the sets hold exactly hosts: each set is filled under a
// staging name, sized for what it will hold, and swapped in atomically, so
// no set is ever empty in force.
func (f *Firewall) Resync(hosts []Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string]map[netip.Addr]int{}
	for name := range f.capacity {
		want[name] = map[netip.Addr]int{}
	}
	f.hosts = map[string]Host{}
	for _, h := range hosts {
		f.hosts[h.ID] = h
		for _, g := range h.Groups {
			if err := f.ensureGroupLocked(g); err != nil {
				return err
			}
		}
		for e := range f.hostEntries(h) {
			if want[e.set] == nil {
				want[e.set] = map[netip.Addr]int{}
			}
			want[e.set][e.addr]++
		}
	}
	existing, err := f.sets.Names()
	if err != nil {
		return err
	}
	for name, addrs := range want {
		if len(addrs) == 0 {
			// Emptying needs no staging: flushing is one atomic step, and
			// it spares a create and two destroys (each waits for an RCU
			// grace period) per set, most of them the empty IPv6 twins,
			// on meshd's start path.
			if err := f.sets.Flush(name); err != nil {
				return err
			}
			f.forgetGoneLocked(name, addrs)
			f.entries[name] = addrs
			delete(f.full, name)
			continue
		}
		c := max(f.capacity[name], f.capacityFor(len(addrs)))
		if len(addrs) > f.maxCapacity() {
			f.full[name] = true
			return fmt.Errorf("firewall: set %s would hold %d entries, over the bound %d", name, len(addrs), f.maxCapacity())
		}
		tmp := name + "-t"
		if slices.Contains(existing, tmp) { // left by a crash mid-resync
			f.sets.Destroy(tmp)
		}
		if err := f.sets.Ensure(tmp, setSpec{Type: "hash:ip", V6: f.v6sets[name], MaxElem: c}); err != nil {
			return err
		}
		for a := range addrs {
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
		f.forgetGoneLocked(name, addrs)
		f.entries[name], f.capacity[name] = addrs, c
		delete(f.full, name)
	}
	return nil
}

// forgetGoneLocked forgets the WireGuard flows of the addresses a resync
// took out of a peer set (what the set held before, as far as this run
// knows, less what it holds now).
func (f *Firewall) forgetGoneLocked(set string, now map[netip.Addr]int) {
	if set != setPeers && set != setName(setPeers, true) {
		return
	}
	var gone []netip.Addr
	for a := range f.entries[set] {
		if now[a] == 0 {
			gone = append(gone, a)
		}
	}
	if len(gone) > 0 {
		f.forgetLocked(gone)
	}
}

// Close lets go of the firewall and leaves it in force: a stopped meshd
// leaves the host closed with the last policy and members (fail static);
// the next start adopts the sets and rewrites the chains in place. Flush
// opens the host.
func (f *Firewall) Close() error { return nil }

// Flush removes meshd's jumps, chains and sets, in both families: the host
// is open again (meshd firewall flush, package removal).
func Flush(log *slog.Logger) error {
	return newWith(Config{Logger: log}, netlinkSets{}, iptables{}, iptables{v6: true}).flush()
}

func (f *Firewall) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.rules {
		retire(r)
		hs := f.hooks(i == 1)
		for _, h := range hs {
			r.RemoveJump(h.table, h.from, h.to)
		}
		for _, c := range []string{chainInput, chainForward, chainOverlay, chainUnderlay, chainPolicy, chainFPolicy} {
			r.DeleteChain("filter", c)
		}
		r.DeleteChain("mangle", chainMSS)
		for _, h := range hs {
			r.DropEmptyBuiltin(h.table, h.from)
		}
	}
	names, err := f.sets.Names()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if strings.HasPrefix(n, "meshd-") {
			if err := f.sets.Destroy(n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

var counterRe = regexp.MustCompile(`^\[(\d+):(\d+)\] .*--comment "(meshd [^"]*)"`)

// Counters reports packets per meshd rule, by the rule's comment: drops in
// enforce mode, would-drops in shadow mode.
func (f *Firewall) Counters() (map[string]uint64, error) {
	out := map[string]uint64{}
	var text string
	for _, r := range f.rules {
		t, err := r.Save("filter")
		if err != nil {
			return nil, err
		}
		text += t
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

// Drop reasons, as meshctl status and /metrics name them.
const (
	DropUnderlay = "underlay_default_deny"  // new inbound connection on the underlay nothing admits
	DropWG       = "wireguard_non_member"   // WireGuard port from a non-member address
	DropSpoofed  = "spoofed_overlay_source" // overlay-pool address to or from an underlay interface
	DropPolicy   = "policy"                 // overlay (or member underlay) traffic the policy denies
)

// dropReasons maps each dropping rule's comment to its reason.
var dropReasons = map[string]string{
	CounterUnderlay:   DropUnderlay,
	CounterWGUnknown:  DropWG,
	CounterSpoofed:    DropSpoofed,
	CounterOverlayDen: DropPolicy,
	CounterForwardDen: DropPolicy,
}

// Drops sums the counters by drop reason, IPv4 and IPv6: drops in enforce
// mode; in shadow mode the policy and underlay reasons count would-drops.
// Every reason is present, zero included, so an alert has a series.
func Drops(counters map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for comment, reason := range dropReasons {
		out[reason] += counters[comment]
	}
	return out
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

// raiseConntrack lifts nf_conntrack_max to a floor scaled to memory, and
// the hash table to a quarter of it: a full table drops new connections,
// which the rollout of the design this replaces learned the hard way, and
// the underlay default deny tracks every underlay flow (only WireGuard's
// own datagrams are untracked). A short hash table makes every lookup walk
// a long chain.
func raiseConntrack(log *slog.Logger) {
	const path = "/proc/sys/net/netfilter/nf_conntrack_max"
	cur := readInt(path)
	if cur == 0 {
		return // conntrack not loaded yet; the sysctl.d drop-in covers boot
	}
	memMiB := readMemMiB()
	floor := min(max(memMiB*32, 262144), 2097152)
	raiseHashSize(log, max(cur, floor)/4)
	if cur >= floor {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(floor)), 0o644); err != nil {
		log.Warn("conntrack table below the floor and not writable here", "nf_conntrack_max", cur, "floor", floor, "err", err)
		return
	}
	log.Info("raised nf_conntrack_max", "from", cur, "to", floor)
}

// raiseHashSize raises the conntrack hash table to want buckets. It is
// global (the initial namespace's), writable only there.
func raiseHashSize(log *slog.Logger, want int) {
	const path = "/sys/module/nf_conntrack/parameters/hashsize"
	cur := readInt(path)
	if cur == 0 || cur >= want {
		return
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0o644); err != nil {
		log.Warn("conntrack hash table below a quarter of the table and not writable here", "hashsize", cur, "want", want, "err", err)
		return
	}
	log.Info("raised the conntrack hash table", "from", cur, "to", want)
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
