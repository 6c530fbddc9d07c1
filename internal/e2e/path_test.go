package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// pathOf reports a's path and endpoint to b.
func pathOf(t *testing.T, a, b *testbed.Meshd) (string, string) {
	t.Helper()
	p, err := peerOf(a, b.Host.Name)
	if err != nil {
		return "", ""
	}
	return p.Path, p.Endpoint
}

// TestPathFallbackAndReturn: the private path between two classic hosts is
// blocked while traffic flows: both move to the public path within the
// bound, and back once it is unblocked, after the retry; no flapping.
func TestPathFallbackAndReturn(t *testing.T) {
	f := newFleet(t, "classic", "classic")
	a, b := f.hosts["h1"], f.hosts["h2"]
	bst, _ := b.Status()
	waitFor(t, 20*time.Second, "private path up", func() error {
		if p, _ := pathOf(t, a, b); p != "private" {
			return fmt.Errorf("path %q", p)
		}
		_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", bst.OverlayIP)
		return err
	})
	// Traffic flows all along, as it would for a service.
	ping := a.Host.Command(context.Background(), "ping", "-i", "0.2", "-w", "90", bst.OverlayIP)
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ping.Process.Kill(); ping.Wait() })

	if err := f.tb.BlockPrivate(a.Host, b.Host); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 20*time.Second, "fallback to public on both sides", func() error {
		pa, ea := pathOf(t, a, b)
		pb, _ := pathOf(t, b, a)
		if pa != "public" || pb != "public" || !strings.HasPrefix(ea, b.Host.PublicIP.String()+":") {
			return fmt.Errorf("a->b %s %s, b->a %s", pa, ea, pb)
		}
		_, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", bst.OverlayIP)
		return err
	})
	t.Logf("moved to the public path %s after the private path was blocked", d)
	p, _ := peerOf(a, b.Host.Name)
	if !strings.HasPrefix(p.Reason, "fell back: no handshake on private") {
		t.Errorf("reason after fallback = %q", p.Reason)
	}
	// meshctl explain names the blocked private path; ping says the path.
	if out, err := meshctl(t, a, "explain", b.Host.Name); err != nil || !strings.Contains(out, "public via "+b.Host.PublicIP.String()) || !strings.Contains(out, "fell back: no handshake on private") {
		t.Errorf("explain after fallback: %v\n%s", err, out)
	}
	if out, err := meshctl(t, a, "ping", b.Host.Name, "-c", "2"); err != nil || !strings.Contains(out, "over the public path") {
		t.Errorf("meshctl ping after fallback: %v\n%s", err, out)
	}
	// While private stays blocked the peers stay on public: trials of the
	// private path may come and go, but the committed path does not flap.
	holdPublic := time.Now().Add(12 * time.Second)
	for time.Now().Before(holdPublic) {
		if _, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", bst.OverlayIP); err != nil {
			t.Errorf("overlay broken while on the public path: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	if err := f.tb.UnblockPrivate(a.Host, b.Host); err != nil {
		t.Fatal(err)
	}
	d = waitFor(t, 60*time.Second, "back on the private path", func() error {
		if pa, _ := pathOf(t, a, b); pa != "private" {
			return fmt.Errorf("a->b %s", pa)
		}
		if pb, _ := pathOf(t, b, a); pb != "private" {
			return fmt.Errorf("b->a %s", pb)
		}
		return nil
	})
	t.Logf("back on the private path %s after unblocking", d)
	// No flapping once back: the path stays private.
	end := time.Now().Add(20 * time.Second)
	for time.Now().Before(end) {
		if pa, _ := pathOf(t, a, b); pa != "private" {
			t.Fatalf("flapped to %s after returning to private", pa)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestRehomeKeepsAddressAndFlow: a host moves from classic to vpc (new
// addresses, same instance id, meshd restarted). It keeps its overlay
// address, its peer switches path, and a TCP stream survives the move.
func TestRehomeKeepsAddressAndFlow(t *testing.T) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Fatal("iperf3 is needed (scripts/install-deps.sh installs it)")
	}
	f := newFleet(t, "classic", "vpc")
	mover, peer := f.hosts["h1"], f.hosts["h2"]
	pst, _ := peer.Status()
	before, _ := mover.Status()
	waitFor(t, 20*time.Second, "public path classic->vpc", func() error {
		if p, _ := pathOf(t, peer, mover); p != "public" {
			return fmt.Errorf("path %q", p)
		}
		_, err := mover.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", pst.OverlayIP)
		return err
	})
	srv := peer.Host.Command(context.Background(), "iperf3", "-s", "-1", "-B", pst.OverlayIP)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	// Ready when it listens (a probe connection would use up its one test).
	waitFor(t, 5*time.Second, "iperf3 server listening", func() error {
		out, err := peer.Host.Run(context.Background(), "ss", "-Hltn", "sport = :5201")
		if err == nil && !strings.Contains(out, "5201") {
			err = fmt.Errorf("not listening")
		}
		return err
	})
	// The stream: 30 s at a modest rate, so the move happens in its middle.
	var out strings.Builder
	cli := mover.Host.Command(context.Background(), "iperf3", "-c", pst.OverlayIP, "-t", "30", "-b", "20M")
	cli.Stdout, cli.Stderr = &out, &out
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the stream runs before the move; iperf3 has no readiness signal

	if !mover.Proc.Stop(10 * time.Second) {
		t.Fatal("meshd did not stop on SIGTERM")
	}
	if err := f.tb.MoveHost(mover.Host, "vpc"); err != nil {
		t.Fatal(err)
	}
	if err := mover.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	if err := mover.Start(); err != nil {
		t.Fatal(err)
	}
	after, _ := mover.Status()
	if after.OverlayIP != before.OverlayIP || after.Network != "vpc" {
		t.Fatalf("after re-homing: %s in %s, was %s", after.OverlayIP, after.Network, before.OverlayIP)
	}
	waitFor(t, 20*time.Second, "peer switched to the private path", func() error {
		p, ep := pathOf(t, peer, mover)
		if p != "private" || !strings.HasPrefix(ep, mover.Host.PrivateIP.String()+":") {
			return fmt.Errorf("path %s endpoint %s", p, ep)
		}
		return nil
	})
	if err := cli.Wait(); err != nil {
		t.Fatalf("TCP stream did not survive the move: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "sender") {
		t.Errorf("iperf3 did not finish its stream:\n%s", out.String())
	}
}
