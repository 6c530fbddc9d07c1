// Command zkwatch measures what one host change (endpoint change, leave,
// join) costs every watching meshd
// in ZooKeeper requests and bytes, with N hosts registered, against a real
// ZooKeeper: the figure that decides the registry's watch design.
//
//	go run ./bench/zkwatch -n 100,5000 -watchers 5 -changes 50
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
	"github.com/meshd/meshd/registry"
)

// Result is one row of the measurement.
type Result struct {
	Hosts             int     `json:"hosts"`
	Watchers          int     `json:"watchers"`
	Changes           int     `json:"changes"`
	RequestsPerChange float64 `json:"requests_per_change_per_host"`
	BytesPerChange    float64 `json:"bytes_per_change_per_host"`
	P50ms             float64 `json:"p50_ms"`
	P99ms             float64 `json:"p99_ms"`
	WatchesPerHost    int     `json:"watches_per_host"`
}

func main() {
	ns := flag.String("n", "100,5000", "registered hosts, comma separated")
	watchers := flag.Int("watchers", 5, "watching registries")
	changes := flag.Int("changes", 50, "record updates to measure")
	out := flag.String("json", "", "write results as JSON here")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	zs, err := zkserver.Start(context.Background(), zkserver.Options{Fsync: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer zs.Stop()
	var results []Result
	for i, f := range strings.Split(*ns, ",") {
		n, _ := strconv.Atoi(f)
		r, err := measure(zs.Addr(), fmt.Sprintf("bench%d", i), n, *watchers, *changes)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		results = append(results, r)
		fmt.Printf("hosts=%d watchers=%d changes=%d: %.1f requests and %.0f bytes per change per host; convergence p50 %.1f ms, p99 %.1f ms; %d watches per host\n",
			r.Hosts, r.Watchers, r.Changes, r.RequestsPerChange, r.BytesPerChange, r.P50ms, r.P99ms, r.WatchesPerHost)
	}
	if *out != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		os.WriteFile(*out, data, 0o644)
	}
}

func measure(addr, mesh string, n, nw, changes int) (Result, error) {
	w, _, err := zk.Connect([]string{addr}, 30*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return Result{}, err
	}
	defer w.Close()
	root := "/meshd/" + mesh
	hosts, nodes, err := fleet.Populate(w, root, n)
	if err != nil {
		return Result{}, err
	}

	var regs []*registry.Registry
	for i := 0; i < nw; i++ {
		r, err := registry.Open(context.Background(), registry.Options{Servers: []string{addr}, Mesh: mesh, Pool: fleet.Pool})
		if err != nil {
			return Result{}, err
		}
		defer r.Close()
		regs = append(regs, r)
	}
	for _, r := range regs {
		for seen := 0; seen < n; seen++ {
			select {
			case <-r.Events():
			case <-time.After(60 * time.Second):
				return Result{}, fmt.Errorf("watcher saw %d of %d hosts", seen, n)
			}
		}
	}
	time.Sleep(500 * time.Millisecond) // let the initial listings settle before counting
	req0, bytes0 := fleet.Totals(regs)
	var lat []time.Duration
	// Changes cycle through the three a fleet makes: an endpoint change (a
	// new record), a leave (the record goes) and a join (it comes back).
	for c := 0; c < changes; c++ {
		i := ((c / 3) * 7919) % n
		var want registry.EventKind
		start := time.Now()
		switch c % 3 {
		case 0:
			hosts[i].PublicIP = netip.AddrFrom4([4]byte{198, 19, byte(c >> 8), byte(c)})
			created, err := fleet.PublishRecord(w, root, hosts[i])
			if err != nil {
				return Result{}, err
			}
			w.Delete(nodes[i], -1)
			nodes[i], want = created, registry.Updated
		case 1:
			if err := w.Delete(nodes[i], -1); err != nil {
				return Result{}, err
			}
			want = registry.Removed
		case 2:
			created, err := fleet.PublishRecord(w, root, hosts[i])
			if err != nil {
				return Result{}, err
			}
			nodes[i], want = created, registry.Added
		}
		var slowest time.Duration
		for _, r := range regs {
			select {
			case ev := <-r.Events():
				if ev.Kind != want || ev.Host.InstanceID != hosts[i].InstanceID {
					return Result{}, fmt.Errorf("unexpected event %v %s, want %v", ev.Kind, ev.Host.InstanceID, want)
				}
			case <-time.After(10 * time.Second):
				return Result{}, fmt.Errorf("change %d not seen", c)
			}
			slowest = max(slowest, time.Since(start))
		}
		lat = append(lat, slowest)
	}
	req1, bytes1 := fleet.Totals(regs)
	per := float64(changes * nw)
	return Result{Hosts: n, Watchers: nw, Changes: changes,
		RequestsPerChange: float64(req1-req0) / per, BytesPerChange: float64(bytes1-bytes0) / per,
		P50ms: fleet.Ms(fleet.Quantile(lat, 0.5)), P99ms: fleet.Ms(fleet.Quantile(lat, 0.99)), WatchesPerHost: registry.Buckets + 2}, nil
}
