package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// TestExplainAfterPing: a peer that has just answered a ping is reported
// reachable by `meshctl explain` run at once, every time. explain used to
// read the reconciler's once-a-second copy of the device and said "no
// handshake ever completed" in most tries.
func TestExplainAfterPing(t *testing.T) {
	f := newFleet(t, "classic")
	a := f.hosts["h1"]
	for i, network := range []string{"vpc", "dc", "classic", "vpc"} {
		b := f.add(t, network)
		bst, _ := b.Status()
		ast, _ := a.Status()
		for _, pair := range [][2]*testbed.Meshd{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			ip := bst.OverlayIP
			if to == a {
				ip = ast.OverlayIP
			}
			waitFor(t, 20*time.Second, fmt.Sprintf("%s pings %s", from.Host.Name, to.Host.Name), func() error {
				if _, err := peerOf(from, to.Host.Name); err != nil {
					return err
				}
				_, err := from.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ip)
				return err
			})
			out, err := meshctl(t, from, "explain", to.Host.Name)
			if err != nil || !strings.Contains(out, "is reachable over the") || !strings.Contains(out, "ok   handshake") {
				t.Errorf("try %d: explain %s on %s right after a ping answered: %v\n%s", i+1, to.Host.Name, from.Host.Name, err, out)
			}
		}
	}
}

// TestExplainStartsHandshake: a reachable peer this host never completed a
// handshake with is called reachable, because explain starts a handshake
// and waits for it; while the path is blocked it is called unreachable,
// after that wait.
func TestExplainStartsHandshake(t *testing.T) {
	f := newFleet(t, "classic")
	a := f.hosts["h1"]
	h, err := f.tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	// Public path only (different networks), blocked before b's meshd
	// starts: no handshake can ever complete.
	if err := f.tb.BlockUDP(h); err != nil {
		t.Fatal(err)
	}
	b := f.start(t, h)
	waitFor(t, 20*time.Second, "each host lists the other", func() error {
		if _, err := peerOf(a, b.Host.Name); err != nil {
			return err
		}
		_, err := peerOf(b, a.Host.Name)
		return err
	})
	start := time.Now()
	out, err := meshctl(t, a, "explain", b.Host.Name)
	took := time.Since(start)
	if err == nil || !strings.Contains(out, "no handshake ever completed with "+b.Host.Name) || !strings.Contains(out, "not even after one was started") {
		t.Errorf("explain of a blocked peer: %v\n%s", err, out)
	}
	t.Logf("explain of a blocked peer answered in %s", took)

	if err := f.tb.UnblockUDP(h); err != nil {
		t.Fatal(err)
	}
	if p, _ := peerOf(a, b.Host.Name); p.LastHandshake != "" {
		t.Fatalf("%s already has a handshake with %s: %+v", a.Host.Name, b.Host.Name, p)
	}
	start = time.Now()
	out, err = meshctl(t, a, "explain", b.Host.Name)
	took = time.Since(start)
	if err != nil || !strings.Contains(out, "is reachable over the public path") {
		t.Errorf("explain of a reachable, never-handshaken peer: %v\n%s", err, out)
	}
	t.Logf("explain of a reachable, never-handshaken peer answered in %s", took)
}
