package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// transferEnv makes this test binary, run inside a testbed host, one end of
// a TCP transfer: "recv ADDR" or "send ADDR BYTES". Each prints the byte
// count and SHA-256 of what it received or sent. "udp PORT ADDR N" sends N
// datagrams to ADDR from local port PORT (a flow's own source port, which
// bash's /dev/udp cannot choose).
const transferEnv = "MESHD_E2E_TRANSFER"

func TestHelperTransfer(t *testing.T) {
	args := strings.Fields(os.Getenv(transferEnv))
	if len(args) == 0 {
		t.Skip("helper process for TestBindTransfer")
	}
	h := sha256.New()
	var n int64
	var err error
	switch args[0] {
	case "udp":
		var c *net.UDPConn
		port, _ := strconv.Atoi(args[1])
		if c, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}); err != nil {
			break
		}
		var to *net.UDPAddr
		if to, err = net.ResolveUDPAddr("udp", args[2]); err != nil {
			break
		}
		count, _ := strconv.Atoi(args[3])
		for i := 0; i < count && err == nil; i++ {
			var k int
			k, err = c.WriteToUDP([]byte("probe"), to)
			n += int64(k)
			h.Write([]byte("probe"))
		}
		c.Close()
	case "recv":
		var l net.Listener
		if l, err = net.Listen("tcp", args[1]); err != nil {
			break
		}
		fmt.Println("listening")
		var c net.Conn
		if c, err = l.Accept(); err == nil {
			n, err = io.Copy(h, c)
			c.Close()
		}
	case "send":
		size, _ := strconv.ParseInt(args[2], 10, 64)
		var c net.Conn
		if c, err = net.DialTimeout("tcp", args[1], 5*time.Second); err != nil {
			break
		}
		n, err = io.Copy(io.MultiWriter(c, h), io.LimitReader(mrand.NewChaCha8([32]byte{18}), size))
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
}

// cmdOut is a command and its output, readable while it runs.
type cmdOut struct {
	cmd *exec.Cmd
	out syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lastLine is the helper's verdict: the last non-empty line it printed
// before go test's own PASS.
func lastLine(s string) string {
	for _, l := range slices.Backward(strings.Split(strings.TrimSpace(s), "\n")) {
		if l = strings.TrimSpace(l); l != "" && l != "PASS" && !strings.HasPrefix(l, "ok ") {
			return l
		}
	}
	return ""
}

// transferCmd runs the helper inside h.
func transferCmd(ctx context.Context, h *testbed.Host, spec string) *cmdOut {
	c := &cmdOut{}
	c.cmd = h.Command(ctx, os.Args[0], "-test.run=^TestHelperTransfer$", "-test.v=false")
	c.cmd.Env = append(os.Environ(), transferEnv+"="+spec)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	return c
}

// TestBindTransfer: 100 MiB over TCP through meshd with its own Bind, across
// the NAT between two networks (the public path), arrive intact; a host on
// wireguard-go's Bind (interface.bind) talks to one on meshd's.
func TestBindTransfer(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	start := func(network, bind string) *testbed.Meshd {
		h, err := tb.AddHost(network)
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Bind: bind, Firewall: "off"})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b, c := start("vpc", "meshd"), start("classic", "meshd"), start("vpc", "wireguard-go")
	if cfg, err := os.ReadFile(c.Config); err != nil || !strings.Contains(string(cfg), "bind: wireguard-go") {
		t.Fatalf("host %s is not configured with wireguard-go's bind: %v", c.Host.Name, err)
	}
	overlay := func(m *testbed.Meshd) string {
		st, err := m.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.OverlayIP
	}
	bIP := overlay(b)
	for _, pair := range [][2]*testbed.Meshd{{a, b}, {c, a}} {
		to := overlay(pair[1])
		waitFor(t, 30*time.Second, pair[0].Host.Name+" reaches "+to, func() error {
			_, err := pair[0].Host.Run(context.Background(), "ping", "-c1", "-W1", to)
			return err
		})
	}

	const size = 100 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	recv := transferCmd(ctx, b.Host, "recv "+bIP+":7018")
	if err := recv.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer recv.cmd.Wait()
	defer cancel()
	waitFor(t, 10*time.Second, "receiver listening", func() error {
		if !strings.Contains(recv.out.String(), "listening") {
			return fmt.Errorf("receiver says %q", recv.out.String())
		}
		return nil
	})
	began := time.Now()
	send := transferCmd(ctx, a.Host, fmt.Sprintf("send %s:7018 %d", bIP, size))
	if err := send.cmd.Run(); err != nil {
		t.Fatalf("sender: %v\n%s", err, send.out.String())
	}
	if err := recv.cmd.Wait(); err != nil {
		t.Fatalf("receiver: %v\n%s", err, recv.out.String())
	}
	took := time.Since(began)
	sent, got := lastLine(send.out.String()), lastLine(recv.out.String())
	if !strings.HasPrefix(sent, fmt.Sprintf("%d ", size)) || got != sent {
		t.Fatalf("sent %q, received %q", sent, got)
	}
	t.Logf("100 MiB %s -> %s (public path, meshd's bind) intact in %s (%.0f Mbit/s)", a.Host.Name, b.Host.Name, took.Round(time.Millisecond),
		float64(size*8)/took.Seconds()/1e6)
}
