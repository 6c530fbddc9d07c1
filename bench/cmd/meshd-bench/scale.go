package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/testbed"
	"github.com/meshd/meshd/registry"
)

// runInject is the `inject MESH N AVOID` mode, run inside the internet
// namespace next to ZooKeeper: it writes N host records (with leases) the
// way meshd would, as persistent nodes, so a real meshd gets N peers. AVOID
// is that meshd's own overlay address, which no injected host may claim.
func runInject(mesh string, n int, avoid netip.Addr) error {
	c, _, err := zk.Connect([]string{testbed.ZooKeeperIP + ":2181"}, 30*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer c.Close()
	root := "/meshd/" + mesh
	acl := zk.WorldACL(zk.PermAll)
	for _, p := range []string{root + "/leases", root + "/owners"} {
		c.Create(p, nil, 0, acl)
	}
	for b := 0; b < registry.Buckets; b++ {
		c.Create(fmt.Sprintf("%s/hosts/%02x", root, b), nil, 0, acl)
	}
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			k, _ := wgtypes.GeneratePrivateKey()
			id := fmt.Sprintf("sim-%05d", i)
			ip := injectedAddr(i, avoid)
			h := registry.Host{Schema: registry.Schema, InstanceID: id, OverlayIP: ip, PublicKey: k.PublicKey(), Network: "dc",
				PrivateIP: netip.AddrFrom4([4]byte{198, 18, 3, 100}), PublicIP: netip.AddrFrom4([4]byte{198, 19, 3, 100}),
				ListenPort: 51820, StartTime: time.Now().UTC()}
			data, _ := json.Marshal(h)
			c.Create(root+"/leases/"+ip.String(), []byte(id), 0, acl)
			c.Create(root+"/owners/"+id, []byte(ip.String()), 0, acl)
			_, err := c.Create(fmt.Sprintf("%s/hosts/%02x/%s#0000000001", root, registry.BucketOf(id), id), data, 0, acl)
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// procStatus is the KiB figures of /proc/PID/status, by name.
func procStatus(pid int) map[string]int {
	out := map[string]int{}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(v, " kB") {
			out[k], _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return out
}

// cpuOf is a process's CPU time so far, in ticks.
func cpuOf(pid int) (cpuTicks int) {
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
		f := strings.Fields(string(stat)[i+2:])
		if len(f) > 13 {
			u, _ := strconv.Atoi(f[11])
			s, _ := strconv.Atoi(f[12])
			cpuTicks = u + s
		}
	}
	return
}

// usage is one sample of a running meshd.
type usage struct {
	rssKiB, heapBytes int
	// The two parts of rssKiB: anonymous memory (the Go heap, stacks,
	// the runtime's own) and pages of the binary's file.
	anonKiB, fileKiB int
	cpu              float64 // % of one core over the sample window
}

// sampleUsage measures m's CPU over window, then its resident size and
// its live heap.
func sampleUsage(m *testbed.Meshd, window time.Duration) (usage, error) {
	c0 := cpuOf(m.Proc.PID())
	time.Sleep(window)
	st, c1 := procStatus(m.Proc.PID()), cpuOf(m.Proc.PID())
	heap, err := heapInuse(m)
	return usage{rssKiB: st["VmRSS"], anonKiB: st["RssAnon"], fileKiB: st["RssFile"], heapBytes: heap,
		cpu: float64(c1-c0) / 100 / window.Seconds() * 100}, err
}

// peersScale gives a real meshd n peers at once and reports the time until
// all n are in its device, and its memory per 1 000 peers and CPU twice:
// just after the join, and at rest two minutes later. The simulated peers
// never answer (their addresses exist nowhere), the worst case: WireGuard
// retries each for 90 s, then meshd rests them (mesh/pathstate.go).
func peersScale(tb *testbed.Testbed, m *testbed.Meshd, o options, logDir string) ([]Measurement, error) {
	n := o.peers
	const window = 10 * time.Second
	base, err := sampleUsage(m, time.Second)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := injectHosts(tb, m, n); err != nil {
		return nil, err
	}
	converged := time.Since(start)
	time.Sleep(2 * time.Second) // past the burst of first handshakes
	join, err := sampleUsage(m, window)
	if err != nil {
		return nil, err
	}
	if wait := 120*time.Second - time.Since(start); wait > 0 && !o.quick {
		time.Sleep(wait)
	}
	rest, err := sampleUsage(m, window)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("meshd with %d peers", n)
	if o.profile != "" {
		if err := saveProfiles(m, o.profile, fmt.Sprintf("meshd-%d-peers", n), 10); err != nil {
			return nil, err
		}
	}
	perK := func(now, before int, unit float64) float64 { return float64(now-before) / unit / float64(n) * 1000 }
	return []Measurement{
		{Config: name, Metric: "all_in_device", Value: converged.Seconds(), Unit: "s"},
		{Config: name, Metric: "join_rss_per_1000_peers", Value: perK(join.rssKiB, base.rssKiB, 1024), Unit: "MiB"},
		{Config: name, Metric: "join_heap_per_1000_peers", Value: perK(join.heapBytes, base.heapBytes, 1<<20), Unit: "MiB"},
		{Config: name, Metric: "join_cpu", Value: join.cpu, Unit: "% of a core"},
		{Config: name, Metric: "rss_per_1000_peers", Value: perK(rest.rssKiB, base.rssKiB, 1024), Unit: "MiB"},
		{Config: name, Metric: "heap_per_1000_peers", Value: perK(rest.heapBytes, base.heapBytes, 1<<20), Unit: "MiB"},
		{Config: name, Metric: "idle_cpu", Value: rest.cpu, Unit: "% of a core"},
	}, nil
}

// injectHosts writes n host records into m's mesh, stepping over m's own
// overlay address, and waits until m knows them all; it returns that
// address.
func injectHosts(tb *testbed.Testbed, m *testbed.Meshd, n int) (netip.Addr, error) {
	st, err := m.Status()
	if err != nil {
		return netip.Addr{}, err
	}
	own, err := netip.ParseAddr(st.OverlayIP)
	if err != nil {
		return own, fmt.Errorf("meshd's overlay address %q: %w", st.OverlayIP, err)
	}
	self, _ := os.Executable()
	inet := &testbed.Host{Name: "inet", Netns: tb.Prefix + "-inet"}
	if out, err := inet.Command(context.Background(), self, "inject", tb.Prefix, strconv.Itoa(n), own.String()).CombinedOutput(); err != nil {
		return own, fmt.Errorf("inject %d records: %v %s", n, err, out)
	}
	return own, waitFor(120*time.Second, func() (bool, string) {
		st, err := m.Status()
		return err == nil && st.Peers >= n, fmt.Sprintf("meshd knows %d of %d hosts", st.Peers, n)
	})
}
