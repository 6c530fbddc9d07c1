package probe

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestEchoLoopback: a real echo over a raw socket on loopback, through
// both entry points.
func TestEchoLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: raw ICMP sockets need root")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rtt, err := Echo(ctx, lo)
	if err != nil || rtt <= 0 || rtt > 2*time.Second {
		t.Fatalf("Echo(%s) = %s, %v; want a round trip", lo, rtt, err)
	}
	if !(ICMP{}).Reachable(ctx, lo) {
		t.Errorf("Reachable(%s) = false", lo)
	}
	// A deadline already past: no answer can count.
	done, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	if _, err := Echo(done, lo); err == nil {
		t.Errorf("Echo with a past deadline answered")
	}
}
