package firewall

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// fakeSets records set contents and counts operations; like the kernel,
// it refuses an add to a set at its maxelem.
type fakeSets struct {
	sets map[string]map[netip.Prefix]bool
	max  map[string]int
	ops  int
}

func newFakeSets() *fakeSets {
	return &fakeSets{sets: map[string]map[netip.Prefix]bool{}, max: map[string]int{}}
}

func (f *fakeSets) Ensure(name string, spec setSpec) error {
	if f.sets[name] == nil {
		f.sets[name] = map[netip.Prefix]bool{}
		f.max[name] = spec.MaxElem
		if spec.MaxElem == 0 {
			f.max[name] = 65536
		}
	}
	return nil
}
func (f *fakeSets) Capacity(name string) (int, error) { return f.max[name], nil }
func (f *fakeSets) Add(name string, p netip.Prefix) error {
	f.ops++
	if f.sets[name] == nil {
		return fmt.Errorf("no set %s", name)
	}
	if !f.sets[name][p] && len(f.sets[name]) >= f.max[name] {
		return fmt.Errorf("set %s is full", name)
	}
	f.sets[name][p] = true
	return nil
}
func (f *fakeSets) Del(name string, p netip.Prefix) error {
	f.ops++
	delete(f.sets[name], p)
	return nil
}
func (f *fakeSets) Swap(a, b string) error {
	f.sets[a], f.sets[b] = f.sets[b], f.sets[a]
	f.max[a], f.max[b] = f.max[b], f.max[a]
	return nil
}
func (f *fakeSets) Destroy(name string) error { delete(f.sets, name); return nil }
func (f *fakeSets) Flush(name string) error {
	if f.sets[name] == nil {
		return fmt.Errorf("no set %s", name)
	}
	f.sets[name] = map[netip.Prefix]bool{}
	return nil
}
func (f *fakeSets) Names() ([]string, error) {
	var out []string
	for n := range f.sets {
		out = append(out, n)
	}
	return out, nil
}

type fakeRules struct {
	restores []string
	saved    string
}

func (f *fakeRules) Restore(text string) error                                { f.restores = append(f.restores, text); return nil }
func (f *fakeRules) EnsureJump(table, from, to string, match ...string) error { return nil }
func (f *fakeRules) RemoveJump(table, from, to string) error                  { return nil }
func (f *fakeRules) DeleteChain(table, chain string) error                    { return nil }
func (f *fakeRules) DropEmptyBuiltin(table, chain string)                     {}
func (f *fakeRules) Save(table string) (string, error)                        { return f.saved, nil }

func TestCountersByRule(t *testing.T) {
	r := &fakeRules{saved: `*filter
[5:300] -A MESHD-INPUT -p udp -m udp --dport 51820 -m comment --comment "meshd wg from unknown" -j DROP
[2:120] -A MESHD-INPUT -d 100.100.0.0/16 ! -i mesh0 -m comment --comment "meshd overlay via underlay"
[9:900] -A INPUT -j ACCEPT
COMMIT
`}
	r6 := &fakeRules{saved: `*filter
[3:300] -A MESHD-INPUT -p udp -m udp --dport 51820 -m comment --comment "meshd wg from unknown" -j DROP
[4:400] -A MESHD-UNDERLAY -m comment --comment "meshd underlay denied" -j DROP
COMMIT
`}
	got, err := newWith(Config{}, newFakeSets(), r, r6).Counters()
	if err != nil || got[CounterWGUnknown] != 8 || got[CounterSpoofed] != 2 || got[CounterUnderlay] != 4 || len(got) != 3 {
		t.Errorf("counters = %v, %v", got, err)
	}
	drops := Drops(got)
	if drops[DropWG] != 8 || drops[DropSpoofed] != 2 || drops[DropUnderlay] != 4 || drops[DropPolicy] != 0 || len(drops) != 4 {
		t.Errorf("drops by reason = %v", drops)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := "testdata/" + name + ".golden"
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n%s", name, path, got)
	}
}

// TestRuleStates renders the rules each state installs, as golden text.
func TestRuleStates(t *testing.T) {
	p, err := policy.Parse([]byte("rules:\n- {to: db, from: web, ports: [tcp/5432, tcp/8000-8100]}\n- {to: web, from: '*', ports: [tcp/443, icmp]}\n- {to: cache, from: db, ports: [udp/11211]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	https, _ := policy.ParsePort("tcp/443")
	allow := []Allow{{Ports: []policy.Port{https}, From: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}},
		{Ports: []policy.Port{{Proto: "tcp", From: 9100, To: 9100}}, From: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}}
	base := ruleConfig{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16")}
	with := func(edit func(*ruleConfig)) string {
		c := base
		edit(&c)
		return renderFixed(c)
	}
	states := []struct {
		name string
		text string
	}{
		{"enforce", with(func(c *ruleConfig) { c.SSH, c.Members, c.Allow = true, true, allow })},
		{"enforce-ipv6", with(func(c *ruleConfig) { c.SSH, c.Members, c.Allow, c.V6 = true, true, allow, true })},
		{"enforce-members-overlay-only", with(func(c *ruleConfig) {})},
		{"shadow", with(func(c *ruleConfig) { c.Mode, c.Members = "shadow", true })},
		{"no-policy", renderPolicy(nil, []string{"db"}, false)},
		{"policy-on-db", renderPolicy(&p, []string{"db"}, false)},
		{"policy-on-web", renderPolicy(&p, []string{"web"}, false)},
		{"policy-on-web-ipv6", renderPolicy(&p, []string{"web"}, true)},
		{"forward-policy-on-db", renderForwardPolicy(&p, []string{"db"}, ruleConfig{Mode: "enforce", Allow: allow})},
		{"forward-no-policy-shadow", renderForwardPolicy(nil, []string{"db"}, ruleConfig{Mode: "shadow", V6: true})},
	}
	var all strings.Builder
	for _, s := range states {
		fmt.Fprintf(&all, "## %s\n%s\n", s.name, s.text)
	}
	golden(t, "rules", all.String())
}

func host(i int, groups ...string) Host {
	return Host{ID: fmt.Sprintf("h%d", i), OverlayIP: netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)}), Groups: groups,
		Underlay: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})}}
}

func TestMemberChangesAreO1(t *testing.T) {
	s, r := newFakeSets(), &fakeRules{}
	f := newWith(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s, r, &fakeRules{})
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	restores := len(r.restores)
	for i := 1; i <= 10000; i++ {
		f.SetHost(host(i, "web"))
	}
	s.ops = 0
	f.SetHost(host(10001, "db"))
	if s.ops != 4 { // overlay into members and db, two underlay addresses
		t.Errorf("one join cost %d set operations, want 4", s.ops)
	}
	s.ops = 0
	f.RemoveHost("h5")
	if s.ops != 4 {
		t.Errorf("one removal cost %d set operations, want 4", s.ops)
	}
	if len(r.restores) != restores {
		t.Errorf("member changes reloaded rules")
	}
	if len(s.sets[setMembers]) != 10000 || len(s.sets["meshd-g-web"]) != 9999 || len(s.sets[setPeers]) != 20000 {
		t.Errorf("sets: members %d web %d peers %d", len(s.sets[setMembers]), len(s.sets["meshd-g-web"]), len(s.sets[setPeers]))
	}
	// A moved host: its old underlay goes, the new comes; overlay stays.
	h := host(7, "web")
	h.Underlay = []netip.Addr{netip.MustParseAddr("198.18.250.250")}
	s.ops = 0
	f.SetHost(h)
	if s.ops != 3 || !s.sets[setPeers][netip.MustParsePrefix("198.18.250.250/32")] {
		t.Errorf("move: %d ops", s.ops)
	}
	// Two hosts behind one NAT address: removing one keeps the address.
	a, b := host(20001), host(20002)
	a.Underlay = []netip.Addr{netip.MustParseAddr("198.19.5.5")}
	b.Underlay = a.Underlay
	f.SetHost(a)
	f.SetHost(b)
	f.RemoveHost(a.ID)
	if !s.sets[setPeers][netip.MustParsePrefix("198.19.5.5/32")] {
		t.Error("shared underlay address removed while still in use")
	}
}

func TestResyncSwapsFullSets(t *testing.T) {
	s, r := newFakeSets(), &fakeRules{}
	f := newWith(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s, r, &fakeRules{})
	f.Start()
	s.sets[setMembers][netip.MustParsePrefix("100.100.9.9/32")] = true // left by a crashed run
	if err := f.Resync([]Host{host(1, "web"), host(2, "db")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for p := range s.sets[setMembers] {
		got = append(got, p.String())
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "100.100.0.1/32 100.100.0.2/32" {
		t.Errorf("members after resync: %v", got)
	}
	for n := range s.sets {
		if strings.HasSuffix(n, "-t") {
			t.Errorf("staging set %s left behind", n)
		}
	}
}

func TestGroupSetNamesFitTheKernel(t *testing.T) {
	for _, g := range []string{"web", "a-very-long-group-name-that-goes-on-and-on"} {
		if n := groupSet(g); len(n)+2 > 31 {
			t.Errorf("set name %q too long", n)
		}
	}
}

// TestSetsGrowAndReportFull: a set that fills is replaced by a bigger one
// holding every member; at the bound it is reported full and the add fails.
func TestSetsGrowAndReportFull(t *testing.T) {
	s, r := newFakeSets(), &fakeRules{}
	f := newWith(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
		FleetSize: 10, MinSetCapacity: 64, MaxSetCapacity: 1024, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s, r, &fakeRules{})
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	if got := f.Sets()[setPeers].Capacity; got != 64 {
		t.Fatalf("peer set created with maxelem %d, want 64 (fleet of 10, floor 64)", got)
	}
	for i := 1; i <= 500; i++ { // 1000 underlay addresses
		if err := f.SetHost(host(i, "web")); err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
	}
	use := f.Sets()[setPeers]
	if use.Entries != 1000 || use.Capacity != 1024 || use.Full || len(s.sets[setPeers]) != 1000 || s.max[setPeers] != 1024 {
		t.Errorf("peer set after growth: %+v, kernel holds %d, maxelem %d", use, len(s.sets[setPeers]), s.max[setPeers])
	}
	for n := range s.sets {
		if strings.HasSuffix(n, "-g") {
			t.Errorf("staging set %s left behind", n)
		}
	}
	// 1000 + 2 more than the bound of 1024 allows.
	var err error
	for i := 501; i <= 513 && err == nil; i++ {
		err = f.SetHost(host(i, "web"))
	}
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("adding past the bound: %v, want an error saying the set is full", err)
	}
	if !f.Sets()[setPeers].Full {
		t.Errorf("peer set at its bound not reported full: %+v", f.Sets()[setPeers])
	}
}

// A member's IPv6 underlay addresses go into the IPv6 twins: the peer set
// (WireGuard port) always, the member and group sets when members are
// judged by the policy on the underlay; no rule is reloaded for them.
func TestIP6UnderlayIntoIP6Sets(t *testing.T) {
	for _, members := range []bool{true, false} {
		s, r6 := newFakeSets(), &fakeRules{}
		f := newWith(Config{Mode: "enforce", Interface: "mesh0", ListenPort: 51820, Overlay: netip.MustParsePrefix("100.100.0.0/16"),
			UnderlayMembers: members, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, s, &fakeRules{}, r6)
		if err := f.Start(); err != nil {
			t.Fatal(err)
		}
		restores := len(r6.restores)
		h := host(1, "web")
		v6 := netip.MustParseAddr("fd18:2::1")
		h.Underlay = append(h.Underlay, v6)
		if err := f.SetHost(h); err != nil {
			t.Fatal(err)
		}
		p := netip.PrefixFrom(v6, 128)
		judged := members
		if !s.sets["meshd-peers6"][p] || s.sets["meshd-members6"][p] != judged || s.sets["meshd-g-web6"][p] != judged {
			t.Errorf("members %v: peers6 %v members6 %v g-web6 %v", members,
				s.sets["meshd-peers6"][p], s.sets["meshd-members6"][p], s.sets["meshd-g-web6"][p])
		}
		for _, n := range []string{setPeers, setMembers, "meshd-g-web"} {
			if s.sets[n][p] {
				t.Errorf("IPv6 address in the IPv4 set %s", n)
			}
		}
		if err := f.RemoveHost(h.ID); err != nil {
			t.Fatal(err)
		}
		if s.sets["meshd-peers6"][p] || s.sets["meshd-members6"][p] || s.sets["meshd-g-web6"][p] || len(r6.restores) != restores {
			t.Errorf("members %v: after removal peers6 %v members6 %v; rule reloads %d", members,
				s.sets["meshd-peers6"][p], s.sets["meshd-members6"][p], len(r6.restores)-restores)
		}
	}
}
