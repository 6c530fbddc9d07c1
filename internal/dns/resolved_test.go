package dns

import (
	"bufio"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
)

// standIn plays systemd-resolved's Manager on a private bus: resolved
// does not run here, dbus-daemon does, so the calls cross a real bus.
type standIn struct {
	mu    sync.Mutex
	calls []string
}

func (s *standIn) record(format string, args ...any) *dbus.Error {
	s.mu.Lock()
	s.calls = append(s.calls, fmt.Sprintf(format, args...))
	s.mu.Unlock()
	return nil
}

type wireAddr struct {
	Family int32
	Addr   []byte
}

type wireDomain struct {
	Domain      string
	RoutingOnly bool
}

func (s *standIn) SetLinkDNS(ifindex int32, addrs []wireAddr) *dbus.Error {
	var out []string
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.Addr)
		out = append(out, fmt.Sprintf("%d/%s", a.Family, ip))
	}
	return s.record("SetLinkDNS %d %s", ifindex, strings.Join(out, ","))
}

func (s *standIn) SetLinkDomains(ifindex int32, domains []wireDomain) *dbus.Error {
	var out []string
	for _, d := range domains {
		prefix := ""
		if d.RoutingOnly {
			prefix = "~"
		}
		out = append(out, prefix+d.Domain)
	}
	return s.record("SetLinkDomains %d %s", ifindex, strings.Join(out, ","))
}

func (s *standIn) SetLinkDefaultRoute(ifindex int32, on bool) *dbus.Error {
	return s.record("SetLinkDefaultRoute %d %v", ifindex, on)
}

func (s *standIn) RevertLink(ifindex int32) *dbus.Error { return s.record("RevertLink %d", ifindex) }

// privateBus starts a dbus-daemon for the test and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("SKIP-DEP: dbus-daemon not installed")
	}
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--print-address=1")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon address: %v", err)
	}
	return strings.TrimSpace(addr)
}

func connect(t *testing.T, addr string) *dbus.Conn {
	t.Helper()
	c, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestResolvedRoutesTheDomainAndReverts(t *testing.T) {
	addr := privateBus(t)
	client := connect(t, addr)
	pool := netip.MustParsePrefix("100.100.0.0/16")
	// Nobody owns resolved's name: nothing is configured, no error.
	r, err := configureResolved(client, "lo", netip.MustParseAddrPort("100.100.0.1:53"), "prod.mesh.internal", pool, slog.Default())
	if r != nil || err != nil {
		t.Fatalf("without resolved: %v, %v; want nothing done", r, err)
	}

	fake := &standIn{}
	svc := connect(t, addr)
	if err := svc.Export(fake, resolvedPath, resolvedMgr); err != nil {
		t.Fatal(err)
	}
	if reply, err := svc.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("claim %s: %v %v", resolvedName, reply, err)
	}
	r, err = configureResolved(client, "lo", netip.MustParseAddrPort("100.100.0.1:53"), "prod.mesh.internal", pool, slog.Default())
	if err != nil || r == nil {
		t.Fatalf("with resolved: %v", err)
	}
	r.Revert()
	want := []string{
		"SetLinkDNS 1 2/100.100.0.1", // lo is ifindex 1
		"SetLinkDomains 1 ~prod.mesh.internal,~100.100.in-addr.arpa",
		"SetLinkDefaultRoute 1 false",
		"RevertLink 1",
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !slices.Equal(fake.calls, want) {
		t.Errorf("calls to resolved:\n got %q\nwant %q", fake.calls, want)
	}
}

func TestReverseZones(t *testing.T) {
	for _, c := range []struct {
		pool string
		n    int
		some string
	}{
		{"100.100.0.0/16", 1, "100.100.in-addr.arpa"},
		{"100.64.0.0/10", 64, "127.100.in-addr.arpa"},
		{"100.100.4.0/22", 4, "7.100.100.in-addr.arpa"},
		{"100.100.0.0/24", 1, "0.100.100.in-addr.arpa"},
	} {
		got := reverseZones(netip.MustParsePrefix(c.pool))
		if len(got) != c.n || !slices.Contains(got, c.some) {
			t.Errorf("reverseZones(%s) = %d zones %v, want %d with %s", c.pool, len(got), got[:min(3, len(got))], c.n, c.some)
		}
	}
}

func TestListsUnixSocket(t *testing.T) {
	// A /proc/net/unix of a namespace where resolved runs: its socket
	// listening, one accepted connection, an unnamed client.
	table := `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20931 /run/systemd/resolve/io.systemd.Resolve
0000000000000000: 00000003 00000000 00000000 0001 03 31337 /run/systemd/resolve/io.systemd.Resolve
0000000000000000: 00000003 00000000 00000000 0001 03 31336
0000000000000000: 00000002 00000000 00010000 0001 01 20930 /run/dbus/system_bus_socket
`
	if !listsUnixSocket(table, resolvedSocket) {
		t.Errorf("resolved's socket not found in\n%s", table)
	}
	// The testbed's namespaces: the host's resolved is not among them.
	other := "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 40001 /tmp/t/h1/meshd.sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 40002 /run/systemd/resolve/io.systemd.Resolve.Monitor\n"
	if listsUnixSocket(other, resolvedSocket) {
		t.Errorf("found resolved's socket in\n%s", other)
	}
}
