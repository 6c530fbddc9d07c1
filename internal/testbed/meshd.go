package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/admin"
)

// MeshdOptions tune one meshd on the testbed.
type MeshdOptions struct {
	Bin        string   // directory with meshd; $MESHD_BIN or ./bin if empty
	Groups     []string // identity.groups
	Links      [][]string
	Extra      string // appended to the config (YAML), e.g. a tuning: block
	InstanceID string // default: the host name
	LogLevel   string
	Firewall   string // enforce (default), shadow or off
	// Underlay is the firewall.underlay block as one YAML flow mapping,
	// e.g. {allow: [{ports: [tcp/443], from: ["0.0.0.0/0"]}]}; "" = defaults.
	Underlay string
	// Breakglass is firewall.breakglass_ssh_from, e.g. ["198.18.2.0/24"].
	Breakglass []string
	Metrics    string // metrics_listen inside the host, "" = off
	Bind       string // interface.bind: meshd (default) or wireguard-go
	// Trust is the trust.mode ("" = no trust block): the testbed's CA
	// certifies the host, with CertGroups (default Groups) as its groups.
	Trust      string
	CertGroups []string
	// ZooKeeper overrides the servers the host is given (default: all).
	ZooKeeper []string
	// SessionTimeout is zookeeper.session_timeout; 6s if zero.
	SessionTimeout time.Duration
	// Env is added to meshd's environment, e.g. MESHD_DEBUG_IDLE_AFTER=5s.
	Env []string
}

// Meshd is a meshd process running on a testbed host.
type Meshd struct {
	Host   *Host
	Dir    string // state_dir
	Config string
	Socket string
	Log    string
	Iface  string
	Proc   *Process
	opts   MeshdOptions
	tb     *Testbed
}

// BinDir finds the built binaries.
func BinDir(dir string) string {
	if dir != "" {
		return dir
	}
	if d := os.Getenv("MESHD_BIN"); d != "" {
		return d
	}
	return "bin"
}

// StartMeshd writes h's config and starts meshd there.
func (tb *Testbed) StartMeshd(h *Host, o MeshdOptions) (*Meshd, error) {
	dir := filepath.Join(tb.Dir, h.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &Meshd{Host: h, Dir: filepath.Join(dir, "state"), Config: filepath.Join(dir, "meshd.yaml"),
		Socket: filepath.Join(dir, "meshd.sock"), Log: filepath.Join(dir, "meshd.log"),
		Iface: fmt.Sprintf("%s%s", tb.Prefix, h.Name), opts: o, tb: tb}
	if err := m.WriteConfig(); err != nil {
		return nil, err
	}
	return m, m.Start()
}

// WriteConfig writes the config for the host's current addresses.
func (m *Meshd) WriteConfig() error {
	o, h := m.opts, m.Host
	id := m.InstanceID()
	trustBlock, err := m.trustConfig()
	if err != nil {
		return err
	}
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	session := o.SessionTimeout
	if session == 0 {
		session = 6 * time.Second
	}
	var links []string
	for _, l := range o.Links {
		links = append(links, fmt.Sprintf("[%s, %s]", l[0], l[1]))
	}
	cfg := fmt.Sprintf(`mesh: %s
zookeeper:
  servers: [%s]
  session_timeout: %s
identity:
  source: static
  instance_id: %s
  network: %s
  private_ip: %s
  public_ip: %s
  private_ip6: "%s"
  groups: [%s]
interface:
  name: %s
  listen_port: 51820
  bind: %s
overlay:
  cidr: 100.100.0.0/16
links: [%s]
firewall:
  mode: %s
  underlay: %s
  breakglass_ssh_from: [%s]
state_dir: %s
admin_socket: %s
metrics_listen: "%s"
log_level: %s
%s%s`, m.tb.Prefix, quoted(m.zkServers()), session, id, h.Network, h.PrivateIP, h.PublicIP, addrOrEmpty(h.PrivateIP6), strings.Join(o.Groups, ", "),
		m.Iface, bindName(o.Bind), strings.Join(links, ", "), fwMode(o.Firewall), orEmptyMap(o.Underlay), strings.Join(o.Breakglass, ", "), m.Dir, m.Socket, o.Metrics, level, trustBlock, o.Extra)
	return os.WriteFile(m.Config, []byte(cfg), 0o644)
}

// Start runs meshd and waits until its admin socket answers.
func (m *Meshd) Start() error {
	p, err := m.tb.startProcess(m.Host, m.opts.Env, m.Log, filepath.Join(BinDir(m.opts.Bin), "meshd"), "run", "--config", m.Config)
	if err != nil {
		return err
	}
	m.Proc = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := m.Status(); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("meshd on %s exited at start: %v\n%s", m.Host.Name, p.Err(), m.LogTail(20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meshd on %s: admin socket not answering after 20s\n%s", m.Host.Name, m.LogTail(20))
		}
	}
}

// Peers asks meshd for its peers, as `meshctl peers -o json` does.
func (m *Meshd) Peers() ([]admin.Peer, error) {
	var p []admin.Peer
	err := admin.Dial(m.Socket).Get(context.Background(), "/v1/peers", &p)
	return p, err
}

// Status asks meshd for its status.
func (m *Meshd) Status() (admin.Status, error) {
	var s admin.Status
	err := admin.Dial(m.Socket).Get(context.Background(), "/v1/status", &s)
	return s, err
}

// LogTail returns the last n lines of meshd's log.
func (m *Meshd) LogTail(n int) string {
	data, _ := os.ReadFile(m.Log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// zkServers is the ZooKeeper list for this host: the testbed's, or the
// ones MeshdOptions.ZooKeeper names.
func (m *Meshd) zkServers() []string {
	if len(m.opts.ZooKeeper) > 0 {
		return m.opts.ZooKeeper
	}
	return m.tb.ZooKeeperAddrs()
}

func quoted(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}

func orEmptyMap(s string) string {
	if s == "" {
		return "{}"
	}
	return s
}

func fwMode(m string) string {
	if m == "" {
		return "enforce"
	}
	return m
}

// bindName is interface.bind for the config: meshd unless asked otherwise.
func bindName(b string) string {
	if b == "" {
		return "meshd"
	}
	return b
}

// addrOrEmpty writes an optional address: "" when the host has none.
func addrOrEmpty(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
