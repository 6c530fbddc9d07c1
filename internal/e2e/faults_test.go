package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// TestBreakerHoldsMassRemoval: half of the hosts vanish at once (their
// meshd killed, records expiring together). The watcher refuses to remove
// them, says so in status and /metrics, keeps carrying traffic to the
// ones still alive, and removes them only when an operator releases the
// breaker.
func TestBreakerHoldsMassRemoval(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for i := 0; i < 7; i++ {
		h, err := tb.AddHost([]string{"vpc", "dc"}[i%2])
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}},
			Extra: "tuning:\n  hold_down: 1s\n  max_removals: 2\n"})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	watcher := ms[0]
	waitFor(t, 20*time.Second, "6 peers up", func() error {
		ps, _ := watcher.Peers()
		pingUnlessUp(watcher, ps)
		ps, _ = watcher.Peers()
		up := 0
		for _, p := range ps {
			if p.State == "up" {
				up++
			}
		}
		if up != 6 {
			return fmt.Errorf("%d up", up)
		}
		return nil
	})
	// Three of six vanish at once (kill -9: records expire with the sessions).
	for _, m := range ms[1:4] {
		m.Proc.Kill()
	}
	// The three expire within moments of each other, but each goes only
	// after its hold-down and an unanswered handshake, so they may come
	// due one by one: at most max_removals (2) go, the rest are held.
	var removed int
	waitFor(t, 30*time.Second, "breaker tripped, the removals past the limit held", func() error {
		st, _ := watcher.Status()
		ps, _ := watcher.Peers()
		removed = 6 - len(ps)
		if !st.Breaker.Tripped || removed > 2 || st.Breaker.Held != 3-removed {
			return fmt.Errorf("breaker %+v with %d removed", st.Breaker, removed)
		}
		return nil
	})
	out, _ := meshctl(t, watcher, "status")
	if want := fmt.Sprintf("TRIPPED: holding %d removal(s)", 3-removed); !strings.Contains(out, want) {
		t.Errorf("status does not say %q:\n%s", want, out)
	}
	if ps, _ := watcher.Peers(); len(ps) < 4 {
		t.Errorf("breaker let more than 2 removals through: %d peers", len(ps))
	}
	alive, _ := ms[5].Status()
	if !watcher.Host.Ping(mustAddr(alive.OverlayIP)) {
		t.Error("traffic to a live peer broken while the breaker holds")
	}
	if out, err := meshctl(t, watcher, "breaker", "release"); err != nil || !strings.Contains(out, fmt.Sprintf("released %d", 3-removed)) {
		t.Fatalf("breaker release: %v %s", err, out)
	}
	waitFor(t, 10*time.Second, "held peers removed after release", func() error {
		ps, _ := watcher.Peers()
		if len(ps) != 3 {
			return fmt.Errorf("%d peers", len(ps))
		}
		return nil
	})
}

// TestNoPrivateKeyInZooKeeper dumps every node meshd wrote and checks no
// host's private key is among them.
func TestNoPrivateKeyInZooKeeper(t *testing.T) {
	f := newFleet(t, "vpc", "dc")
	var keys []string
	for _, m := range f.hosts {
		data, err := os.ReadFile(filepath.Join(m.Dir, "private.key"))
		if err != nil {
			t.Fatal(err)
		}
		k := strings.TrimSpace(string(data))
		raw, _ := base64.StdEncoding.DecodeString(k)
		keys = append(keys, k, fmt.Sprintf("%x", raw))
	}
	waitFor(t, 10*time.Second, "registry written", func() error {
		st, _ := f.hosts["h1"].Status()
		if st.Peers != 1 {
			return fmt.Errorf("%d peers", st.Peers)
		}
		return nil
	})
	// zkCli from Debian's package, run where ZooKeeper lives: one session
	// lists every node, a second reads them all.
	inet := &testbed.Host{Name: "inet", Netns: f.tb.Prefix + "-inet"}
	zkcli := "java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar org.apache.zookeeper.ZooKeeperMain -server 198.19.0.2:2181"
	list, err := inet.Run(context.Background(), "bash", "-c", zkcli+" ls -R /meshd 2>/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	var gets strings.Builder
	nodes := 0
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, "/meshd") {
			fmt.Fprintf(&gets, "get %s\n", strings.TrimSpace(l))
			nodes++
		}
	}
	gets.WriteString("quit\n")
	cmd := inet.Command(context.Background(), "bash", "-c", zkcli+" 2>/dev/null")
	cmd.Stdin = strings.NewReader(gets.String())
	raw, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	dump := string(raw)
	t.Logf("scanned %d ZooKeeper nodes for %d private keys", nodes, len(keys)/2)
	if !strings.Contains(dump, "public_key") {
		t.Fatalf("the dump does not hold the host records:\n%s", dump)
	}
	for _, k := range keys {
		if strings.Contains(dump, k) {
			t.Errorf("a private key is in ZooKeeper")
		}
	}
}

// TestPoisonRecords writes 1000 malformed records and a malformed policy
// straight into ZooKeeper: meshd keeps running and carrying traffic, skips
// and counts every record once, and refuses the policy keeping the old one.
func TestPoisonRecords(t *testing.T) {
	f := newFleet(t, "vpc", "dc")
	a, b := f.hosts["h1"], f.hosts["h2"]
	bst, _ := b.Status()
	waitFor(t, 20*time.Second, "mesh up", func() error {
		_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", bst.OverlayIP)
		return err
	})
	root := "/meshd/" + f.tb.Prefix
	var cmds strings.Builder
	kinds := []string{"notjson", "[]", "null", "{schema:1}"}
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("poison%d#%010d", i, 1)
		if i%10 == 9 {
			name = fmt.Sprintf("noseq%d", i) // a node name meshd never writes
		}
		fmt.Fprintf(&cmds, "create %s/hosts/%02x/%s %s\n", root, i%256, name, kinds[i%len(kinds)])
	}
	fmt.Fprintf(&cmds, "set %s/policy nonsense\ncreate %s/policy nonsense\n", root, root)
	zkWrite(t, f.tb, cmds.String())
	waitFor(t, 30*time.Second, "all 1000 counted once", func() error {
		for _, m := range []*testbed.Meshd{a, b} {
			st, err := m.Status()
			if err != nil {
				return fmt.Errorf("%s: %v", m.Host.Name, err)
			}
			var n int64
			for _, c := range st.BadRecords {
				n += c
			}
			if n != 1000 {
				return fmt.Errorf("%s counted %d bad records (%v)", m.Host.Name, n, st.BadRecords)
			}
			if st.PolicyError == "" {
				return fmt.Errorf("%s did not reject the malformed policy", m.Host.Name)
			}
		}
		return nil
	})
	for _, m := range []*testbed.Meshd{a, b} {
		select {
		case <-m.Proc.Exited():
			t.Fatalf("%s's meshd exited", m.Host.Name)
		default:
		}
		if ps, _ := m.Peers(); len(ps) != 1 {
			t.Errorf("%s has %d peers after the poison, want 1", m.Host.Name, len(ps))
		}
	}
	if _, err := a.Host.Run(context.Background(), "ping", "-c", "3", "-i", "0.2", "-W", "1", bst.OverlayIP); err != nil {
		t.Errorf("traffic after the poison: %v", err)
	}
}

// zkWrite runs zkCli commands (one a line) as a second ZooKeeper client,
// from the namespace ZooKeeper lives in: how tests write records meshd
// would never write.
func zkWrite(t *testing.T, tb *testbed.Testbed, cmds string) {
	t.Helper()
	inet := &testbed.Host{Name: "inet", Netns: tb.Prefix + "-inet"}
	cmd := inet.Command(context.Background(), "bash", "-c",
		"java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar org.apache.zookeeper.ZooKeeperMain -server "+tb.ZooKeeperAddr()+" >/dev/null 2>&1")
	cmd.Stdin = strings.NewReader(cmds + "quit\n")
	if err := cmd.Run(); err != nil {
		t.Fatalf("zkCli: %v", err)
	}
}

// TestKeyRotationKeepsFlows: a host rotates its key while a TCP flow runs
// from a peer; the next key is announced first, the flow survives, and the
// peer ends with the new key only.
func TestKeyRotationKeepsFlows(t *testing.T) {
	f := newFleet(t, "vpc", "dc")
	a, b := f.hosts["h1"], f.hosts["h2"]
	ast, _ := a.Status()
	waitFor(t, 20*time.Second, "mesh up", func() error {
		_, err := b.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ast.OverlayIP)
		return err
	})
	listen(t, a.Host, ast.OverlayIP, 5201)
	var out strings.Builder
	flow := b.Host.Command(context.Background(), "iperf3", "-c", ast.OverlayIP, "-t", "8", "-b", "20M")
	flow.Stdout, flow.Stderr = &out, &out
	if err := flow.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the flow runs before the rotation; iperf3 has no readiness signal
	rot, err := meshctl(t, a, "key", "rotate")
	if err != nil {
		t.Fatalf("key rotate: %v\n%s", err, rot)
	}
	after, _ := a.Status()
	if after.PublicKey == ast.PublicKey {
		t.Fatal("public key unchanged after rotation")
	}
	if err := flow.Wait(); err != nil {
		t.Fatalf("TCP flow did not survive the key rotation: %v\n%s", err, out.String())
	}
	waitFor(t, 5*time.Second, "peer holds only the new key", func() error {
		peers, _ := b.Host.Run(context.Background(), "wg", "show", b.Iface, "peers")
		if !strings.Contains(peers, after.PublicKey) || strings.Contains(peers, ast.PublicKey) {
			return fmt.Errorf("peer keys on %s:\n%s", b.Host.Name, peers)
		}
		return nil
	})
	// The rotated key is the one on disk: a restart keeps it.
	a.Proc.Stop(10 * time.Second)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Status(); st.PublicKey != after.PublicKey {
		t.Errorf("after restart the key is %s, want the rotated %s", st.PublicKey, after.PublicKey)
	}
}
