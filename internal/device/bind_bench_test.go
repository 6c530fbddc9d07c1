package device

import (
	"fmt"
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

func benchBatch(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = packet(i, 96)
	}
	return bufs
}

// BenchmarkBindSend: one op is one Send of a batch to a socket nobody
// reads (the kernel drops what overflows, at the same cost for both).
func BenchmarkBindSend(b *testing.B) {
	for _, batch := range []int{1, 8, 128} {
		for _, bb := range benchBinds {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, bb.name), func(b *testing.B) {
				sender, _, _ := openBench(b, bb.new)
				_, _, to := openBench(b, bb.new)
				ep, err := sender.ParseEndpoint(to.String())
				if err != nil {
					b.Fatal(err)
				}
				bufs := benchBatch(batch)
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
	for _, batch := range []int{1, 8, 128} {
		for _, bb := range benchBinds {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, bb.name), func(b *testing.B) {
				sender, _, _ := openBench(b, bb.new)
				_, fn, to := openBench(b, bb.new)
				ep, err := sender.ParseEndpoint(to.String())
				if err != nil {
					b.Fatal(err)
				}
				out := benchBatch(batch)
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
					for got := 0; got < batch; {
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
