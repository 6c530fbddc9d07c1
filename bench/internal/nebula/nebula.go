// Package nebula runs Nebula (slackhq/nebula, built from its module by
// make bench into a directory outside the source tree) between two
// testbed hosts, the peer comparison of the bench tools.
package nebula

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/meshd/meshd/internal/testbed"
)

// config is a Nebula host's config for the bench: the peer is found
// through the static host map (no lighthouse), its firewall admits
// everything (a peer comparison of the data path, not of policy), and the
// TUN has WireGuard's MTU so TCP segments are the same size.
const config = `pki:
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

// Start runs Nebula from binDir on both hosts, its CA, certificates,
// configs and logs in dir, and returns the processes started (stop them
// even on error) and the second host's overlay address. The CA is named
// caName; CA and certificates already in dir are used again, so a bench
// that starts Nebula once per round signs them once.
func Start(tb *testbed.Testbed, hosts [2]*testbed.Host, binDir, dir, caName string) ([]*testbed.Process, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	certTool := filepath.Join(binDir, "nebula-cert")
	if _, err := os.Stat(dir + "/ca.crt"); err != nil {
		if out, err := exec.Command(certTool, "ca", "-name", caName, "-out-crt", dir+"/ca.crt", "-out-key", dir+"/ca.key").CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("nebula-cert ca: %v %s", err, out)
		}
	}
	ips := []netip.Addr{netip.MustParseAddr("100.102.0.1"), netip.MustParseAddr("100.102.0.2")}
	var procs []*testbed.Process
	for i, h := range hosts {
		if _, err := os.Stat(fmt.Sprintf("%s/%s.crt", dir, h.Name)); err != nil {
			if out, err := exec.Command(certTool, "sign", "-ca-crt", dir+"/ca.crt", "-ca-key", dir+"/ca.key", "-name", h.Name,
				"-ip", ips[i].String()+"/16", "-out-crt", fmt.Sprintf("%s/%s.crt", dir, h.Name), "-out-key", fmt.Sprintf("%s/%s.key", dir, h.Name)).CombinedOutput(); err != nil {
				return procs, "", fmt.Errorf("nebula-cert sign %s: %v %s", h.Name, err, out)
			}
		}
		cfg := fmt.Sprintf(config, dir, h.Name, ips[1-i], hosts[1-i].PrivateIP, tb.Prefix+"nb"+h.Name)
		path := fmt.Sprintf("%s/%s.yaml", dir, h.Name)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return procs, "", err
		}
		p, err := tb.StartProcess(h, fmt.Sprintf("%s/%s.log", dir, h.Name), filepath.Join(binDir, "nebula"), "-config", path)
		if err != nil {
			return procs, "", err
		}
		procs = append(procs, p)
	}
	return procs, ips[1].String(), nil
}
