package device

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/testbed"
)

// TestDevicesAcrossNetworks: one host in each of classic, vpc and dc of the
// real testbed, configured by the test with each other's keys and PUBLIC
// endpoints (through the gateways' NAT).
func TestDevicesAcrossNetworks(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{})
	var hs []*nsHost
	for i, n := range []string{"classic", "vpc", "dc"} {
		h, err := tb.AddHost(n)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, startHelper(t, h.Netns, fmt.Sprintf("%s%s", tb.Prefix, h.Name), h.PublicIP,
			netip.MustParseAddr(fmt.Sprintf("100.100.66.%d", i+1))))
	}
	for _, a := range hs {
		var d Delta
		for _, b := range hs {
			if a != b {
				p := a.peer(b)
				p.PersistentKeepalive = 25 * time.Second // NAT on the path
				d.Upsert = append(d.Upsert, p)
			}
		}
		a.call(helperReq{Op: "apply", Delta: &d})
	}
	for _, a := range hs {
		for _, b := range hs {
			if a == b {
				continue
			}
			// The first packet starts the handshake through both NATs.
			// Every peer was configured with a keepalive, so each pair
			// initiates from both ends within milliseconds, and an
			// initiation that reaches a host before it knows the sender is
			// dropped until the retry 5 s later (15 runs in 40 here took
			// one). WireGuard keeps one handshake per peer: when two
			// cross, one end can be left with a session the other has not
			// got (2 runs in 40: "Received invalid response message", then
			// the pings dropped); the sender starts again once it has sent
			// for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s) and heard
			// nothing. The bound covers both with margin.
			waitFor(t, 30*time.Second, a.ns+" -> "+b.ns+" over the overlay", func() bool {
				_, err := a.exec("ping", "-c", "1", "-W", "1", b.over.String())
				return err == nil
			})
		}
		out, err := a.exec("wg", "show", a.ifname, "latest-handshakes")
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(strings.TrimSpace(out), "\n") + 1; lines != 2 || strings.Contains(out, "\t0\n") {
			t.Errorf("wg show %s: want 2 peers with a handshake:\n%s", a.ifname, out)
		}
	}

	// 100 MB over TCP through the tunnel arrive intact.
	a, b, c := hs[0], hs[1], hs[2]
	addr := netip.AddrPortFrom(b.over, 7000).String()
	b.call(helperReq{Op: "serve", Addr: addr})
	start := time.Now()
	sent := a.call(helperReq{Op: "send", Addr: addr, Bytes: 100 << 20})
	got := b.call(helperReq{Op: "served"})
	if got.Bytes != 100<<20 || got.Sum != sent.Sum {
		t.Fatalf("received %d bytes sha256 %s, sent %d %s", got.Bytes, got.Sum, sent.Bytes, sent.Sum)
	}
	t.Logf("100 MiB classic->vpc over public endpoints in %s, sha256 intact", time.Since(start).Round(time.Millisecond))

	// Removing c through the delta path leaves a<->b untouched.
	before := a.stats(b.key)
	a.call(helperReq{Op: "apply", Delta: &Delta{Remove: []wgtypes.Key{c.key}}})
	if out, err := a.exec("ping", "-c", "5", "-i", "0.1", "-W", "1", b.over.String()); err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping to the kept peer after removing another: %v\n%s", err, out)
	}
	if after := a.stats(b.key); !after.LastHandshake.Equal(before.LastHandshake) {
		t.Errorf("kept peer's session changed: %v -> %v", before.LastHandshake, after.LastHandshake)
	}
	if out, _ := a.exec("ping", "-c", "1", "-W", "1", c.over.String()); !strings.Contains(out, "100% packet loss") && !strings.Contains(out, "Required key not available") {
		t.Errorf("removed peer still reachable:\n%s", out)
	}
}

// startHelper starts a device in namespace ns whose peers reach it at
// underlay address under.
func startHelper(t *testing.T, ns, ifname string, under, over netip.Addr, env ...string) *nsHost {
	t.Helper()
	h := &nsHost{t: t, ns: ns, ifname: ifname, under: under, over: over}
	key, _ := wgtypes.GeneratePrivateKey()
	spec, _ := json.Marshal(Config{Name: h.ifname, PrivateKey: key, ListenPort: 51820, Address: netip.PrefixFrom(h.over, 16)})
	h.cmd = exec.Command("ip", "netns", "exec", h.ns, os.Args[0], "-test.run=^TestHelperDevice$")
	h.cmd.Env = append(append(os.Environ(), helperEnv+"="+string(spec)), env...)
	h.cmd.Stderr = &prefixWriter{t: t, prefix: h.ns}
	h.in, _ = h.cmd.StdinPipe()
	stdout, _ := h.cmd.StdoutPipe()
	h.out = json.NewDecoder(stdout)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.cmd.Process.Kill(); h.cmd.Wait() })
	var hello helperResp
	if err := h.out.Decode(&hello); err != nil || hello.Err != "" {
		t.Fatalf("%s: device did not start: %v %s", h.ns, err, hello.Err)
	}
	h.key = hello.PublicKey
	return h
}
