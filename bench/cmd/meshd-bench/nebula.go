package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// nebulaConfig is a Nebula host's config for the bench: the peer is found
// through the static host map (no lighthouse), its firewall admits
// everything (a peer comparison of the data path, not of policy), and the
// TUN has WireGuard's MTU so TCP segments are the same size.
const nebulaConfig = `pki:
  ca: %[1]s/ca.crt
  cert: %[1]s/%[2]s.crt
  key: %[1]s/%[2]s.key
static_host_map:
  "%[3]s": ["%[4]s:4242"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: false
tun:
  dev: %[5]s
  mtu: 1420
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
`

// nebulaRun measures Nebula (slackhq/nebula, built from its module at a
// tagged version into dir by make bench, outside the source tree) between
// the same two hosts, as a peer comparison.
func nebulaRun(tb *testbed.Testbed, a, b *testbed.Host, o options, logDir string) ([]Measurement, error) {
	dir := filepath.Join(logDir, "nebula")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certTool := filepath.Join(o.nebula, "nebula-cert")
	if _, err := os.Stat(dir + "/ca.crt"); err != nil { // once per run
		if out, err := exec.Command(certTool, "ca", "-name", "meshd-bench", "-out-crt", dir+"/ca.crt", "-out-key", dir+"/ca.key").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("nebula-cert ca: %v %s", err, out)
		}
	}
	hosts := []*testbed.Host{a, b}
	ips := []netip.Addr{netip.MustParseAddr("100.102.0.1"), netip.MustParseAddr("100.102.0.2")}
	var procs []*testbed.Process
	defer func() {
		for _, p := range procs {
			p.Stop(5 * time.Second)
		}
	}()
	for i, h := range hosts {
		if _, err := os.Stat(fmt.Sprintf("%s/%s.crt", dir, h.Name)); err != nil {
			if out, err := exec.Command(certTool, "sign", "-ca-crt", dir+"/ca.crt", "-ca-key", dir+"/ca.key", "-name", h.Name,
				"-ip", ips[i].String()+"/16", "-out-crt", fmt.Sprintf("%s/%s.crt", dir, h.Name), "-out-key", fmt.Sprintf("%s/%s.key", dir, h.Name)).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("nebula-cert sign %s: %v %s", h.Name, err, out)
			}
		}
		peer := hosts[1-i]
		cfg := fmt.Sprintf(nebulaConfig, dir, h.Name, ips[1-i], peer.PrivateIP, tb.Prefix+"nb"+h.Name)
		path := fmt.Sprintf("%s/%s.yaml", dir, h.Name)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		p, err := tb.StartProcess(h, fmt.Sprintf("%s/%s.log", dir, h.Name), filepath.Join(o.nebula, "nebula"), "-config", path)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	if err := waitPing(a, ips[1].String(), 20*time.Second); err != nil {
		return nil, fmt.Errorf("nebula: %w", err)
	}
	return dataPlane(tb, "nebula "+nebulaVersion, a, b, ips[1].String(), o.secs, logDir)
}

// nebulaVersion is the tag make bench builds (NEBULA_VERSION there).
var nebulaVersion = "v1.9.7"
