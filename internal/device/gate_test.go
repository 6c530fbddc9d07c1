package device

import (
	"net/netip"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// batchTUN is a tun.Device whose reads return the packets queued with
// push, one batch per Read.
type batchTUN struct {
	tun.Device // unused methods panic
	batches    chan [][]byte
}

func (f *batchTUN) push(pkts ...[]byte) { f.batches <- pkts }

func (f *batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkts := <-f.batches
	for i, p := range pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(pkts), nil
}

func (f *batchTUN) BatchSize() int { return 128 }

// ipv4To is a minimal IPv4 packet (header only) to dst.
func ipv4To(dst string) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	a := netip.MustParseAddr(dst).As4()
	copy(p[16:20], a[:])
	return p
}

func readBatch(t *testing.T, g *idleGate) []int {
	t.Helper()
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, 128)
	n, err := g.Read(bufs, sizes, 16)
	if err != nil {
		t.Fatal(err)
	}
	return sizes[:n]
}

func TestIdleGateHoldsOnlyIdlePeersPackets(t *testing.T) {
	f := &batchTUN{batches: make(chan [][]byte, 4)}
	var mu sync.Mutex
	var asked []netip.Addr
	g := newIdleGate(f, func(a netip.Addr) { mu.Lock(); asked = append(asked, a); mu.Unlock() })

	// Nothing idle: every packet passes, untouched.
	f.push(ipv4To("100.100.0.2"), ipv4To("100.100.0.3"))
	if got := readBatch(t, g); got[0] != 28 || got[1] != 28 {
		t.Fatalf("sizes with nothing idle: %v", got)
	}

	idle := netip.MustParseAddr("100.100.0.3")
	if err := g.markIdle(idle); err != nil {
		t.Fatal(err)
	}
	if err := g.markIdle(netip.MustParseAddr("fd18::3")); err == nil {
		t.Error("an IPv6 idle address was accepted: the overlay is IPv4")
	}
	ipv6 := make([]byte, 40)
	ipv6[0] = 0x60
	f.push(ipv4To("100.100.0.2"), ipv4To("100.100.0.3"), []byte{0x45}, ipv6, ipv4To("100.100.0.3"))
	got := readBatch(t, g)
	if want := []int{28, 0, 1, 40, 0}; len(got) != len(want) || got[0] != 28 || got[1] != 0 || got[2] != 1 || got[3] != 40 || got[4] != 0 {
		t.Fatalf("sizes %v, want %v: only the idle peer's packets emptied", got, want)
	}
	if len(asked) != 1 || asked[0] != idle {
		t.Fatalf("asked %v, want one ask for %s", asked, idle)
	}
	if h := g.stats.Held.Load(); h != 2 {
		t.Errorf("held %d, want 2", h)
	}

	// A flood to the idle peer is bounded: 16 kept, the rest dropped.
	flood := make([][]byte, 30)
	for i := range flood {
		flood[i] = ipv4To("100.100.0.3")
	}
	f.push(flood...)
	readBatch(t, g)
	if q := len(g.idle[idle].pkts); q != maxHeldPerPeer {
		t.Errorf("held for the peer: %d, want the bound %d", q, maxHeldPerPeer)
	}
	if d := g.stats.Dropped.Load(); d != 32-maxHeldPerPeer {
		t.Errorf("dropped %d, want %d", d, 32-maxHeldPerPeer)
	}
	if len(asked) != 1 {
		t.Errorf("asked again within a second: %v", asked)
	}

	// Forgetting the peer frees what it held; its packets pass again.
	g.forget(idle)
	if g.held != 0 || g.nIdle.Load() != 0 {
		t.Errorf("after forget: %d held, %d idle", g.held, g.nIdle.Load())
	}
	f.push(ipv4To("100.100.0.3"))
	if got := readBatch(t, g); got[0] != 28 {
		t.Errorf("after forget the packet was still held: %v", got)
	}
}

// The total bound holds across peers.
func TestIdleGateTotalBound(t *testing.T) {
	f := &batchTUN{batches: make(chan [][]byte, 1)}
	g := newIdleGate(f, func(netip.Addr) {})
	for i := range maxHeldTotal/maxHeldPerPeer + 1 {
		a := netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)})
		g.markIdle(a)
		batch := make([][]byte, maxHeldPerPeer)
		for j := range batch {
			batch[j] = ipv4To(a.String())
		}
		f.push(batch...)
		readBatch(t, g)
	}
	if g.held != maxHeldTotal || g.stats.Dropped.Load() != maxHeldPerPeer {
		t.Errorf("held %d (bound %d), dropped %d (want %d)", g.held, maxHeldTotal, g.stats.Dropped.Load(), maxHeldPerPeer)
	}
}
