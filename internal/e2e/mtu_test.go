package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// TestJumboNetworkAcrossPublicPath: networks vpc and classic carry
// 9000-byte frames (as EC2's 9001-byte interfaces do), the public path
// between them 1500, and what does not fit it is dropped without an ICMP
// error. Large pings and a bulk TCP transfer each way between a vpc host
// and a classic host get through, because the automatic overlay MTU fits
// the public path; it used to follow the 9000-byte interface (8920) and
// blackholed them.
func TestJumboNetworkAcrossPublicPath(t *testing.T) {
	f := newFleetOn(t, testbed.Options{ZooKeeper: true, MTU: map[string]int{"vpc": 9000, "classic": 9000}}, "vpc", "vpc", "classic")
	j1, j2, c := f.hosts["h1"], f.hosts["h2"], f.hosts["h3"]
	if out, err := j1.Host.Run(context.Background(), "ip", "link", "show", "eth0"); err != nil || !strings.Contains(out, "mtu 9000") {
		t.Fatalf("the vpc host's underlay is not jumbo: %v\n%s", err, out)
	}
	ip := map[*testbed.Meshd]string{}
	for _, m := range []*testbed.Meshd{j1, j2, c} {
		st, err := m.Status()
		if err != nil {
			t.Fatal(err)
		}
		ip[m] = st.OverlayIP
		t.Logf("%s (%s): overlay MTU %d", m.Host.Name, m.Host.Network, st.MTU)
	}
	pairs := [][2]*testbed.Meshd{{j1, c}, {c, j1}, {j1, j2}}
	waitFor(t, 30*time.Second, "small pings on every pair", func() error {
		for _, p := range pairs {
			if _, err := p[0].Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", ip[p[1]]); err != nil {
				return err
			}
		}
		return nil
	})
	// 8000-byte echoes: the overlay fragments them; every fragment must
	// fit the public path.
	for _, p := range pairs {
		waitFor(t, 10*time.Second, fmt.Sprintf("8000-byte ping %s -> %s", p[0].Host.Name, p[1].Host.Name), func() error {
			_, err := p[0].Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", "-s", "8000", ip[p[1]])
			return err
		})
	}
	// A bulk TCP transfer each way across the public path, bounded in
	// time: a blackhole stalls it.
	listen(t, c.Host, ip[c], 5201)
	for _, reverse := range []bool{false, true} {
		args := []string{"-c", ip[c], "-p", "5201", "-n", "16M", "--connect-timeout", "3000", "--snd-timeout", "5000"}
		what := "vpc -> classic"
		if reverse {
			args, what = append(args, "-R"), "classic -> vpc"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		start := time.Now()
		out, err := j1.Host.Run(ctx, "iperf3", args...)
		cancel()
		if err != nil {
			t.Errorf("16 MB over TCP %s: %v\n%s", what, err, out)
			continue
		}
		t.Logf("16 MB over TCP %s in %s", what, time.Since(start).Round(time.Millisecond))
	}
}
