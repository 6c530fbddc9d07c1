package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/admin"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestPeersTableGolden(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	peers := []admin.Peer{
		{Name: "web-1", OverlayIP: "100.100.0.7", Network: "classic", Endpoint: "198.19.1.11:51820", Path: "public", Reason: "different networks vpc and classic",
			LastHandshake: now.Add(-12 * time.Second).Format(time.RFC3339), RxBytes: 1536, TxBytes: 5 << 20, State: "up"},
		{Name: "db-1", OverlayIP: "100.100.3.9", Network: "dc", Endpoint: "198.18.3.11:51820", Path: "link", Reason: "link vpc<->dc",
			LastHandshake: now.Add(-3 * time.Minute).Format(time.RFC3339), RxBytes: 0, TxBytes: 92, State: "connecting"},
		{Name: "lonely", OverlayIP: "100.100.9.1", Network: "dc2", State: "down", Reason: "unreachable: peer in network dc2 has no public address and vpc is not linked to it"},
		{Name: "quiet", OverlayIP: "100.100.4.2", Network: "vpc", Endpoint: "198.18.2.12:51820", Path: "private", Reason: "same network vpc",
			LastHandshake: now.Add(-10 * time.Minute).Format(time.RFC3339), RxBytes: 4096, TxBytes: 4096, State: "idle"},
		{Name: "cutoff", OverlayIP: "100.100.5.3", Network: "dc", Endpoint: "198.18.3.12:51820", Path: "link", Reason: "link vpc<->dc",
			LastHandshake: now.Add(-40 * time.Second).Format(time.RFC3339), RxBytes: 1 << 20, TxBytes: 1 << 20, State: "stale", KeptAlive: true,
			StaleReason: "no registry record for 2m0s; kept: WireGuard heard it 1s ago (the data plane is alive); removed after 30s of silence"},
	}
	var b bytes.Buffer
	writePeersTable(&b, peers, now)
	golden(t, "peers", b.String())
}

func TestStatusGolden(t *testing.T) {
	var b bytes.Buffer
	writeStatus(&b, admin.Status{Name: "h2", OverlayIP: "100.100.116.188", Network: "vpc", PublicKey: "pYmujt1s9NVLGuj+4ym4gfFd/ZxY0Maxyp6QEfOMm2I=",
		Registry: "disconnected", Peers: 2, LastSync: "2026-11-24T12:00:00Z", PeersByState: map[string]int{"stale": 2}, PeersByPath: map[string]int{"link": 1, "public": 1},
		Interface: "mesh0", ListenPort: 51820, MTU: 1420, Firewall: "enforce", Conntrack: [2]int{12, 262144},
		Breaker: admin.Breaker{Tripped: true, Held: 5, Limit: 5}, Version: "1.0.0",
		Apply:     admin.Apply{Failures: 4, Pending: 2, LastError: "apply 2 upserts, 0 removals to mesh0: resource temporarily unavailable", RetryAt: "2026-11-24T12:00:08Z"},
		KeptAlive: 3, KeptAliveByNetwork: map[string]int{"dc": 3}, Uptime: "3s", PolicyError: "policy:\n  rules[0].from: unknown group \"wbe\""})
	golden(t, "status", b.String())
}

// With trust, status names the certificate, the hosts not yet signing and
// each refused record.
func TestStatusTrustGolden(t *testing.T) {
	var b bytes.Buffer
	writeStatus(&b, admin.Status{Name: "h2", OverlayIP: "100.100.116.188", Network: "vpc", PublicKey: "pYmujt1s9NVLGuj+4ym4gfFd/ZxY0Maxyp6QEfOMm2I=",
		Registry: "connected", Peers: 2, LastSync: "2026-11-24T12:00:00Z", PeersByState: map[string]int{"up": 2}, PeersByPath: map[string]int{"private": 2},
		Interface: "mesh0", ListenPort: 51820, MTU: 1420, Firewall: "enforce", Conntrack: [2]int{12, 262144}, Version: "1.0.0", Uptime: "3s",
		PrivateIP6: "fd18:2::11", Trust: "ca", TrustMode: "permissive", Cert: &admin.Cert{Serial: "5F3A", NotAfter: "2027-11-24T12:00:00Z", Network: "vpc", Groups: []string{"web", "api"}},
		UnsignedHosts: []string{"old-1", "old-2"}, BadRecords: map[string]int64{"replay": 1},
		Lazy:     &admin.LazyStatus{InDevice: 2, IdleAfter: "5m0s", Held: 3, Replayed: 3, Identified: 1},
		Refusals: []admin.Refusal{{At: "2026-11-24T11:59:00Z", Node: "/meshd/prod/hosts/92/h1#0000000042", Reason: "replay", Detail: "replay: sequence 17 of h1 is older than 18, already seen"}}})
	golden(t, "status-trust", b.String())
}

func TestHumanUnits(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestErrorsAndExitCodes runs the built meshctl as an operator would.
func TestErrorsAndExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "meshctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run("--socket", filepath.Join(t.TempDir(), "none.sock"), "peers")
	if code != 1 || !strings.Contains(out, "meshd is not running (no socket at") {
		t.Errorf("no socket: exit %d: %s", code, out)
	}
	if out, code := run("peers", "-o", "yaml"); code != 2 || !strings.Contains(out, "must be one of") {
		t.Errorf("bad flag: exit %d: %s", code, out)
	}
	if out, code := run("decommission", "h1", "--socket", "/nonexistent"); code != 1 || !strings.Contains(out, "--yes") {
		t.Errorf("decommission without --yes: exit %d: %s", code, out)
	}
	if out, code := run("decommission", "../leases/x", "--yes", "--socket", "/nonexistent"); code != 1 || !strings.Contains(out, `"../leases/x": not an instance id`) {
		t.Errorf("decommission of a bad id: exit %d: %s", code, out)
	}
	if out, code := run("revoke", "5F3A0G", "--socket", "/nonexistent"); code != 1 || !strings.Contains(out, `"5F3A0G" is not a certificate serial`) {
		t.Errorf("revoke of a bad serial: exit %d: %s", code, out)
	}
	if out, code := run("revoke", "5F:3A:09", "--socket", "/nonexistent"); code != 1 || !strings.Contains(out, "revocation list is signed by an operator: give --sign-key") {
		t.Errorf("unsigned revoke: exit %d: %s", code, out)
	}
	if out, code := run("links", "set", "vpc"); code != 1 || !strings.Contains(out, "NET:NET") {
		t.Errorf("bad link: exit %d: %s", code, out)
	}
	if out, _ := run("explain", "--help"); !strings.Contains(out, "Example") {
		t.Errorf("help without examples:\n%s", out)
	}
	// A user who may not use the socket is told so.
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: running meshctl as another user needs root")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "meshd.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(sock, 0o660)
	os.Chmod(bin, 0o755)
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "--socket", sock, "status")
	got, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(got), "permission denied; run as root or as a member of the meshd group") {
		t.Errorf("as nobody: exit %d: %s", cmd.ProcessState.ExitCode(), got)
	}
}

// The IPv6 fields extend the JSON contract only when set: a host without
// IPv6 underlay addresses prints what the previous release printed.
func TestIP6FieldsOmittedWhenEmpty(t *testing.T) {
	for _, v := range []any{admin.Peer{Name: "a"}, admin.Status{Name: "a"}} {
		data, _ := json.Marshal(v)
		if strings.Contains(string(data), "ip6") {
			t.Errorf("%T without IPv6 addresses: %s", v, data)
		}
	}
	data, _ := json.Marshal(admin.Peer{Name: "a", PrivateIP6: "fd18:2::11", PublicIP6: "fd18:0:2::11"})
	if !strings.Contains(string(data), `"private_ip6":"fd18:2::11","public_ip6":"fd18:0:2::11"`) {
		t.Errorf("peer with IPv6 addresses: %s", data)
	}
}
