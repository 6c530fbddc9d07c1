package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// TestKeyRotationNeedsRegistry: a rotation asked for while ZooKeeper is
// down is refused with the reason, the key stays and the host stays
// reachable; once ZooKeeper is back the same command rotates the key. It
// used to switch keys 1.5 s after an announcement nobody could read, and
// cut the host off.
func TestKeyRotationNeedsRegistry(t *testing.T) {
	f := newFleet(t, "vpc", "dc")
	a, b := f.hosts["h1"], f.hosts["h2"]
	ast, _ := a.Status()
	bst, _ := b.Status()
	pingBoth := func() error {
		if _, err := b.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ast.OverlayIP); err != nil {
			return err
		}
		_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", bst.OverlayIP)
		return err
	}
	waitFor(t, 20*time.Second, "mesh up", pingBoth)

	f.tb.StopZooKeeper()
	// At once, whatever the host has noticed yet, and again once it
	// reports the registry down.
	for _, when := range []string{"just after ZooKeeper stopped", "with the registry reported down"} {
		if when != "just after ZooKeeper stopped" {
			waitFor(t, 15*time.Second, "registry reported down", func() error {
				if st, _ := a.Status(); st.Registry == "connected" {
					return fmt.Errorf("registry %s", st.Registry)
				}
				return nil
			})
		}
		start := time.Now()
		out, err := meshctl(t, a, "key", "rotate")
		t.Logf("rotate %s: answered in %s: %s", when, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, "registry") || !strings.Contains(out, "key was not changed") {
			t.Errorf("rotate %s: %v\n%s", when, err, out)
		}
		if st, _ := a.Status(); st.PublicKey != ast.PublicKey {
			t.Errorf("rotate %s switched the key to %s", when, st.PublicKey)
		}
		// Reachable both ways, repeatedly, past when the old code switched.
		for i := 0; i < 3; i++ {
			if err := pingBoth(); err != nil {
				t.Fatalf("after a refused rotation %s: %v", when, err)
			}
		}
	}

	if err := f.tb.StartZooKeeper(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "registry connected again", func() error {
		for _, m := range []string{"h1", "h2"} {
			if st, _ := f.hosts[m].Status(); st.Registry != "connected" {
				return fmt.Errorf("%s registry %s", m, st.Registry)
			}
		}
		return nil
	})
	out, err := meshctl(t, a, "key", "rotate")
	if err != nil {
		t.Fatalf("rotate after ZooKeeper came back: %v\n%s", err, out)
	}
	after, _ := a.Status()
	if after.PublicKey == ast.PublicKey || !strings.Contains(out, after.PublicKey) {
		t.Fatalf("rotate after ZooKeeper came back: key %s, was %s\n%s", after.PublicKey, ast.PublicKey, out)
	}
	waitFor(t, 5*time.Second, "reachable with the new key", pingBoth)
	waitFor(t, 5*time.Second, "peer holds only the new key", func() error {
		peers, _ := b.Host.Run(context.Background(), "wg", "show", b.Iface, "peers")
		if !strings.Contains(peers, after.PublicKey) || strings.Contains(peers, ast.PublicKey) {
			return fmt.Errorf("peer keys on %s:\n%s", b.Host.Name, peers)
		}
		return nil
	})
}

// TestKeyRotationUnconfirmed: ZooKeeper runs but this host's packets to it
// are dropped, so its session still looks connected while the announcement
// of the next key cannot land. The rotation waits for the registry to show
// the announcement, gives up, keeps the old key and withdraws the
// announcement; once the path to ZooKeeper is back, rotation works.
func TestKeyRotationUnconfirmed(t *testing.T) {
	f := newFleet(t, "dc")
	b := f.hosts["h1"]
	h, err := f.tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	// A session that outlives the cut: the point is a registry that looks
	// connected, not a session expiry.
	a, err := f.tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}}, Groups: []string{"vpc"},
		Extra: "tuning:\n  hold_down: 2s\n  handshake_timeout: 3s\n  path_retry: 5s\n", SessionTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	f.hosts[h.Name] = a
	ast, _ := a.Status()
	bst, _ := b.Status()
	pingBoth := func() error {
		if _, err := b.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ast.OverlayIP); err != nil {
			return err
		}
		_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", bst.OverlayIP)
		return err
	}
	waitFor(t, 20*time.Second, "mesh up", pingBoth)

	cut := []string{"OUTPUT", "-d", testbed.ZooKeeperIP, "-p", "tcp", "--dport", "2181", "-j", "DROP"}
	if _, err := a.Host.Run(context.Background(), "iptables", append([]string{"-w", "-I"}, cut...)...); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := a.Host.Run(context.Background(), "iptables", append([]string{"-w", "-D"}, cut...)...); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	st, _ := a.Status()
	start := time.Now()
	out, err := meshctl(t, a, "key", "rotate")
	t.Logf("rotate with the registry %s but unreachable: answered in %s: %s", st.Registry, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	restore()
	if err == nil || !strings.Contains(out, "did not show the record") || !strings.Contains(out, "key was not changed") {
		t.Errorf("rotate with ZooKeeper unreachable: %v\n%s", err, out)
	}
	if st, _ := a.Status(); st.PublicKey != ast.PublicKey {
		t.Errorf("the unconfirmed rotation switched the key to %s", st.PublicKey)
	}
	for i := 0; i < 3; i++ {
		if err := pingBoth(); err != nil {
			t.Fatalf("after an unconfirmed rotation: %v", err)
		}
	}
	// No announcement lingers on the peer, should one land late: it ends
	// with the old key only. How soon depends on the ZooKeeper client's
	// connection recovering from the cut, not on meshd.
	took := waitFor(t, 30*time.Second, "peer holds only the old key", func() error {
		peers, _ := b.Host.Run(context.Background(), "wg", "show", b.Iface, "peers")
		if strings.TrimSpace(peers) != ast.PublicKey {
			return fmt.Errorf("peer keys on %s:\n%s", b.Host.Name, peers)
		}
		return nil
	})
	t.Logf("the peer held only the old key within %s", took.Round(time.Millisecond))
	// Until the client's connection has recovered from the cut, a rotation
	// is still (rightly) refused; it must work once it has.
	took = waitFor(t, 30*time.Second, "rotate with ZooKeeper reachable again", func() error {
		out, err := meshctl(t, a, "key", "rotate")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	t.Logf("rotation worked within %s of trying again", took.Round(time.Millisecond))
	if st, _ := a.Status(); st.PublicKey == ast.PublicKey {
		t.Fatal("the key did not change")
	}
	// Both hosts may initiate at once here (the peer takes the new key as
	// this host switches to it); one side then finds the other's response
	// invalid and completes at WireGuard's retransmit, 5 s (REKEY_TIMEOUT)
	// later: seen once in CI under load, the ping in step a few ms after.
	waitFor(t, 12*time.Second, "reachable with the new key", pingBoth)
}
