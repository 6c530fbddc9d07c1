package device

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// inNetns runs fn on a thread that is in namespace ns for the duration:
// sockets made there stay in ns.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter namespace %s: %v", ns, err)
	}
	fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with this goroutine.
		t.Fatalf("leave namespace %s: %v", ns, err)
	}
	runtime.UnlockOSThread()
}

// TestBindInNamespaces runs two Binds in two namespaces joined by a veth
// pair (underlay 198.18.78.0/24 and fd18::78:0/112), both families: GSO
// batches cross a real link and arrive whole and in order.
func TestBindInNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root to create network namespaces")
	}
	suffix := make([]byte, 2)
	rand.Read(suffix)
	a, b := "bd"+hex.EncodeToString(suffix)+"-a", "bd"+hex.EncodeToString(suffix)+"-b"
	for _, ns := range []string{a, b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", b)
	for i, ns := range []string{a, b} {
		run(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("198.18.78.%d/24", i+1), "dev", "eth0")
		run(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("fd18::78:%d/112", i+1), "dev", "eth0", "nodad")
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	open := func(ns string) (*Bind, []conn.ReceiveFunc, uint16) {
		bind := NewBind(BindOptions{})
		var fns []conn.ReceiveFunc
		var port uint16
		var err error
		inNetns(t, ns, func() { fns, port, err = bind.Open(0) })
		if err != nil {
			t.Fatalf("open bind in %s: %v", ns, err)
		}
		t.Cleanup(func() { bind.Close() })
		return bind, fns, port
	}
	sender, _, _ := open(a)
	recvB, fns, port := open(b)
	rx4, rx6 := startRx(fns[0]), startRx(fns[1])

	batch := func(n, size int) [][]byte {
		bufs := make([][]byte, n)
		for i := range bufs {
			bufs[i] = packet(i, size)
		}
		return bufs
	}
	check := func(r *rx, from int, sent [][]byte) {
		t.Helper()
		r.waitCount(t, from+len(sent))
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, want := range sent {
			if got := r.pkts[from+i]; string(got) != string(want) {
				t.Fatalf("datagram %d: got %d bytes %x, want %d bytes %x", i, len(got), head(got), len(want), head(want))
			}
		}
	}
	for _, fam := range []struct {
		to string
		rx *rx
	}{{"198.18.78.2", rx4}, {"fd18::78:2", rx6}} {
		ep, err := sender.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr(fam.to), port).String())
		if err != nil {
			t.Fatal(err)
		}
		gso0 := sender.stats.gsoSends.Load()
		sent := batch(128, 1200) // a bulk TCP flow's shape: one size, GSO
		if err := sender.Send(sent, ep); err != nil {
			t.Fatalf("send to %s: %v", fam.to, err)
		}
		check(fam.rx, 0, sent)
		if sender.stats.gsoSends.Load() == gso0 {
			t.Errorf("to %s: the batch went without GSO over veth", fam.to)
		}
	}
	t.Logf("GRO splits at the receiver: %d", recvB.stats.groSplits.Load())
}
