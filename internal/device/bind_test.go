package device

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// These tests run the Bind on loopback (127.0.0.1 and ::1) in this process:
// real sockets, real recvmmsg/sendmmsg, real GSO and GRO (loopback does
// both).

// bufSize is what wireguard-go gives every packet: room behind it for GSO.
const bufSize = 65535

type family struct {
	name string
	lo   netip.Addr
}

var families = []family{{"IPv4", netip.MustParseAddr("127.0.0.1")}, {"IPv6", netip.MustParseAddr("::1")}}

// openBind opens a Bind on a free port and returns it, the receive function
// for the family and its address on loopback.
func openBind(t testing.TB, f family, opts BindOptions) (*Bind, conn.ReceiveFunc, netip.AddrPort) {
	t.Helper()
	b := NewBind(opts)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatalf("open bind: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	if len(fns) != 2 {
		t.Fatalf("want an IPv4 and an IPv6 receive function, got %d", len(fns))
	}
	fn := fns[0]
	if f.lo.Is6() {
		fn = fns[1]
	}
	return b, fn, netip.AddrPortFrom(f.lo, port)
}

// rx collects what a receive function returns until it fails.
type rx struct {
	mu      sync.Mutex
	pkts    [][]byte
	from    []netip.AddrPort
	eps     []*Endpoint
	batches int
	err     error
	done    chan struct{}
}

func startRx(fn conn.ReceiveFunc) *rx {
	r := &rx{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		bufs := make([][]byte, conn.IdealBatchSize)
		for i := range bufs {
			bufs[i] = make([]byte, bufSize)
		}
		sizes := make([]int, len(bufs))
		eps := make([]conn.Endpoint, len(bufs))
		for {
			n, err := fn(bufs, sizes, eps)
			r.mu.Lock()
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			r.batches++
			for i := range n {
				r.pkts = append(r.pkts, bytes.Clone(bufs[i][:sizes[i]]))
				var ep *Endpoint
				if eps[i] != nil {
					ep = eps[i].(*Endpoint)
					r.from = append(r.from, ep.AddrPort())
				} else {
					r.from = append(r.from, netip.AddrPort{})
				}
				r.eps = append(r.eps, ep)
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *rx) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pkts)
}

func (r *rx) waitCount(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d datagrams (have %d)", n, r.count()), func() bool { return r.count() >= n })
}

// packet is datagram seq of a test: its length, and content that names it.
func packet(seq, size int) []byte {
	b := make([]byte, size, bufSize)
	for i := range b {
		b[i] = byte(seq*7 + i)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(b, uint32(seq))
	}
	return b
}

func TestBindMixedBatches(t *testing.T) {
	// Batch sizes up to BatchSize, datagram sizes that make runs of equal
	// size (coalesced with GSO), short tails, and lone odd sizes.
	batches := []int{1, 2, 7, 64, 128, 3, 128, 1}
	sizeOf := func(seq int) int {
		switch {
		case seq%17 == 16:
			return 60 // a short one ends a GSO run
		case seq%29 == 0:
			return 1400
		default:
			return 148 + 32*(seq/40%3)
		}
	}
	for _, f := range families {
		for _, offload := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/offload=%v", f.name, offload), func(t *testing.T) {
				opts := BindOptions{NoOffload: !offload}
				sender, _, from := openBind(t, f, opts)
				recvB, fn, to := openBind(t, f, opts)
				r := startRx(fn)
				ep, err := sender.ParseEndpoint(to.String())
				if err != nil {
					t.Fatal(err)
				}
				var want [][]byte
				seq := 0
				for _, n := range batches {
					bufs := make([][]byte, n)
					for i := range bufs {
						bufs[i] = packet(seq, sizeOf(seq))
						want = append(want, bytes.Clone(bufs[i]))
						seq++
					}
					if err := sender.Send(bufs, ep); err != nil {
						t.Fatalf("send batch of %d: %v", n, err)
					}
					// Each batch is received before the next is sent, so
					// the socket buffer never overflows and loss would be
					// the Bind's.
					r.waitCount(t, len(want))
				}
				recvB.Close()
				<-r.done
				if !errors.Is(r.err, net.ErrClosed) {
					t.Errorf("receive after close: %v, want net.ErrClosed", r.err)
				}
				if len(r.pkts) != len(want) {
					t.Fatalf("received %d datagrams, sent %d", len(r.pkts), len(want))
				}
				for i := range want {
					if !bytes.Equal(r.pkts[i], want[i]) {
						t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes %x...", i, len(r.pkts[i]), head(r.pkts[i]), len(want[i]), head(want[i]))
					}
					if r.from[i] != from {
						t.Fatalf("datagram %d from %v, want %v", i, r.from[i], from)
					}
					if r.eps[i] != r.eps[0] {
						t.Fatalf("datagram %d: a new endpoint for the same sender", i)
					}
				}
				gsoSends, groSplits := sender.stats.gsoSends.Load(), recvB.stats.groSplits.Load()
				t.Logf("%d datagrams in %d receive batches; GSO sends %d, GRO splits %d", len(want), r.batches, gsoSends, groSplits)
				if offload && (gsoSends == 0 || groSplits == 0) {
					t.Errorf("offload on, but GSO sends %d and GRO splits %d: want both > 0 on loopback", gsoSends, groSplits)
				}
				if !offload && (gsoSends != 0 || groSplits != 0) {
					t.Errorf("offload off, but GSO sends %d and GRO splits %d", gsoSends, groSplits)
				}
				if d := recvB.stats.groDropped.Load(); d != 0 {
					t.Errorf("%d coalesced datagrams dropped", d)
				}
			})
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

// Garbage is delivered as it came (wireguard-go judges it), with sizes
// from 0 to the largest UDP datagram; only what looks like a handshake
// initiation reaches the hook.
func TestBindGarbageDatagrams(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			var mu sync.Mutex
			var hooked []netip.AddrPort
			_, fn, to := openBind(t, f, BindOptions{OnInitiation: func(from netip.AddrPort, msg []byte) {
				mu.Lock()
				defer mu.Unlock()
				if len(msg) != initiationSize {
					t.Errorf("hook got %d bytes", len(msg))
				}
				hooked = append(hooked, from)
			}})
			r := startRx(fn)
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			init := make([]byte, initiationSize)
			binary.LittleEndian.PutUint32(init, initiationType)
			notInit := bytes.Clone(init)
			notInit[0] = 4
			maxUDP := 65507
			if f.lo.Is6() {
				maxUDP = 65527
			}
			sent := [][]byte{{}, {1}, {1, 0, 0}, init, notInit, init[:147], bytes.Repeat([]byte{0xff}, maxUDP), init}
			for _, d := range sent {
				if _, err := c.Write(d); err != nil {
					t.Fatalf("write %d bytes: %v", len(d), err)
				}
			}
			r.waitCount(t, len(sent))
			r.mu.Lock()
			defer r.mu.Unlock()
			for i, d := range sent {
				if !bytes.Equal(r.pkts[i], d) {
					t.Errorf("datagram %d: got %d bytes, want %d", i, len(r.pkts[i]), len(d))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			self := c.LocalAddr().(*net.UDPAddr).AddrPort()
			if len(hooked) != 2 || hooked[0].Port() != self.Port() || hooked[1].Port() != self.Port() {
				t.Errorf("hook saw %v, want the two initiations from port %d", hooked, self.Port())
			}
		})
	}
}

// Closing a Bind while batches are being sent and received, from both
// ends, ends every call with nil or net.ErrClosed: no panic, no race (run
// with -race), and the Bind opens again.
func TestBindCloseMidBatch(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			sender, _, _ := openBind(t, f, BindOptions{})
			recvB, fn, to := openBind(t, f, BindOptions{})
			r := startRx(fn)
			ep, _ := sender.ParseEndpoint(to.String())
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					bufs := make([][]byte, conn.IdealBatchSize)
					for i := range bufs {
						bufs[i] = packet(i, 200)
					}
					for {
						if err := sender.Send(bufs, ep); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			r.waitCount(t, 1000)
			recvB.Close() // the receiver, in the middle of its batches
			<-r.done
			if !errors.Is(r.err, net.ErrClosed) {
				t.Errorf("receive: %v, want net.ErrClosed", r.err)
			}
			sender.Close() // the sender, in the middle of a sendmmsg
			wg.Wait()
			close(errs)
			for err := range errs {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("send: %v, want net.ErrClosed", err)
				}
			}
			if _, err := fn(make([][]byte, 1), make([]int, 1), make([]conn.Endpoint, 1)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("receive on a closed bind: %v, want net.ErrClosed", err)
			}
			if _, _, err := recvB.Open(to.Port()); err != nil {
				t.Errorf("open again on port %d: %v", to.Port(), err)
			}
		})
	}
}

// A sticky source the host no longer has is dropped and the datagram sent
// from whatever the kernel chooses.
func TestBindStaleStickySource(t *testing.T) {
	f := families[1]
	sender, _, _ := openBind(t, f, BindOptions{})
	_, fn, to := openBind(t, f, BindOptions{})
	r := startRx(fn)
	ep := newEndpoint(epKey{ap: to, src: netip.MustParseAddr("fd18::99"), ifidx: 1}, 0)
	if err := sender.Send([][]byte{packet(1, 100)}, ep); err != nil {
		t.Fatalf("send with a stale source: %v", err)
	}
	r.waitCount(t, 1)
	if got := sender.stats.srcCleared.Load(); got != 1 || ep.SrcIP().IsValid() {
		t.Errorf("source cleared %d times, endpoint source now %v", got, ep.SrcIP())
	}
}

// Steady state costs no allocation per batch on either side (StdNetBind
// allocates an endpoint and an address per received datagram).
func TestBindNoAllocations(t *testing.T) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			sender, _, _ := openBind(t, f, BindOptions{})
			_, fn, to := openBind(t, f, BindOptions{})
			ep, _ := sender.ParseEndpoint(to.String())
			out := make([][]byte, 16)
			for i := range out {
				out[i] = packet(i, 64+i) // distinct sizes: no GSO, 16 datagrams
			}
			in := make([][]byte, conn.IdealBatchSize)
			for i := range in {
				in[i] = make([]byte, bufSize)
			}
			sizes := make([]int, len(in))
			eps := make([]conn.Endpoint, len(in))
			round := func() {
				if err := sender.Send(out, ep); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < len(out); {
					n, err := fn(in, sizes, eps)
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
			}
			round() // fills the endpoint cache and the send pool
			if a := testing.AllocsPerRun(50, round); a != 0 {
				t.Errorf("%v allocations per send+receive of 16 datagrams, want 0", a)
			}
		})
	}
}

func TestEndpointCacheBounded(t *testing.T) {
	var made atomic.Uint64
	c := newEPCache(8, &made)
	key := func(i int) epKey {
		return epKey{ap: netip.AddrPortFrom(netip.MustParseAddr("fd18::1"), uint16(1000+i))}
	}
	peer := c.get(key(0), 0)
	for i := 1; i <= 1000; i++ {
		c.get(key(i), 0) // a flood of distinct (spoofed) senders
		if c.len() > 16 {
			t.Fatalf("cache holds %d endpoints after %d senders, want at most 16", c.len(), i)
		}
		if i%4 == 0 {
			if got := c.get(key(0), 0); got != peer {
				t.Fatalf("an active sender's endpoint was replaced during the flood (at %d)", i)
			}
		}
	}
	peer.ClearSrc()
	if c.get(key(0), 0) == peer {
		t.Errorf("a cleared endpoint was handed out again")
	}
}

// parseControl must survive any control buffer the kernel (or a bug) hands it.
func TestParseControlGarbage(t *testing.T) {
	buf := make([]byte, recvControlSpace)
	for seed := range 2000 {
		for i := range buf {
			buf[i] = byte(seed*31 + i*seed)
		}
		for n := 0; n <= len(buf); n += 7 {
			parseControl(buf[:n])
		}
	}
	// A well-formed GRO message reads back.
	b, data := appendCmsg(make([]byte, 0, 64), unix.SOL_UDP, unix.UDP_GRO, 4)
	binary.NativeEndian.PutUint32(data, 1200)
	if _, _, gso := parseControl(b); gso != 1200 {
		t.Errorf("GSO size %d read back, want 1200", gso)
	}
}
