package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValidFile(t *testing.T) {
	data, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data)
	if err != nil {
		t.Fatalf("valid file rejected:\n%v", err)
	}
	if cfg.Identity.PrivateIP != netip.MustParseAddr("198.18.2.11") || cfg.ZooKeeper.SessionTimeout != 10*time.Second {
		t.Errorf("decoded wrong: %+v", cfg)
	}
	if len(cfg.Links) != 1 || cfg.Links[0][1] != "dc" {
		t.Errorf("links = %v", cfg.Links)
	}
	// Defaults fill what the file leaves out.
	if cfg.Tuning.HandshakeTimeout != 5*time.Second || cfg.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", cfg.Tuning)
	}
}

func TestMinimalFileGetsDefaults(t *testing.T) {
	cfg, err := Parse([]byte("mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if cfg.Interface != want.Interface || cfg.Overlay != want.Overlay || cfg.StateDir != want.StateDir || cfg.Firewall.Mode != "enforce" || cfg.Registry.MaxGroups != 32 {
		t.Errorf("defaults: got %+v", cfg)
	}
}

// Each bad input must be reported with the key that is wrong.
func TestParseNamesBadKey(t *testing.T) {
	base := "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown top key", base + "colour: blue\n", "colour: unknown key (line 4)"},
		{"unknown nested key", base + "interface: {nam: x}\n", "interface.nam: unknown key"},
		{"typo in zookeeper", "mesh: m\nzookeeper: {server: [\"127.0.0.1:2181\"]}\n", "zookeeper.server: unknown key"},
		{"bad duration", base + "tuning: {hold_down: soon}\n", `tuning.hold_down: bad value "soon" (line 4): want a Go duration`},
		{"duration without unit", "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"], session_timeout: 10}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n", "zookeeper.session_timeout"},
		{"bad ip", "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.300}\n", `identity.private_ip: bad value "198.18.1.300"`},
		{"bad cidr", base + "overlay: {cidr: 100.100.0.1/16}\n", "overlay.cidr: bad value \"100.100.0.1/16\": host bits set; did you mean 100.100.0.0/16?"},
		{"ipv6 pool", base + "overlay: {cidr: \"fd00::/64\"}\n", "overlay.cidr: bad value \"fd00::/64\": must be an IPv4 prefix"},
		{"port out of range", base + "interface: {listen_port: 70000}\n", `interface.listen_port: bad value "70000": must be 1-65535`},
		{"port not a number", base + "interface: {listen_port: high}\n", `interface.listen_port: bad value "high" (line 4): want a whole number`},
		{"mtu too small", base + "interface: {mtu: 500}\n", "interface.mtu"},
		{"unknown bind", base + "interface: {bind: kernel}\n", `interface.bind: bad value "kernel"`},
		{"ifname too long", base + "interface: {name: averyverylongname0}\n", "interface.name"},
		{"bad trust mode", base + "trust: {mode: lax, ca_file: /a, cert_file: /b}\n", `trust.mode: bad value "lax": want permissive or strict`},
		{"relative trust file", base + "trust: {ca_file: ca.crt, cert_file: /b}\n", `trust.ca_file: bad value "ca.crt": must be an absolute path`},
		{"cert without CA", base + "trust: {cert_file: /b}\n", "trust.ca_file: missing"},
		{"CA without cert", base + "trust: {ca_file: /a}\n", "trust.cert_file: missing"},
		{"unknown trust key", base + "trust: {ca: /a}\n", "trust.ca: unknown key"},
		{"mode", base + "firewall: {mode: permissive}\n", `firewall.mode: bad value "permissive": want enforce, shadow or off`},
		{"breakglass", base + "firewall: {breakglass_ssh_from: [nonsense]}\n", "firewall.breakglass_ssh_from"},
		{"link of three", base + "links: [[a, b, c]]\n", "links[0]"},
		{"link to itself", base + "links: [[a, a]]\n", "links[0]: bad value \"[a a]\": a link joins two different networks"},
		{"no servers", "mesh: m\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n", "zookeeper.servers: missing"},
		{"server without port", "mesh: m\nzookeeper: {servers: [zk1]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n", `zookeeper.servers[0]: bad value "zk1": want host:port`},
		{"no mesh", "zookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n", "mesh: missing"},
		{"static without id", "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {network: n, private_ip: 198.18.1.2}\n", "identity.instance_id: missing"},
		{"bad source", "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {source: gcp}\n", `identity.source: bad value "gcp": want static or ec2`},
		{"duplicate key", base + "mesh: n\n", "mesh"},
		{"relative state dir", base + "state_dir: var/lib\n", `state_dir: bad value "var/lib": must be an absolute path`},
		{"metrics", base + "metrics_listen: everywhere\n", "metrics_listen"},
		{"cert without key", "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"], tls: {ca_file: /ca, cert_file: /c}}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n", "cert_file and key_file go together"},
		{"idle after below reject-after", base + "peers: {lazy: true, idle_after: 2m}\n", `peers.idle_after: bad value "2m0s": must be over 3m`},
		{"max groups zero", base + "registry: {max_groups: 0}\n", `registry.max_groups: bad value "0": must be between 1 and 1024`},
		{"max groups huge", base + "registry: {max_groups: 100000}\n", `registry.max_groups: bad value "100000"`},
		{"not yaml", "mesh: [\n", "not valid YAML"},
		{"scalar for mapping", base + "interface: mesh0\n", "interface: want a mapping of keys (line 4)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not name the problem\n got: %v\nwant: %s", err, c.want)
			}
		})
	}
}

func TestSemanticErrorsAllReported(t *testing.T) {
	_, err := Parse([]byte("mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"], tls: {cert_file: /c}}\nidentity: {source: gcp}\nfirewall: {mode: x}\n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) < 3 {
		t.Fatalf("want every problem reported, got %v", err)
	}
	for _, want := range []string{"identity.source", "firewall.mode", "cert_file and key_file go together"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
}

func TestEC2SourceNeedsNoStaticIdentity(t *testing.T) {
	if _, err := Parse([]byte("mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {source: ec2}\n")); err != nil {
		t.Fatalf("ec2 identity is filled at start, want accepted: %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	data, _ := os.ReadFile("testdata/valid.yaml")
	cfg, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(cfg.Marshal())
	if err != nil {
		t.Fatalf("effective config does not parse back:\n%s\n%v", cfg.Marshal(), err)
	}
	if string(again.Marshal()) != string(cfg.Marshal()) {
		t.Errorf("round trip changed the config")
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("want error naming the file, got %v", err)
	}
}

func TestUnderlayKeys(t *testing.T) {
	base := "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"
	cfg, err := Parse([]byte(base + "firewall:\n  underlay:\n    allow:\n      - {ports: [tcp/443, udp/53], from: [\"0.0.0.0/0\", \"::/0\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Firewall.Underlay
	if u.Members != "policy" || len(u.Allow) != 1 || len(u.Allow[0].Ports) != 2 || u.Allow[0].From[1] != netip.MustParsePrefix("::/0") {
		t.Errorf("underlay = %+v", u)
	}
	for _, c := range []struct{ yaml, want string }{
		{"firewall: {underlay: {members: some}}\n", `firewall.underlay.members: bad value "some": want policy or none`},
		{"firewall: {underlay: {allow: [{ports: [tcp/99999], from: [\"::/0\"]}]}}\n", `firewall.underlay.allow[0].ports[0]: bad value "tcp/99999"`},
		{"firewall: {underlay: {allow: [{port: [tcp/443], from: [\"::/0\"]}]}}\n", `firewall.underlay.allow[0].port: unknown key`},
		{"firewall: {underlay: {allow: [{ports: [tcp/443]}]}}\n", `firewall.underlay.allow[0].from: missing`},
		{"firewall: {underlay: {allow: [{ports: [tcp/443], from: [198.51.100.7/24]}]}}\n", `firewall.underlay.allow[0].from[0]: bad value "198.51.100.7/24": host bits set`},
	} {
		_, err := Parse([]byte(base + c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestIdentityIP6Keys(t *testing.T) {
	base := "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\n"
	cfg, err := Parse([]byte(base + "identity: {instance_id: a, network: n, private_ip: 198.18.1.2, private_ip6: \"2001:db8:1::2\", public_ip6: \"2001:db8:ff::2\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity.PrivateIP6 != netip.MustParseAddr("2001:db8:1::2") || cfg.Identity.PublicIP6 != netip.MustParseAddr("2001:db8:ff::2") {
		t.Errorf("identity = %+v", cfg.Identity)
	}
	// check-config prints them, and the printed config reads back.
	out := string(cfg.Marshal())
	if !strings.Contains(out, "private_ip6: 2001:db8:1::2") || !strings.Contains(out, "public_ip6: 2001:db8:ff::2") {
		t.Errorf("effective config lacks the IPv6 keys:\n%s", out)
	}
	if again, err := Parse(cfg.Marshal()); err != nil || again.Identity.PublicIP6 != cfg.Identity.PublicIP6 {
		t.Errorf("effective config does not read back: %v", err)
	}
	// Optional: a file without them has none.
	cfg, err = Parse([]byte(base + "identity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"))
	if err != nil || cfg.Identity.PrivateIP6.IsValid() || cfg.Identity.PublicIP6.IsValid() {
		t.Errorf("without IPv6 keys: %+v %v", cfg.Identity, err)
	}
	for _, c := range []struct{ yaml, want string }{
		{"private_ip6: 198.18.1.9", `identity.private_ip6: bad value "198.18.1.9": must be IPv6`},
		{"public_ip6: \"::ffff:198.18.1.9\"", `identity.public_ip6: bad value "::ffff:198.18.1.9": must be IPv6`},
		{"private_ip6: \"::1\"", `identity.private_ip6: bad value "::1": must be a routable unicast address`},
		{"private_ip6: \"fe80::1\"", `identity.private_ip6: bad value "fe80::1": must be a routable unicast`},
		{"public_ip6: \"ff02::1\"", `identity.public_ip6: bad value "ff02::1": must be a routable unicast`},
		{"public_ip6: \"::\"", `identity.public_ip6: bad value "::"`},
		{"private_ip6: \"2001:db8::1%eth0\"", `identity.private_ip6: bad value "2001:db8::1%eth0": must not carry a zone`},
		{"private_ip6: \"2001:db8::zz\"", `identity.private_ip6: bad value "2001:db8::zz" (line 3): want an address`},
	} {
		for _, src := range []string{"instance_id: a, network: n, private_ip: 198.18.1.2", "source: ec2"} {
			_, err := Parse([]byte(base + "identity: {" + src + ", " + c.yaml + "}\n"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s (%s): got %v, want %q", c.yaml, src, err, c.want)
			}
		}
	}
}

// TestPeersLazyDefault: lazy peers are on unless the file says otherwise
// (issue 17). The file decodes over Default, so an absent key, an empty
// peers block and a peers block that sets only idle_after keep them on;
// only an explicit false turns them off, and check-config's output keeps
// whichever it was.
func TestPeersLazyDefault(t *testing.T) {
	base := "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"
	for _, c := range []struct {
		name, yaml string
		want       bool
	}{
		{"no peers block", "", true},
		{"empty peers block", "peers:\n", true},
		{"empty mapping", "peers: {}\n", true},
		{"only idle_after", "peers: {idle_after: 10m}\n", true},
		{"explicit true", "peers: {lazy: true}\n", true},
		{"explicit false", "peers: {lazy: false}\n", false},
		// Lazy peers need meshd's bind: upstream's leaves them off unless
		// asked, and asking is refused below.
		{"wireguard-go bind", "interface: {bind: wireguard-go}\npeers: {idle_after: 10m}\n", false},
		{"wireguard-go bind, explicit false", "interface: {bind: wireguard-go}\npeers: {lazy: false}\n", false},
		{"meshd bind", "interface: {bind: meshd}\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base + c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Peers.Lazy != c.want {
				t.Errorf("peers.lazy = %v, want %v", cfg.Peers.Lazy, c.want)
			}
			again, err := Parse(cfg.Marshal())
			if err != nil || again.Peers.Lazy != c.want {
				t.Errorf("effective config reads back peers.lazy = %v (%v), want %v:\n%s", again.Peers.Lazy, err, c.want, cfg.Marshal())
			}
		})
	}
	if !Default().Peers.Lazy {
		t.Error("Default().Peers.Lazy = false, want true")
	}
	_, err := Parse([]byte(base + "interface: {bind: wireguard-go}\npeers: {lazy: true}\n"))
	if err == nil || !strings.Contains(err.Error(), `peers.lazy: bad value "true": lazy peers need interface.bind: meshd`) {
		t.Errorf("lazy peers on wireguard-go's bind: got %v, want peers.lazy refused", err)
	}
}
