package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/testbed"
	"github.com/meshd/meshd/registry"
)

// TestLargeSnapshotStart: meshd starts from a 10 000-host snapshot while
// ZooKeeper is down, the case the snapshot exists for (a restart during an
// outage; systemd restarting a meshd that never comes up would loop
// forever). With ZooKeeper down the view is exactly the snapshot, so the
// count meshctl reports must be all of it, within a few seconds.
func TestLargeSnapshotStart(t *testing.T) {
	const n = 10000
	tb := testbed.NewForTest(t, testbed.Options{}) // no ZooKeeper
	h, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	// StartMeshd keeps state in <testbed dir>/<host>/state; checked below.
	stateDir := filepath.Join(tb.Dir, h.Name, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeSnapshot(t, stateDir, netip.MustParseAddr("100.100.0.1"), fakeHosts(t, n))

	start := time.Now()
	m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Firewall: "off", LogLevel: "info"})
	if err != nil {
		t.Fatalf("meshd with a %d-host snapshot: %v", n, err)
	}
	if m.Dir != stateDir {
		t.Fatalf("snapshot written to %s but meshd's state_dir is %s", stateDir, m.Dir)
	}
	var st struct {
		Peers     int    `json:"peers"`
		OverlayIP string `json:"overlay_ip"`
		Registry  string `json:"registry"`
	}
	waitFor(t, 10*time.Second, "every snapshot host known", func() error {
		out, err := meshctl(t, m, "status", "-o", "json")
		if err != nil {
			return fmt.Errorf("meshctl status: %v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if st.Peers != n {
			return fmt.Errorf("%d peers", st.Peers)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("%d peers known %s after meshd was started (registry %s, overlay %s)", st.Peers, took.Round(time.Millisecond), st.Registry, st.OverlayIP)
	if took > 5*time.Second {
		t.Errorf("start with a %d-host snapshot took %s, want <= 5s", n, took)
	}
	if st.OverlayIP != "100.100.0.1" {
		t.Errorf("overlay address %s, want the snapshot's lease 100.100.0.1", st.OverlayIP)
	}
}

// fakeHosts are n valid records of hosts in a network this host has no
// path to (no public address, no link): known peers that cost no
// handshakes, so the test measures the start and not 10 000 WireGuard
// handshakes to nowhere.
func fakeHosts(t *testing.T, n int) []registry.Host {
	t.Helper()
	hosts := make([]registry.Host, n)
	for i := range hosts {
		key, err := wgtypes.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = registry.Host{
			Schema: registry.Schema, InstanceID: fmt.Sprintf("snap%05d", i),
			OverlayIP: netip.AddrFrom4([4]byte{100, 100, byte(64 + i/250), byte(i%250 + 1)}),
			PublicKey: key, Network: "far",
			PrivateIP:  netip.AddrFrom4([4]byte{198, 18, byte(100 + i/250), byte(i%250 + 1)}),
			ListenPort: 51820, Groups: []string{"web"}, Version: "test", StartTime: time.Now().UTC(),
		}
	}
	return hosts
}

// writeSnapshot writes registry.json as the registry saves it.
func writeSnapshot(t *testing.T, dir string, lease netip.Addr, hosts []registry.Host) {
	t.Helper()
	data, err := json.Marshal(struct {
		SavedAt time.Time       `json:"saved_at"`
		Lease   netip.Addr      `json:"lease"`
		Hosts   []registry.Host `json:"hosts"`
	}{time.Now().UTC(), lease, hosts})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, registry.SnapshotFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
}
