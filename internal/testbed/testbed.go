// Package testbed builds the multi-network namespace testbed of
// ARCHITECTURE.md on one machine: networks classic, vpc and dc, each behind a
// gateway doing 1:1 NAT between a host's private and public address, an
// internet segment joining the gateways (ZooKeeper at 198.19.0.2), a
// direct-connect link routing vpc and dc privately, an outsider on the
// internet and room for a rogue host inside vpc. Used by the integration
// tests, `make demo` and the benchmarks.
//
// Everything is created inside namespaces it names with a per-run prefix;
// nothing is created in, or routed to, the root namespace. Teardown kills
// the processes it started by PID and deletes the namespaces it made, also
// from a state file in another process (`make demo-down`).
package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/zkserver"
)

// Networks of the testbed and the third octet of their ranges.
var Networks = map[string]int{"classic": 1, "vpc": 2, "dc": 3}

// ZooKeeperIP is where ZooKeeper listens on the internet segment.
const ZooKeeperIP = "198.19.0.2"

// EnsembleIP is where server i (from 1) of an ensemble listens.
func EnsembleIP(i int) string { return fmt.Sprintf("198.19.0.%d", 2+i) }

// Options configure a testbed.
type Options struct {
	Dir       string // state and logs; a temp dir if empty
	ZooKeeper bool   // start ZooKeeper on the internet segment
	// MTU sets, per network, the MTU of its private links (hosts' legs and
	// the LAN), e.g. {"vpc": 9000} for jumbo frames as on EC2. Its gateway's
	// leg on the internet stays at 1500 and the gateway sends no ICMP
	// "fragmentation needed": what does not fit the public path is dropped
	// without a word, as on paths that filter ICMP. Unset: 1500.
	MTU map[string]int
	// Ensemble, if above 1, makes that ZooKeeper an ensemble of this many
	// servers, each a machine of its own on the internet segment: namespace
	// zk<i> at 198.19.0.(2+i), client port 2181 (see EnsembleIP).
	Ensemble int
	Logger   *slog.Logger
}

// Host is one namespace on the testbed.
type Host struct {
	Name      string
	Netns     string
	Network   string // "" for the outsider
	PrivateIP netip.Addr
	PublicIP  netip.Addr
	// PrivateIP6 is the host's IPv6 unique-local address on its network's
	// LAN (fd18:N::x/64): IPv6 reaches the LAN only, not other networks.
	PrivateIP6 netip.Addr
	Index      int // unique per testbed, for names
	tb         *Testbed
}

// Testbed is one built topology.
type Testbed struct {
	Prefix string
	Dir    string
	log    *slog.Logger

	mu      sync.Mutex
	state   State
	hosts   []*Host
	nextIP  map[string]int
	zk      *zkserver.Server
	ens     *zkserver.Ensemble
	procs   []*Process
	counter int
	mtu     map[string]int
}

// State is what teardown needs, persisted to Dir/testbed.json.
type State struct {
	Prefix     string   `json:"prefix"`
	Namespaces []string `json:"namespaces"`
	PIDs       []int    `json:"pids"`
}

func (tb *Testbed) ns(role string) string { return tb.Prefix + "-" + role }

// New builds the topology.
func New(ctx context.Context, o Options) (_ *Testbed, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the testbed needs root (network namespaces)")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	suffix := make([]byte, 2)
	rand.Read(suffix)
	tb := &Testbed{Prefix: "mt" + hex.EncodeToString(suffix), Dir: o.Dir, log: o.Logger, nextIP: map[string]int{}, mtu: o.MTU}
	if tb.Dir == "" {
		if tb.Dir, err = os.MkdirTemp("", "testbed-"); err != nil {
			return nil, err
		}
	}
	tb.state.Prefix = tb.Prefix
	defer func() {
		if err != nil {
			tb.Close()
		}
	}()
	if err = tb.buildInternet(); err != nil {
		return nil, fmt.Errorf("testbed internet: %w", err)
	}
	for name, i := range Networks {
		if err = tb.buildNetwork(name, i); err != nil {
			return nil, fmt.Errorf("testbed network %s: %w", name, err)
		}
	}
	if err = tb.buildLink(); err != nil {
		return nil, fmt.Errorf("testbed link vpc<->dc: %w", err)
	}
	switch {
	case o.ZooKeeper && o.Ensemble > 1:
		var members []zkserver.Member
		for i := 1; i <= o.Ensemble; i++ {
			m := zkserver.Member{Netns: tb.ns(fmt.Sprintf("zk%d", i)), Host: EnsembleIP(i)}
			if err = tb.onInternet(m.Netns, fmt.Sprintf("zk%d", i), m.Host); err != nil {
				return nil, fmt.Errorf("testbed zookeeper server %d: %w", i, err)
			}
			members = append(members, m)
		}
		tb.ens, err = zkserver.StartEnsemble(ctx, o.Ensemble, zkserver.Options{Members: members, Port: 2181,
			Dir: filepath.Join(tb.Dir, "zk"), Logger: tb.log})
		if err != nil {
			return nil, fmt.Errorf("testbed zookeeper ensemble: %w", err)
		}
		for _, s := range tb.ens.Servers {
			tb.trackPID(s.PID())
		}
	case o.ZooKeeper:
		if err = tb.StartZooKeeper(ctx); err != nil {
			return nil, err
		}
	}
	return tb, nil
}

// sh runs one command and returns its error with the output.
func sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// in runs a command inside namespace ns.
func in(ns string, args ...string) error {
	return sh(append([]string{"ip", "netns", "exec", ns}, args...)...)
}

func (tb *Testbed) addNS(name string) error {
	if err := sh("ip", "netns", "add", name); err != nil {
		return err
	}
	tb.mu.Lock()
	tb.state.Namespaces = append(tb.state.Namespaces, name)
	tb.mu.Unlock()
	tb.save()
	return in(name, "ip", "link", "set", "lo", "up")
}

// buildInternet: a bridge in the internet namespace, which also holds
// ZooKeeper's address; the outsider (and an ensemble's servers) hang off it.
func (tb *Testbed) buildInternet() error {
	inet := tb.ns("inet")
	if err := tb.addNS(inet); err != nil {
		return err
	}
	for _, c := range [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", ZooKeeperIP + "/24", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
	} {
		if err := in(inet, c...); err != nil {
			return err
		}
	}
	for _, i := range Networks {
		if err := in(inet, "ip", "route", "add", fmt.Sprintf("198.19.%d.0/24", i), "via", fmt.Sprintf("198.19.0.%d", 10+i)); err != nil {
			return err
		}
	}
	out := &Host{Name: "outsider", Netns: tb.ns("out"), PublicIP: netip.MustParseAddr("198.19.0.66"), PrivateIP: netip.MustParseAddr("198.19.0.66"), tb: tb}
	if err := tb.onInternet(out.Netns, "out0", out.PublicIP.String()); err != nil {
		return err
	}
	tb.mu.Lock()
	tb.hosts = append(tb.hosts, out)
	tb.mu.Unlock()
	return nil
}

// onInternet makes namespace ns a machine on the internet segment at addr,
// plugged into the bridge as port, with routes to the networks' public
// ranges through their gateways.
func (tb *Testbed) onInternet(ns, port, addr string) error {
	if err := tb.addNS(ns); err != nil {
		return err
	}
	if err := tb.plug(ns, "eth0", tb.ns("inet"), port, "br0"); err != nil {
		return err
	}
	if err := in(ns, "ip", "addr", "add", addr+"/24", "dev", "eth0"); err != nil {
		return err
	}
	for _, i := range Networks {
		if err := in(ns, "ip", "route", "add", fmt.Sprintf("198.19.%d.0/24", i), "via", fmt.Sprintf("198.19.0.%d", 10+i)); err != nil {
			return err
		}
	}
	return nil
}

// plug joins namespace a (interface ifA) to the bridge br in namespace b
// with a veth pair created directly inside the namespaces.
func (tb *Testbed) plug(a, ifA, b, ifB, br string) error {
	if err := sh("ip", "link", "add", ifA, "netns", a, "type", "veth", "peer", ifB, "netns", b); err != nil {
		return err
	}
	if err := in(b, "ip", "link", "set", ifB, "master", br, "up"); err != nil {
		return err
	}
	return in(a, "ip", "link", "set", ifA, "up")
}

// buildNetwork: a gateway with a LAN bridge (198.18.i.1/24) and a leg on the
// internet (198.19.0.1i), forwarding, routes to the other public ranges.
func (tb *Testbed) buildNetwork(name string, i int) error {
	gw := tb.ns("gw" + name[:1])
	if err := tb.addNS(gw); err != nil {
		return err
	}
	if err := tb.plug(gw, "wan", tb.ns("inet"), fmt.Sprintf("gw%d", i), "br0"); err != nil {
		return err
	}
	cmds := [][]string{
		{"ip", "addr", "add", fmt.Sprintf("198.19.0.%d/24", 10+i), "dev", "wan"},
		{"ip", "link", "add", "lan", "type", "bridge"},
		{"ip", "addr", "add", fmt.Sprintf("198.18.%d.1/24", i), "dev", "lan"},
		{"ip", "-6", "addr", "add", fmt.Sprintf("fd18:%d::1/64", i), "dev", "lan", "nodad"},
		{"ip", "link", "set", "lan", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	if mtu := tb.mtu[name]; mtu != 0 {
		cmds = append(cmds, []string{"ip", "link", "set", "lan", "mtu", fmt.Sprint(mtu)},
			[]string{"iptables", "-w", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"})
	}
	for other, j := range Networks {
		if other != name {
			cmds = append(cmds, []string{"ip", "route", "add", fmt.Sprintf("198.19.%d.0/24", j), "via", fmt.Sprintf("198.19.0.%d", 10+j)})
		}
	}
	for _, c := range cmds {
		if err := in(gw, c...); err != nil {
			return err
		}
	}
	return nil
}

// buildLink joins the vpc and dc gateways privately: no NAT on this path.
func (tb *Testbed) buildLink() error {
	v, d := tb.ns("gwv"), tb.ns("gwd")
	if err := sh("ip", "link", "add", "dx", "netns", v, "type", "veth", "peer", "dx", "netns", d); err != nil {
		return err
	}
	for _, c := range []struct {
		ns, addr, route, via string
	}{{v, "198.18.254.1/30", "198.18.3.0/24", "198.18.254.2"}, {d, "198.18.254.2/30", "198.18.2.0/24", "198.18.254.1"}} {
		for _, cmd := range [][]string{
			{"ip", "addr", "add", c.addr, "dev", "dx"},
			{"ip", "link", "set", "dx", "up"},
			{"ip", "route", "add", c.route, "via", c.via},
		} {
			if err := in(c.ns, cmd...); err != nil {
				return err
			}
		}
	}
	return nil
}

// AddHost adds a host to network with the next private/public address
// pair and its 1:1 NAT on the gateway.
func (tb *Testbed) AddHost(network string) (*Host, error) {
	i, ok := Networks[network]
	if !ok {
		return nil, fmt.Errorf("testbed: no network %q (have classic, vpc, dc)", network)
	}
	tb.mu.Lock()
	tb.counter++
	idx := tb.counter
	tb.mu.Unlock()
	h := &Host{Name: fmt.Sprintf("h%d", idx), Netns: tb.ns(fmt.Sprintf("h%d", idx)), Index: idx, tb: tb}
	if err := tb.addNS(h.Netns); err != nil {
		return nil, err
	}
	if err := tb.attach(h, network, i); err != nil {
		return nil, fmt.Errorf("testbed: add host to %s: %w", network, err)
	}
	tb.mu.Lock()
	tb.hosts = append(tb.hosts, h)
	tb.mu.Unlock()
	return h, nil
}

// attach connects a host's namespace to network i and sets up its NAT.
func (tb *Testbed) attach(h *Host, network string, i int) error {
	tb.mu.Lock()
	if tb.nextIP[network] == 0 {
		tb.nextIP[network] = 11
	}
	x := tb.nextIP[network]
	tb.nextIP[network]++
	tb.mu.Unlock()
	h.Network = network
	h.PrivateIP = netip.AddrFrom4([4]byte{198, 18, byte(i), byte(x)})
	h.PublicIP = netip.AddrFrom4([4]byte{198, 19, byte(i), byte(x)})
	gw := tb.ns("gw" + network[:1])
	port := fmt.Sprintf("p%d", h.Index)
	if err := tb.plug(h.Netns, "eth0", gw, port, "lan"); err != nil {
		return err
	}
	if mtu := tb.mtu[network]; mtu != 0 {
		if err := in(h.Netns, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(mtu)); err != nil {
			return err
		}
		if err := in(gw, "ip", "link", "set", port, "mtu", fmt.Sprint(mtu)); err != nil {
			return err
		}
	}
	if err := in(h.Netns, "ip", "addr", "add", h.PrivateIP.String()+"/24", "dev", "eth0"); err != nil {
		return err
	}
	h.PrivateIP6 = netip.MustParseAddr(fmt.Sprintf("fd18:%d::%d", i, x))
	if err := in(h.Netns, "ip", "-6", "addr", "add", h.PrivateIP6.String()+"/64", "dev", "eth0", "nodad"); err != nil {
		return err
	}
	if err := in(h.Netns, "ip", "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", i)); err != nil {
		return err
	}
	for _, rule := range natRules(h) {
		if err := in(gw, append([]string{"iptables", "-w", "-t", "nat", "-A"}, rule...)...); err != nil {
			return err
		}
	}
	return nil
}

// natRules are a host's 1:1 NAT on its gateway: public to private on the
// way in, private to public on the way out to the internet (not over the
// link), and hairpin for a same-network peer that uses the public address.
func natRules(h *Host) [][]string {
	priv, pub := h.PrivateIP.String(), h.PublicIP.String()
	return [][]string{
		{"PREROUTING", "-d", pub, "-j", "DNAT", "--to-destination", priv},
		{"POSTROUTING", "-s", priv, "-o", "wan", "-j", "SNAT", "--to-source", pub},
		{"POSTROUTING", "-s", priv, "-o", "lan", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SNAT", "--to-source", pub},
	}
}

// MoveHost re-homes a host into another network: new addresses, same name
// and namespace, as when an instance is migrated.
func (tb *Testbed) MoveHost(h *Host, network string) error {
	i, ok := Networks[network]
	if !ok {
		return fmt.Errorf("testbed: no network %q", network)
	}
	oldGW := tb.ns("gw" + h.Network[:1])
	for _, rule := range natRules(h) {
		in(oldGW, append([]string{"iptables", "-w", "-t", "nat", "-D"}, rule...)...)
	}
	if err := in(h.Netns, "ip", "link", "del", "eth0"); err != nil {
		return err
	}
	return tb.attach(h, network, i)
}

// Outsider is the host on the internet segment that belongs to no network.
func (tb *Testbed) Outsider() *Host { return tb.hosts[0] }

// Hosts lists the hosts added so far (the outsider first).
func (tb *Testbed) Hosts() []*Host {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]*Host{}, tb.hosts...)
}

// BlockPrivate drops traffic between a's and b's private addresses where
// it arrives, inside their namespaces: the private path blackholes, as a
// broken network does (a drop on the way out would fail the send locally).
func (tb *Testbed) BlockPrivate(a, b *Host) error { return tb.privateRule(a, b, "-I") }

// UnblockPrivate undoes BlockPrivate.
func (tb *Testbed) UnblockPrivate(a, b *Host) error { return tb.privateRule(a, b, "-D") }

func (tb *Testbed) privateRule(a, b *Host, op string) error {
	for _, p := range [][2]*Host{{a, b}, {b, a}} {
		if err := in(p[0].Netns, "iptables", "-w", op, "INPUT", "-s", p[1].PrivateIP.String(), "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// BlockUDP drops UDP to and from h where its network meets the internet
// (its gateway): h's paths to other networks blackhole while its TCP, and so
// its ZooKeeper session, keeps working.
func (tb *Testbed) BlockUDP(h *Host) error { return tb.udpRule(h, "-I") }

// UnblockUDP undoes BlockUDP.
func (tb *Testbed) UnblockUDP(h *Host) error { return tb.udpRule(h, "-D") }

func (tb *Testbed) udpRule(h *Host, op string) error {
	gw := tb.ns("gw" + h.Network[:1])
	for _, dir := range []string{"-s", "-d"} {
		if err := in(gw, "iptables", "-w", op, "FORWARD", dir, h.PrivateIP.String(), "-p", "udp", "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// BlockQuorum cuts ensemble server i (from 1) off from the other servers:
// their traffic is dropped where it arrives, inside each server's namespace,
// so the links blackhole as in a real partition while clients still reach
// every server.
func (tb *Testbed) BlockQuorum(i int) error { return tb.quorumRule(i, "-I") }

// UnblockQuorum undoes BlockQuorum.
func (tb *Testbed) UnblockQuorum(i int) error { return tb.quorumRule(i, "-D") }

func (tb *Testbed) quorumRule(i int, op string) error {
	if tb.ens == nil || i < 1 || i > len(tb.ens.Servers) {
		return fmt.Errorf("testbed: no ensemble server %d", i)
	}
	for j := 1; j <= len(tb.ens.Servers); j++ {
		if j == i {
			continue
		}
		for _, p := range [][2]int{{i, j}, {j, i}} {
			if err := in(tb.ns(fmt.Sprintf("zk%d", p[0])), "iptables", "-w", op, "INPUT", "-s", EnsembleIP(p[1]), "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Command builds a command that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Netns, name}, args...)...)
}

// Run runs a command in the host's namespace; the error carries the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// SynRetransmits is how many TCP SYNs the host's namespace has sent again
// (nstat's TcpExtTCPSynRetrans): a first packet lost, not held, shows here.
func (h *Host) SynRetransmits() (int, error) {
	out, err := h.Run(context.Background(), "nstat", "-az", "TcpExtTCPSynRetrans")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "TcpExtTCPSynRetrans" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("nstat in %s printed no TcpExtTCPSynRetrans: %q", h.Name, out)
}

// Ping reports whether one ping from h to addr is answered within a second.
func (h *Host) Ping(addr netip.Addr) bool {
	_, err := h.Run(context.Background(), "ping", "-c", "1", "-W", "1", addr.String())
	return err == nil
}

// WaitPing pings addr (a string, as status reports it) once at a time
// until it answers or limit passes.
func (h *Host) WaitPing(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := h.Run(context.Background(), "ping", "-c", "1", "-W", "1", addr); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s cannot reach %s", h.Name, addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ZooKeeperAddr is the client address hosts use.
func (tb *Testbed) ZooKeeperAddr() string { return ZooKeeperIP + ":2181" }

// ZooKeeperAddrs are the client addresses of every server: one, or the
// ensemble's.
func (tb *Testbed) ZooKeeperAddrs() []string {
	if tb.ens != nil {
		return tb.ens.Addrs()
	}
	return []string{tb.ZooKeeperAddr()}
}

// Ensemble is the running ensemble, or nil.
func (tb *Testbed) Ensemble() *zkserver.Ensemble { return tb.ens }

// ZooKeeper is the running server, or nil.
func (tb *Testbed) ZooKeeper() *zkserver.Server { return tb.zk }

// StartZooKeeper starts (or restarts) ZooKeeper in the internet namespace.
func (tb *Testbed) StartZooKeeper(ctx context.Context) error {
	if tb.zk != nil {
		return tb.zk.Restart(ctx)
	}
	s, err := zkserver.Start(ctx, zkserver.Options{Netns: tb.ns("inet"), Host: ZooKeeperIP, Port: 2181, Dir: filepath.Join(tb.Dir, "zk"), Logger: tb.log})
	if err != nil {
		return fmt.Errorf("testbed zookeeper: %w", err)
	}
	tb.zk = s
	tb.trackPID(s.PID())
	return nil
}

// StopZooKeeper halts ZooKeeper, keeping its data, for outage tests.
func (tb *Testbed) StopZooKeeper() {
	if tb.zk != nil {
		tb.zk.Halt()
	}
}

// FreezeZooKeeper stops ZooKeeper's process without ending it: it
// accepts connections and answers nothing. ThawZooKeeper resumes it.
func (tb *Testbed) FreezeZooKeeper() {
	if tb.zk != nil {
		tb.zk.Freeze()
	}
}

// ThawZooKeeper resumes a frozen ZooKeeper.
func (tb *Testbed) ThawZooKeeper() {
	if tb.zk != nil {
		tb.zk.Thaw()
	}
}

func (tb *Testbed) trackPID(pid int) {
	tb.mu.Lock()
	tb.state.PIDs = append(tb.state.PIDs, pid)
	tb.mu.Unlock()
	tb.save()
}

// StatePath is where the teardown state is kept.
func (tb *Testbed) StatePath() string { return filepath.Join(tb.Dir, "testbed.json") }

func (tb *Testbed) save() {
	tb.mu.Lock()
	data, _ := json.MarshalIndent(tb.state, "", "  ")
	tb.mu.Unlock()
	os.WriteFile(tb.StatePath(), data, 0o644)
}

// Close stops every process the testbed started and deletes its
// namespaces.
func (tb *Testbed) Close() error {
	for _, p := range tb.procs {
		p.Stop(3 * time.Second)
	}
	if tb.zk != nil {
		tb.zk.Halt()
	}
	if tb.ens != nil {
		tb.ens.Stop()
	}
	tb.mu.Lock()
	st := tb.state
	tb.mu.Unlock()
	return Teardown(st)
}

// Teardown removes what a (possibly crashed) testbed left, from its state.
func Teardown(st State) error {
	for _, pid := range st.PIDs {
		// Process groups: `ip netns exec` and what it became.
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	var errs []error
	for i := len(st.Namespaces) - 1; i >= 0; i-- {
		ns := st.Namespaces[i]
		if !strings.HasPrefix(ns, st.Prefix+"-") {
			continue // never touch a namespace this testbed did not make
		}
		if err := sh("ip", "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TeardownFile tears down the testbed whose state file is at path.
func TeardownFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("testbed state %s: %w", path, err)
	}
	return Teardown(st)
}
