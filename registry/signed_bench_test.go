package registry

import (
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/trust"
)

// BenchmarkFirstSyncSigned is the CPU a host spends believing a fleet of
// 10 000 signed records the first time it sees them (empty certificate
// cache): decode, chain check, signature, sequence and address checks.
// ZooKeeper's own round trips are not in it. bench/RESULTS.md quotes it:
//
//	go test -run '^$' -bench FirstSyncSigned -benchtime 3x ./registry
func BenchmarkFirstSyncSigned(b *testing.B) {
	const n = 10000
	ca, err := trust.InitCA(b.TempDir(), "")
	if err != nil {
		b.Fatal(err)
	}
	records := make([][]byte, n)
	signPool, _ := trust.NewPool(ca.PEM)
	for i := range records {
		id := fmt.Sprintf("h%d", i)
		key, _, _ := trust.NewKey()
		cert, err := ca.Issue(key.Public(), id, trust.Template{Network: "vpc", Groups: []string{"web"}})
		if err != nil {
			b.Fatal(err)
		}
		s, err := trust.NewSigner(key, cert, signPool)
		if err != nil {
			b.Fatal(err)
		}
		k, _ := wgtypes.GeneratePrivateKey()
		h := Host{InstanceID: id, OverlayIP: netip.AddrFrom4([4]byte{100, 100, byte(i >> 8), byte(i)}), PublicKey: k.PublicKey(),
			Network: "vpc", PrivateIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), ListenPort: 51820,
			StartTime: time.Now().UTC(), Seq: uint64(time.Now().UnixMicro())}
		if records[i], err = SealRecord(h, s); err != nil {
			b.Fatal(err)
		}
	}
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		pool, _ := trust.NewPool(ca.PEM) // empty cache: the first sync
		r := &Registry{o: Options{Pool: testPool, Trust: &hostTrust{pool: pool}}, view: newView(), refused: map[string]Refusal{}}
		r.trust.init()
		// The setup's garbage (10 000 keys and certificates) is not the
		// sync's to collect.
		runtime.GC()
		before := cpuTime()
		b.StartTimer()
		for _, data := range records {
			h, err := r.decode(data)
			if err == nil {
				err = r.admit(h)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		cpu += cpuTime() - before
		b.StartTimer()
	}
	// CPU, not wall time: on a shared machine the two differ widely.
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/10k-records")
}

// cpuTime is the process's user and system CPU so far (GC included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
