package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/bench/internal/nebula"
	"github.com/meshd/meshd/internal/testbed"
)

// nebulaRun measures Nebula (slackhq/nebula, built from its module at a
// tagged version into dir by make bench, outside the source tree) between
// the same two hosts, as a peer comparison.
func nebulaRun(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string) ([]Measurement, error) {
	procs, ip, err := nebula.Start(tb, [2]*testbed.Host{a, b}, o.nebula, filepath.Join(logDir, "nebula"), "meshd-bench")
	defer func() {
		for _, p := range procs {
			p.Stop(5 * time.Second)
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := a.WaitPing(ip, 20*time.Second); err != nil {
		return nil, fmt.Errorf("nebula: %w", err)
	}
	return dataPlane(tb, "nebula "+nebulaVersion, a, b, ip, o.secs, logDir)
}

// nebulaVersion is the tag make bench builds (NEBULA_VERSION there).
var nebulaVersion = "v1.9.7"
