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

// runInject is the `inject MESH N` mode, run inside the internet namespace
// next to ZooKeeper: it writes N host records (with leases) the way meshd
// would, as persistent nodes, so a real meshd gets N peers.
func runInject(mesh string, n int) error {
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
			ip := netip.AddrFrom4([4]byte{100, 100, 200 + byte(i>>8), byte(i)})
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

// procStats reads a process's resident memory (KiB) and CPU time (ticks).
func procStats(pid int) (rssKiB int, cpuTicks int) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
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

// peersScale gives a real meshd n peers at once and reports its memory
// per 1 000 peers, the time until all n are in its device, and its CPU
// while idle with them.
func peersScale(tb *testbed.Testbed, m *testbed.Meshd, n int, logDir string) ([]Measurement, error) {
	pid := m.Proc.PID()
	rss0, _ := procStats(pid)
	self, _ := os.Executable()
	inet := &testbed.Host{Name: "inet", Netns: tb.Prefix + "-inet"}
	start := time.Now()
	if out, err := inet.Command(context.Background(), self, "inject", tb.Prefix, strconv.Itoa(n)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("inject %d records: %v %s", n, err, out)
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		st, err := m.Status()
		if err == nil && st.Peers >= n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("meshd has %d of %d peers after 120 s", st.Peers, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	converged := time.Since(start)
	time.Sleep(5 * time.Second) // let the initial handshake burst pass before the idle sample
	_, cpu0 := procStats(pid)
	idle := 10 * time.Second
	time.Sleep(idle)
	rss1, cpu1 := procStats(pid)
	name := fmt.Sprintf("meshd with %d peers", n)
	return []Measurement{
		{name, "rss_per_1000_peers", float64(rss1-rss0) / 1024 / float64(n) * 1000, "MiB"},
		{name, "all_in_device", converged.Seconds(), "s"},
		{name, "idle_cpu", float64(cpu1-cpu0) / 100 / idle.Seconds() * 100, "% of a core"},
	}, nil
}
