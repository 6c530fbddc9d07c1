// Package fleet holds what the registry benchmarks share: simulated hosts
// as meshd describes them, the registry's work counters summed over many
// clients, quantiles, and what the kernel says a process (ZooKeeper, or
// the benchmark itself) costs.
package fleet

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/registry"
)

// Pool is the overlay pool the simulated hosts lease from.
var Pool = netip.MustParsePrefix("100.64.0.0/10")

// Host is simulated host i's record, as a meshd in network "vpc" would
// publish it: its own key and private address, no public one. The overlay
// address is what a lease would give it; Register replaces it by its own.
func Host(i int) registry.Host {
	k, _ := wgtypes.GeneratePrivateKey()
	return registry.Host{Schema: registry.Schema, InstanceID: fmt.Sprintf("i-%06d", i),
		OverlayIP: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}), PublicKey: k.PublicKey(),
		Network: "vpc", PrivateIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), ListenPort: 51820, StartTime: time.Now().UTC()}
}

// Totals sums the registries' requests and payload bytes read (names
// listed and records read, as registry.Stats counts them).
func Totals(regs []*registry.Registry) (req, bytes int64) {
	for _, r := range regs {
		if r == nil {
			continue
		}
		req += r.Stats().Requests.Load()
		bytes += r.Stats().BytesIn.Load()
	}
	return
}

// Ms is d in milliseconds, to the microsecond.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Quantile is the nearest-rank q-quantile of d (0 < q <= 1): with 30
// samples p99 is the largest, which is what a reader of "p99" expects.
func Quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Each calls fn(0) .. fn(n-1), at most width at a time, and waits for all.
func Each(n, width int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}
