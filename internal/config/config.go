// Package config owns meshd's configuration file: its schema (CONTRACTS.md),
// its defaults, and validation that names every bad key with its value.
//
// Decoding walks the YAML tree itself rather than relying on yaml.v3's
// KnownFields, so that an operator sees "zookeeper.session_timeout: bad
// value "10" (line 4): want a Go duration such as 10s" instead of a type
// error that names no key; and it reports every problem at once, not only
// the first.
package config

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
	"net/netip"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	Mesh          string     `yaml:"mesh"`
	ZooKeeper     ZooKeeper  `yaml:"zookeeper"`
	Identity      Identity   `yaml:"identity"`
	Interface     Interface  `yaml:"interface"`
	Overlay       Overlay    `yaml:"overlay"`
	Links         [][]string `yaml:"links"`
	Firewall      Firewall   `yaml:"firewall"`
	Tuning        Tuning     `yaml:"tuning"`
	DNS           DNS        `yaml:"dns"`
	Trust         Trust      `yaml:"trust"`
	Registry      Registry   `yaml:"registry"`
	Peers         Peers      `yaml:"peers"`
	StateDir      string     `yaml:"state_dir"`
	AdminSocket   string     `yaml:"admin_socket"`
	MetricsListen string     `yaml:"metrics_listen"`
	LogLevel      string     `yaml:"log_level"`
}

// ZooKeeper says where the registry lives and how to reach it.
type ZooKeeper struct {
	Servers          []string      `yaml:"servers"`
	SessionTimeout   time.Duration `yaml:"session_timeout"`
	DigestSecretFile string        `yaml:"digest_secret_file"`
	TLS              TLS           `yaml:"tls"`
}

// TLS configures the secure client port. An empty CAFile means plain TCP.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether the connection to ZooKeeper is to use TLS.
func (t TLS) Enabled() bool { return t.CAFile != "" }

// Identity says who this host is. With source ec2, empty fields are filled
// from instance metadata and given fields override it.
type Identity struct {
	Source     string     `yaml:"source"`
	InstanceID string     `yaml:"instance_id"`
	Network    string     `yaml:"network"`
	PrivateIP  netip.Addr `yaml:"private_ip"`
	PublicIP   netip.Addr `yaml:"public_ip"`
	// Optional IPv6 underlay addresses: members' firewalls admit this
	// host's WireGuard datagrams and, by the policy, its traffic from them.
	// WireGuard endpoints stay on the IPv4 addresses.
	PrivateIP6 netip.Addr `yaml:"private_ip6"`
	PublicIP6  netip.Addr `yaml:"public_ip6"`
	Groups     []string   `yaml:"groups"`
}

// Interface is the WireGuard interface meshd creates.
type Interface struct {
	Name       string `yaml:"name"`
	ListenPort int    `yaml:"listen_port"`
	MTU        int    `yaml:"mtu"`
	// Bind is the UDP socket layer under WireGuard: "meshd" (its own,
	// batched without per-packet allocation) or "wireguard-go" (upstream's
	// StdNetBind), the way back and the benchmarks' reference.
	Bind string `yaml:"bind"`
}

// Overlay is the address pool overlay addresses are leased from.
type Overlay struct {
	CIDR netip.Prefix `yaml:"cidr"`
}

// Firewall selects how the allowlists are enforced.
type Firewall struct {
	Mode              string         `yaml:"mode"`
	BreakglassSSHFrom []netip.Prefix `yaml:"breakglass_ssh_from"`
	Underlay          Underlay       `yaml:"underlay"`
}

// Underlay is what new inbound connections on every interface but the
// overlay may come in: in enforce mode everything else is dropped.
type Underlay struct {
	// Members: "policy" judges traffic from members' underlay addresses by
	// the group policy; "none" lets members in through the overlay only.
	Members string          `yaml:"members"`
	Allow   []UnderlayAllow `yaml:"allow"`
}

// UnderlayAllow opens ports to sources whatever the policy says, e.g. a
// web tier's tcp/443 to a load balancer.
type UnderlayAllow struct {
	Ports []string       `yaml:"ports"` // tcp/443, udp/53, tcp/8000-8100, icmp
	From  []netip.Prefix `yaml:"from"`  // IPv4 and IPv6 CIDRs, e.g. 0.0.0.0/0 and ::/0
}

// Underlay member modes.
const (
	MembersPolicy = "policy"
	MembersNone   = "none"
)

// Tuning holds the timers of the reconciler. Operators rarely change
// them; tests shorten them.
type Tuning struct {
	// HandshakeTimeout is how long a path may try to handshake before the
	// next candidate endpoint is tried.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// PathRetry is how long a peer that fell back waits before it tries the
	// better path again; it doubles after each failed trial, up to 5m.
	PathRetry time.Duration `yaml:"path_retry"`
	// HoldDown is how long a peer whose record vanished stays in the device.
	HoldDown time.Duration `yaml:"hold_down"`
	// MaxRemovals is how many removals the mass-removal breaker lets
	// through within BreakerWindow before it holds the rest; 0 = 10% of
	// the fleet, at least 5.
	MaxRemovals   int           `yaml:"max_removals"`
	BreakerWindow time.Duration `yaml:"breaker_window"`
	// KeyRotation rotates the WireGuard key this often; 0 = only on
	// command (meshctl key rotate).
	KeyRotation time.Duration `yaml:"key_rotation"`
	// Quarantine is how long a decommissioned address stays unused.
	Quarantine time.Duration `yaml:"quarantine"`
}

// Trust configures host certificates and signed records. Without CAFile
// ZooKeeper is trusted as before (status says trust: none).
type Trust struct {
	// Mode is permissive (sign, verify signed records, accept unsigned
	// ones and list them) or strict (refuse unsigned records).
	Mode     string `yaml:"mode"`
	CAFile   string `yaml:"ca_file"`   // fleet CA (PEM)
	CertFile string `yaml:"cert_file"` // this host's certificate (PEM, leaf first)
	KeyFile  string `yaml:"key_file"`  // identity key; "" = <state_dir>/identity.key
}

// Enabled reports whether records are signed and verified.
func (t Trust) Enabled() bool { return t.CAFile != "" }

// Trust modes.
const (
	TrustPermissive = "permissive"
	TrustStrict     = "strict"
)

// Registry bounds what another host's record may carry; a record beyond
// them is refused, counted and named in status.
type Registry struct {
	// MaxGroups is how many groups a host record may list.
	MaxGroups int `yaml:"max_groups"`
}

// Peers says which known peers live in the WireGuard device.
type Peers struct {
	// Lazy keeps only peers with recent traffic in the device: the rest
	// are known (firewall sets, meshctl peers says idle) and come in with
	// the first packet either way. Per-host cost then follows the peers a
	// host talks to, not the fleet. On by default (issue 17): the file
	// decodes over Default, so an absent key keeps it on and an explicit
	// "lazy: false" puts every known peer in the device. It needs meshd's
	// UDP bind (its initiation hook): with interface.bind: wireguard-go
	// an absent key means off, and "lazy: true" is refused.
	Lazy bool `yaml:"lazy"`
	// IdleAfter is how long a peer's traffic must have stopped before it
	// leaves the device. It must exceed WireGuard's reject-after time
	// (3m), so neither side keeps a session the other has dropped.
	IdleAfter time.Duration `yaml:"idle_after"`
}

// Firewall modes.
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow"
	ModeOff     = "off"
)

// Identity sources.
const (
	SourceStatic = "static"
	SourceEC2    = "ec2"
)

// Default returns the configuration that applies to every key the file
// leaves out.
func Default() Config {
	return Config{
		ZooKeeper: ZooKeeper{SessionTimeout: 10 * time.Second},
		Identity:  Identity{Source: SourceStatic},
		Interface: Interface{Name: "mesh0", ListenPort: 51820, Bind: "meshd"},
		Overlay:   Overlay{CIDR: netip.MustParsePrefix("100.100.0.0/16")},
		Firewall:  Firewall{Mode: ModeEnforce, Underlay: Underlay{Members: MembersPolicy}},
		Tuning: Tuning{
			HandshakeTimeout: 5 * time.Second,
			PathRetry:        30 * time.Second,
			HoldDown:         30 * time.Second,
			BreakerWindow:    time.Minute,
			Quarantine:       24 * time.Hour,
		},
		DNS:           DNS{Enabled: true},
		Trust:         Trust{Mode: TrustPermissive},
		Registry:      Registry{MaxGroups: 32},
		Peers:         Peers{Lazy: true, IdleAfter: 5 * time.Minute},
		StateDir:      "/var/lib/meshd",
		AdminSocket:   "/run/meshd/meshd.sock",
		MetricsListen: "127.0.0.1:9474",
		LogLevel:      "info",
	}
}

// Marshal renders the effective configuration, defaults included, as YAML.
func (c Config) Marshal() []byte {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		// Every field type is marshalable; failing here is a programming error.
		panic(fmt.Sprintf("marshal config: %v", err))
	}
	return buf.Bytes()
}

// peersDefaults fills what depends on other keys: lazy peers, on by
// default, need meshd's UDP bind, so a file that picks wireguard-go's bind
// and does not set peers.lazy gets them off (a host switched back to
// upstream's bind still starts); one that asks for both is refused by
// Validate. root is the file's top-level mapping.
func (c *Config) peersDefaults(root *yaml.Node) {
	if c.Interface.Bind == "wireguard-go" && lookup(root, "peers", "lazy") == nil {
		c.Peers.Lazy = false
	}
}

// lookup finds the value node at a dotted path of mapping keys, or nil.
func lookup(n *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		n = next
	}
	return n
}
