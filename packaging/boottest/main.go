// Command boottest proves the .deb on a booted systemd, as `make
// package-boot-test` runs it: a Debian 12 rootfs (packaging/boottest/rootfs.sh)
// boots under systemd-nspawn inside a testbed host's network namespace, so it
// reaches the testbed's ZooKeeper and one testbed peer running meshd, and
// nothing else; systemd-resolved runs in it, as on a stock host. Inside, the package is installed with apt-get and meshd runs
// under the unit exactly as shipped; each step checks what an operator would
// see, and the first that does not hold fails the run (exit 1).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

type options struct {
	rootfs, deb, upgrade, bin, conntrack string
	maxExposure                          float64
	maxPause                             time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.rootfs, "rootfs", "", "the Debian 12 tree rootfs.sh built (make passes /var/cache/meshd-test/rootfs-<rootfs.sh --key>)")
	flag.StringVar(&o.deb, "deb", "", "the meshd .deb under test")
	flag.StringVar(&o.upgrade, "upgrade", "", "a newer build of the same package to upgrade to")
	flag.StringVar(&o.bin, "bin", "bin", "directory with the static meshd the testbed peer runs")
	flag.StringVar(&o.conntrack, "conntrack-check", "packaging/check-conntrack.sh", "the conntrack check package-check runs")
	flag.Float64Var(&o.maxExposure, "max-exposure", 2.2, "highest `systemd-analyze security meshd` exposure accepted (2.2: the unit before this test existed)")
	flag.DurationVar(&o.maxPause, "max-restart-pause", 2*time.Second, "longest flow pause a `systemctl restart meshd` may cause, seen by the receiver")
	flag.Parse()
	// No default tree: one from another recipe (no systemd-resolved, say)
	// would fail a step for a reason that is not meshd's.
	if o.deb == "" || o.upgrade == "" || o.rootfs == "" {
		fmt.Fprintln(os.Stderr, "usage: boottest -rootfs DIR -deb meshd_V.deb -upgrade meshd_V2.deb [-bin DIR]")
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	start := time.Now()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintf(os.Stderr, "package-boot-test: FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("package-boot-test: OK in %s\n", time.Since(start).Round(time.Second))
}

func run(ctx context.Context, o options) (err error) {
	for _, f := range []string{o.deb, o.upgrade, filepath.Join(o.rootfs, ".complete")} {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("/var/tmp", "meshd-boottest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tb, err := testbed.New(ctx, testbed.Options{Dir: filepath.Join(dir, "testbed"), ZooKeeper: true})
	if err != nil {
		return err
	}
	defer tb.Close()
	peerHost, err := tb.AddHost("vpc")
	if err != nil {
		return err
	}
	peer, err := tb.StartMeshd(peerHost, testbed.MeshdOptions{Bin: o.bin, LogLevel: "info"})
	if err != nil {
		return err
	}
	host, err := tb.AddHost("vpc")
	if err != nil {
		return err
	}
	step("boot Debian 12 under systemd-nspawn in testbed namespace " + host.Netns)
	c, err := boot(ctx, o.rootfs, filepath.Join(dir, "container"), "/run/netns/"+host.Netns)
	defer func() {
		if c != nil {
			if serr := c.shutdown(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	if err != nil {
		return err
	}
	s := &session{o: o, tb: tb, c: c, host: host, peer: peer}
	return s.all(ctx)
}

func step(what string) { fmt.Printf("== %s\n", what) }
