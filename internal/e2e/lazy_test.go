package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// synRetrans is the host's count of retransmitted SYNs.
func synRetrans(t *testing.T, h *testbed.Host) int {
	t.Helper()
	n, err := h.SynRetransmits()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wgPeers is how many peers the host's WireGuard device holds.
func wgPeers(t *testing.T, m *testbed.Meshd) int {
	t.Helper()
	out, err := m.Host.Run(context.Background(), "wg", "show", m.Iface, "peers")
	if err != nil {
		t.Fatalf("wg show: %v\n%s", err, out)
	}
	return len(strings.Fields(out))
}

// TestLazyPeers: with peers.lazy, hosts know each other (meshctl peers says
// idle) but hold none in their WireGuard devices until traffic. The first
// TCP connection, both sides idle to each other, goes through without a
// SYN retransmission; the answering side was brought in by the initiation
// alone; a third host's first ping is answered.
func TestLazyPeers(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for _, n := range []string{"vpc", "vpc", "classic"} {
		ms = append(ms, startHost(t, tb, n, testbed.MeshdOptions{Groups: []string{n}, Extra: "peers:\n  lazy: true\n", LogLevel: "debug"}))
	}
	a, b, c := ms[0], ms[1], ms[2]
	waitFor(t, 20*time.Second, "every host to list the others idle", func() error {
		for _, m := range ms {
			ps, err := m.Peers()
			if err != nil {
				return err
			}
			if len(ps) != 2 {
				return fmt.Errorf("%s lists %d peers", m.Host.Name, len(ps))
			}
			for _, p := range ps {
				if p.State != "idle" {
					return fmt.Errorf("%s lists %s %s", m.Host.Name, p.Name, p.State)
				}
			}
		}
		return nil
	})
	for _, m := range ms {
		if n := wgPeers(t, m); n != 0 {
			t.Errorf("%s's WireGuard device holds %d peers before any traffic", m.Host.Name, n)
		}
	}

	// a -> b over TCP: a's SYN is held and sent on, b brings a in on a's
	// initiation.
	bo, _ := peerOf(a, b.Host.Name)
	listen(t, b.Host, "0.0.0.0", 7001)
	retrans := synRetrans(t, a.Host)
	start := time.Now()
	out, err := a.Host.Run(context.Background(), "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+bo.OverlayIP+"/7001")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("first connection to an idle peer: %v\n%s", err, out)
	}
	t.Logf("first TCP connection, both sides idle: %s", took)
	if n := synRetrans(t, a.Host) - retrans; n != 0 {
		t.Errorf("the first SYN was retransmitted %d times (took %s): lost, not held", n, took)
	}
	if took >= time.Second {
		t.Errorf("first connection took %s: it waited for a retransmission", took)
	}
	if na, nb, nc := wgPeers(t, a), wgPeers(t, b), wgPeers(t, c); na != 1 || nb != 1 || nc != 0 {
		t.Errorf("device peers after a->b: a %d, b %d, c %d; want 1, 1, 0", na, nb, nc)
	}
	if p, _ := peerOf(a, c.Host.Name); p.State != "idle" {
		t.Errorf("a lists c %s after talking only to b", p.State)
	}
	// What the operator reads on a.
	out, err = meshctl(t, a, "status")
	if err != nil || !strings.Contains(out, "1 in the device, 1 idle (out after 5m0s without traffic)") {
		t.Errorf("meshctl status on a, want its lazy peers line: %v\n%s", err, out)
	}

	// c -> a across networks (public path): first ping answered.
	ao, _ := peerOf(c, a.Host.Name)
	if out, err := c.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", ao.OverlayIP); err != nil || !strings.Contains(out, "1 received") {
		t.Errorf("first ping from c to idle a: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "a and c to list each other up", func() error {
		for _, pair := range [][2]*testbed.Meshd{{a, c}, {c, a}} {
			p, err := peerOf(pair[0], pair[1].Host.Name)
			if err != nil {
				return err
			}
			if p.State != "up" {
				return fmt.Errorf("%s lists %s %s", pair[0].Host.Name, pair[1].Host.Name, p.State)
			}
		}
		return nil
	})
}
