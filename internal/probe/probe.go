// Package probe checks underlay reachability with ICMP echo, out of band of
// WireGuard, so that traffic is moved to a path only once it answers.
package probe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// ICMP probes with one echo request per call over a raw socket (meshd has
// CAP_NET_RAW).
type ICMP struct{}

// Reachable reports whether addr answers an echo before ctx ends.
func (ICMP) Reachable(ctx context.Context, addr netip.Addr) bool {
	_, err := echo(ctx, addr, "meshd path probe")
	// Without an ICMP socket there is no probing: let the handshake decide.
	return err == nil || errors.Is(err, errNoSocket)
}

// Echo sends one echo request to addr and returns the round-trip time.
func Echo(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	return echo(ctx, addr, "meshctl ping")
}

var errNoSocket = errors.New("open ICMP socket")

// echo sends one echo request carrying payload to addr and waits, until
// ctx's deadline (or a second), for its reply.
func echo(ctx context.Context, addr netip.Addr, payload string) (time.Duration, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNoSocket, err)
	}
	defer c.Close()
	id, seq := os.Getpid()&0xffff, rand.IntN(0xffff)
	b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte(payload)}}).Marshal(nil)
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
		return 0, fmt.Errorf("send to %s: %w", addr, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("no answer from %s within %s", addr, time.Until(deadline).Round(time.Millisecond)+time.Since(start).Round(time.Millisecond))
		}
		if from.String() != addr.String() {
			continue
		}
		if m, err := icmp.ParseMessage(1, buf[:n]); err == nil && m.Type == ipv4.ICMPTypeEchoReply {
			if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq {
				return time.Since(start), nil
			}
		}
	}
}
