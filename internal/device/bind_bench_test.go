package device

import (
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

// The benchmarks compare meshd's Bind with wireguard-go's StdNetBind on
// loopback, in one run (bench/PROFILES.md has the figures):
//
//	go test -run '^$' -bench 'BenchmarkBind' -benchmem ./internal/device
//
// Datagrams are 96 bytes, a 64-byte payload once WireGuard wrapped it (so
// equal-sized batches are coalesced by GSO on both binds, as in a flood).

var benchBinds = []struct {
	name string
	new  func() conn.Bind
}{
	{BindWireGuardGo, func() conn.Bind { return conn.NewStdNetBind() }},
	{BindMeshd, func() conn.Bind { return NewBind(BindOptions{}) }},
}

func openBench(b *testing.B, newBind func() conn.Bind) (conn.Bind, conn.ReceiveFunc, netip.AddrPort) {
	bind := newBind()
	fns, port, err := bind.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bind.Close() })
	return bind, fns[0], netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
}

// benchBatch is n datagrams of 96 bytes, or with distinct sizes (96 and
// up), which GSO cannot coalesce: one message per datagram, as over a path
// without offloads.
func benchBatch(n int, distinct bool) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		size := 96
		if distinct {
			size += i
		}
		bufs[i] = packet(i, size)
	}
	return bufs
}

var benchShapes = []struct {
	name     string
	batch    int
	distinct bool
}{{"batch=1", 1, false}, {"batch=8", 8, false}, {"batch=128", 128, false}, {"batch=128,no-gso", 128, true}}

// BenchmarkBindSend: one op is one Send of a batch to a socket nobody
// reads (the kernel drops what overflows, at the same cost for both).
func BenchmarkBindSend(b *testing.B) {
	for _, shape := range benchShapes {
		for _, bb := range benchBinds {
			b.Run(shape.name+"/"+bb.name, func(b *testing.B) {
				sender, _, _ := openBench(b, bb.new)
				_, _, to := openBench(b, bb.new)
				ep, err := sender.ParseEndpoint(to.String())
				if err != nil {
					b.Fatal(err)
				}
				bufs := benchBatch(shape.batch, shape.distinct)
				b.ReportAllocs()
				for b.Loop() {
					if err := sender.Send(bufs, ep); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBindRoundTrip: one op is one Send of a batch and the receives
// that return all of it; receive allocations show here.
func BenchmarkBindRoundTrip(b *testing.B) {
	for _, shape := range benchShapes {
		for _, bb := range benchBinds {
			b.Run(shape.name+"/"+bb.name, func(b *testing.B) {
				sender, _, _ := openBench(b, bb.new)
				_, fn, to := openBench(b, bb.new)
				ep, err := sender.ParseEndpoint(to.String())
				if err != nil {
					b.Fatal(err)
				}
				out := benchBatch(shape.batch, shape.distinct)
				in := make([][]byte, conn.IdealBatchSize)
				for i := range in {
					in[i] = make([]byte, bufSize)
				}
				sizes := make([]int, len(in))
				eps := make([]conn.Endpoint, len(in))
				b.ReportAllocs()
				for b.Loop() {
					if err := sender.Send(out, ep); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < shape.batch; {
						n, err := fn(in, sizes, eps)
						if err != nil {
							b.Fatal(err)
						}
						got += n
					}
				}
			})
		}
	}
}
