// Command snapstart measures what a meshd start from its snapshot costs
// with N hosts registered, against a real ZooKeeper: the time from
// registry.Open until every bucket is listed and the view is in step, the
// requests sent, and ZooKeeper's CPU for it. Two snapshots of the same
// view take turns over the rounds: one that names each host's record node
// (a start reads only the records that changed since), and the same
// without the names, as a meshd before 87e9a5d wrote it (every record is
// read again). Between the snapshot and the starts, -changed hosts change
// their endpoint: the records a start has to read either way.
//
//	go run ./bench/cmd/snapstart -n 10000 -changed 100 -rounds 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
	"github.com/meshd/meshd/registry"
)

// Start is one start from a snapshot.
type Start struct {
	Names    bool    `json:"names"`     // the snapshot named the record nodes
	OpenMs   float64 `json:"open_ms"`   // registry.Open: the snapshot read and checked
	SyncMs   float64 `json:"sync_ms"`   // Open until every bucket was listed
	Requests int64   `json:"requests"`  // sent until then
	ZKCPUMs  float64 `json:"zk_cpu_ms"` // ZooKeeper's CPU over the start
}

func main() {
	n := flag.Int("n", 10000, "registered hosts")
	changed := flag.Int("changed", 100, "hosts whose endpoint changes after the snapshot is taken")
	rounds := flag.Int("rounds", 3, "starts of each kind, alternating")
	out := flag.String("json", "", "write the starts as JSON here")
	verbose := flag.Bool("v", false, "log the registries' debug messages")
	flag.Parse()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	// An interrupt ends the run through its deferred clean-up: ZooKeeper
	// stopped, the state directories removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *n, *changed, *rounds, *out)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "snapstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, changed, rounds int, out string) error {
	if changed > n {
		return fmt.Errorf("-changed %d is more than -n %d", changed, n)
	}
	zs, err := zkserver.Start(ctx, zkserver.Options{})
	if err != nil {
		return err
	}
	defer zs.Stop()
	addrs := []string{zs.Addr()}
	w, _, err := zk.Connect(addrs, 30*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer w.Close()
	const mesh = "snap"
	root := "/meshd/" + mesh
	hosts, nodes, err := fleet.Populate(w, root, n)
	if err != nil {
		return err
	}

	// The snapshot: a registry that saw all n, closed.
	dir, err := os.MkdirTemp("", "snapstart")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts := registry.Options{Servers: addrs, Mesh: mesh, Pool: fleet.Pool, SessionTimeout: 30 * time.Second}
	o := opts
	o.StateDir = filepath.Join(dir, "taken")
	r, err := registry.Open(ctx, o)
	if err != nil {
		return err
	}
	stop := drain(r)
	if err := waitSynced(ctx, r, n, nil, 5*time.Minute); err != nil {
		r.Close() // before its state directory goes
		stop()
		return fmt.Errorf("first sync: %w", err)
	}
	r.Close()
	stop()
	named, err := os.ReadFile(filepath.Join(o.StateDir, registry.SnapshotFile))
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(named, &fields); err != nil {
		return err
	}
	if _, ok := fields["buckets"]; !ok {
		return fmt.Errorf("the snapshot names no record nodes: is this registry older than 87e9a5d?")
	}
	delete(fields, "buckets")
	unnamed, _ := json.Marshal(fields)

	// After the snapshot: endpoint changes, each a new record node.
	moved := map[string]netip.Addr{}
	for i := range changed {
		k := (i * 7919) % n
		h := hosts[k]
		h.PublicIP = netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		if _, err := fleet.PublishRecord(w, root, h); err != nil {
			return err
		}
		if err := w.Delete(nodes[k], -1); err != nil {
			return err
		}
		moved[h.InstanceID] = h.PublicIP
	}

	var starts []Start
	fmt.Printf("%d hosts registered, %d changed since the snapshot (%d KiB with names, %d without)\n", n, changed, len(named)>>10, len(unnamed)>>10)
	fmt.Printf("%-12s %5s %9s %9s %9s %10s\n", "snapshot", "round", "open ms", "sync ms", "requests", "ZK CPU ms")
	for round := range rounds {
		for k := range 2 {
			names := (round+k)%2 == 0 // alternate which goes first
			snap := unnamed
			if names {
				snap = named
			}
			s, err := start(ctx, opts, filepath.Join(dir, fmt.Sprintf("start-%d-%d", round, k)), snap, zs, n, moved)
			if err != nil {
				return err
			}
			s.Names = names
			starts = append(starts, s)
			kind := "no names"
			if names {
				kind = "node names"
			}
			fmt.Printf("%-12s %5d %9.0f %9.0f %9d %10.0f\n", kind, round+1, s.OpenMs, s.SyncMs, s.Requests, s.ZKCPUMs)
		}
	}
	if out != "" {
		data, _ := json.MarshalIndent(starts, "", "  ")
		return os.WriteFile(out, data, 0o644)
	}
	return nil
}

// start opens a registry on snapshot snap in its own state directory and
// times it until it has listed every bucket and its view holds the n
// hosts, moved ones at their new endpoints.
func start(ctx context.Context, opts registry.Options, dir string, snap []byte, zs *zkserver.Server, n int, moved map[string]netip.Addr) (Start, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Start{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, registry.SnapshotFile), snap, 0o600); err != nil {
		return Start{}, err
	}
	opts.StateDir = dir
	runtime.GC() // the last start's garbage is not this one's
	zk0, _ := fleet.ReadUsage(zs.PID())
	began := time.Now()
	r, err := registry.Open(ctx, opts)
	if err != nil {
		return Start{}, err
	}
	defer r.Close()
	defer drain(r)()
	opened := time.Since(began)
	if err := waitSynced(ctx, r, n, moved, time.Minute); err != nil {
		return Start{}, err
	}
	synced := time.Since(began)
	req := r.Stats().Requests.Load()
	zk1, _ := fleet.ReadUsage(zs.PID())
	return Start{OpenMs: fleet.Ms(opened), SyncMs: fleet.Ms(synced), Requests: req, ZKCPUMs: fleet.Ms(zk1.CPU - zk0.CPU)}, nil
}

// drain takes r's events, as meshd's reconciler would (a registry whose
// events nobody takes stops when its channel is full), until stopped.
func drain(r *registry.Registry) (stop func()) {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-r.Events():
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// waitSynced waits until r has listed every bucket, then checks its view:
// n hosts, each moved one at its new endpoint.
func waitSynced(ctx context.Context, r *registry.Registry, n int, moved map[string]netip.Addr, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for !r.Synced() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			st, last := r.State()
			return fmt.Errorf("not every bucket listed after %s: the view holds %d hosts, %d requests sent, state %s, last listing %s, refused %v",
				limit, len(r.Hosts()), r.Stats().Requests.Load(), st, last.Format(time.RFC3339Nano), r.Stats().BadRecordCounts())
		}
		time.Sleep(time.Millisecond)
	}
	hs := r.Hosts()
	if len(hs) != n {
		return fmt.Errorf("view holds %d hosts once synced, want %d", len(hs), n)
	}
	for _, h := range hs {
		if ip, ok := moved[h.InstanceID]; ok && h.PublicIP != ip {
			return fmt.Errorf("%s at %s once synced, want its new endpoint %s", h.InstanceID, h.PublicIP, ip)
		}
	}
	return nil
}
