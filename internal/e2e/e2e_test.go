package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bin returns the directory holding meshd and meshctl: $MESHD_BIN (make
// test builds them), else a fresh build.
func bin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if d := os.Getenv("MESHD_BIN"); d != "" {
			binDir = d
			return
		}
		binDir, buildErr = os.MkdirTemp("", "meshd-bin-")
		for _, cmd := range []string{"meshd", "meshctl"} {
			if buildErr != nil {
				break
			}
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, cmd), "../../cmd/"+cmd).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", cmd, err, out)
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for {
		if err = cond(); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("after %s: %s: %v", limit, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type fleet struct {
	tb    *testbed.Testbed
	hosts map[string]*testbed.Meshd
}

func newFleet(t *testing.T, networks ...string) *fleet {
	return newFleetOn(t, testbed.Options{ZooKeeper: true}, networks...)
}

// newFleetOn is newFleet on a testbed built with o.
func newFleetOn(t *testing.T, o testbed.Options, networks ...string) *fleet {
	tb := testbed.NewForTest(t, o)
	f := &fleet{tb: tb, hosts: map[string]*testbed.Meshd{}}
	for _, n := range networks {
		f.add(t, n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for name, m := range f.hosts {
				t.Logf("--- log of %s (%s):\n%s", name, m.Host.Network, m.LogTail(40))
			}
		}
	})
	return f
}

func (f *fleet) add(t *testing.T, network string) *testbed.Meshd {
	t.Helper()
	h, err := f.tb.AddHost(network)
	if err != nil {
		t.Fatal(err)
	}
	return f.start(t, h)
}

// start runs meshd, configured as add does, on a host already added.
func (f *fleet) start(t *testing.T, h *testbed.Host) *testbed.Meshd {
	t.Helper()
	m, err := f.tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}}, Groups: []string{h.Network},
		Extra: "tuning:\n  hold_down: 2s\n  handshake_timeout: 3s\n  path_retry: 5s\n"})
	if err != nil {
		t.Fatal(err)
	}
	f.hosts[h.Name] = m
	return m
}

func peerOf(m *testbed.Meshd, name string) (admin.Peer, error) {
	ps, err := m.Peers()
	if err != nil {
		return admin.Peer{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return admin.Peer{}, fmt.Errorf("%s does not list %s (has %d peers)", m.Host.Name, name, len(ps))
}

// pingUnlessUp sends one ping from m to each peer in ps that is not up:
// with lazy peers (the default) a known peer stays idle, out of the
// WireGuard device, until traffic brings it in. A lost ping is no error
// here: the caller waits for the state it wants.
func pingUnlessUp(m *testbed.Meshd, ps []admin.Peer) {
	for _, p := range ps {
		if p.State != "up" && p.OverlayIP != "" {
			m.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", p.OverlayIP)
		}
	}
}

func wantPath(a, b *testbed.Meshd) (path, endpointIP string) {
	switch {
	case a.Host.Network == b.Host.Network:
		return "private", b.Host.PrivateIP.String()
	case (a.Host.Network == "vpc" && b.Host.Network == "dc") || (a.Host.Network == "dc" && b.Host.Network == "vpc"):
		return "link", b.Host.PrivateIP.String()
	}
	return "public", b.Host.PublicIP.String()
}

// TestMeshAcrossNetworks: six hosts, two in each network, link vpc<->dc.
func TestMeshAcrossNetworks(t *testing.T) {
	f := newFleet(t, "classic", "classic", "vpc", "vpc", "dc", "dc")
	all := f.sorted()
	// Every host lists every other as a peer, the overlay pings through
	// (the ping brings an idle peer into the device: lazy peers are the
	// default), and the peer is up on the right path, with its reason.
	waitFor(t, 30*time.Second, "all peers up on the expected paths", func() error {
		for _, a := range all {
			for _, b := range all {
				if a == b {
					continue
				}
				st, _ := b.Status()
				p, err := peerOf(a, b.Host.Name)
				if err != nil {
					return err
				}
				if p.OverlayIP != st.OverlayIP {
					return fmt.Errorf("%s lists %s at %s, it has %s", a.Host.Name, b.Host.Name, p.OverlayIP, st.OverlayIP)
				}
				if _, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", p.OverlayIP); err != nil {
					return err
				}
				if p, err = peerOf(a, b.Host.Name); err != nil {
					return err
				}
				path, ip := wantPath(a, b)
				if p.Path != path || !strings.HasPrefix(p.Endpoint, ip+":") {
					return fmt.Errorf("%s -> %s (%s->%s): path %s endpoint %s, want %s %s", a.Host.Name, b.Host.Name, a.Host.Network, b.Host.Network, p.Path, p.Endpoint, path, ip)
				}
				if p.State != "up" {
					return fmt.Errorf("%s -> %s state %s", a.Host.Name, b.Host.Name, p.State)
				}
			}
		}
		return nil
	})
	// wg show agrees with the admin API on every endpoint.
	for _, a := range all {
		out, err := a.Host.Run(context.Background(), "wg", "show", a.Iface, "endpoints")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range all {
			if a == b {
				continue
			}
			p, _ := peerOf(a, b.Host.Name)
			_, ip := wantPath(a, b)
			if !strings.Contains(out, p.PublicKey+"\t"+ip+":51820") {
				t.Errorf("wg show %s endpoints lacks %s at %s:\n%s", a.Iface, b.Host.Name, ip, out)
			}
		}
	}
	// Reasons in words.
	c1, v1 := all[0], all[2]
	if p, _ := peerOf(c1, v1.Host.Name); p.Reason != "different networks classic and vpc" {
		t.Errorf("reason classic->vpc = %q", p.Reason)
	}
	if p, _ := peerOf(v1, all[4].Host.Name); p.Reason != "link vpc<->dc" {
		t.Errorf("reason vpc->dc = %q", p.Reason)
	}

	// A new host is known to every peer within a second: listed idle (lazy
	// peers, the default, keep it out of the devices until traffic; the
	// device side of a join is TestLazyPeersOff's), and its first ping is
	// answered.
	start := time.Now()
	n := f.add(t, "dc")
	started := time.Since(start)
	var slowest time.Duration
	for _, a := range all {
		d := waitFor(t, 10*time.Second, a.Host.Name+" sees the new host", func() error {
			p, err := peerOf(a, n.Host.Name)
			if err != nil {
				return err
			}
			if p.State != "idle" {
				return fmt.Errorf("%s lists the new host %s, want idle", a.Host.Name, p.State)
			}
			return nil
		})
		slowest = max(slowest, d)
	}
	t.Logf("join convergence: every peer listed the new host within %s of its admin socket answering (start took %s)", slowest, started)
	if slowest > time.Second {
		t.Errorf("join took %s to reach every peer, want <= 1s", slowest)
	}
	np, err := peerOf(all[0], n.Host.Name)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := all[0].Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", np.OverlayIP); err != nil {
		t.Errorf("first ping from %s to the new host: %v\n%s", all[0].Host.Name, err, out)
	}

	// Kill -9 and restart: same address and key; reachable again within 2s
	// in both directions.
	victim := all[1]
	before, _ := victim.Status()
	victim.Proc.Kill()
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	after, _ := victim.Status()
	if after.OverlayIP != before.OverlayIP || after.PublicKey != before.PublicKey {
		t.Fatalf("restart changed identity: %s %s -> %s %s", before.OverlayIP, before.PublicKey, after.OverlayIP, after.PublicKey)
	}
	other := all[3]
	ot, _ := other.Status()
	d := waitFor(t, 10*time.Second, "ping both ways after restart", func() error {
		if _, err := victim.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ot.OverlayIP); err != nil {
			return err
		}
		_, err := other.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", after.OverlayIP)
		return err
	})
	t.Logf("after kill -9 and restart: reachable both ways %s after the admin socket answered", d)
	if d > 2*time.Second {
		t.Errorf("restart gap %s > 2s", d)
	}

	// A stopped host is removed from its peers after the hold-down.
	gone := all[5]
	gst, _ := gone.Status()
	gone.Proc.Stop(5 * time.Second)
	waitFor(t, 15*time.Second, "stopped host removed from every device", func() error {
		for _, a := range all[:5] {
			out, _ := a.Host.Run(context.Background(), "wg", "show", a.Iface, "peers")
			if strings.Contains(out, gst.PublicKey) {
				return fmt.Errorf("%s still has %s", a.Host.Name, gone.Host.Name)
			}
		}
		return nil
	})
	// Its interface is gone with it.
	if out, _ := gone.Host.Run(context.Background(), "ip", "link", "show", gone.Iface); !strings.Contains(out, "does not exist") {
		t.Errorf("stopped meshd left its interface: %s", out)
	}
}

func (f *fleet) sorted() []*testbed.Meshd {
	var out []*testbed.Meshd
	for i := 1; i <= len(f.hosts); i++ {
		out = append(out, f.hosts[fmt.Sprintf("h%d", i)])
	}
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
