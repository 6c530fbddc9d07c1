package config

import (
	"strings"
	"testing"
)

func TestDNSDefaultsFollowTheMesh(t *testing.T) {
	cfg, err := Parse([]byte("mesh: Prod\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.DNS.Enabled || cfg.DNS.Domain != "prod.mesh.internal" || cfg.DNS.Listen != "" {
		t.Errorf("dns defaults = %+v, want enabled, prod.mesh.internal, overlay address", cfg.DNS)
	}
	// check-config prints the effective keys.
	if out := string(cfg.Marshal()); !strings.Contains(out, "dns:\n  enabled: true\n  domain: prod.mesh.internal\n  listen: \"\"\n") {
		t.Errorf("effective config lacks the dns block:\n%s", out)
	}
	cfg, err = Parse([]byte("mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\ndns: {enabled: false, domain: Corp.Example., listen: \"127.0.0.1:5353\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DNS.Enabled || cfg.DNS.Domain != "corp.example" || cfg.DNS.Listen != "127.0.0.1:5353" {
		t.Errorf("dns = %+v", cfg.DNS)
	}
}

func TestDNSBadValuesNamed(t *testing.T) {
	base := "mesh: m\nzookeeper: {servers: [\"127.0.0.1:2181\"]}\nidentity: {instance_id: a, network: n, private_ip: 198.18.1.2}\n"
	for _, c := range []struct{ yaml, want string }{
		{"dns: {domain: internal}", `dns.domain: bad value "internal": want at least two labels`},
		{"dns: {domain: \"a b.internal\"}", `dns.domain: bad value "a b.internal": label "a b"`},
		{"dns: {domain: -x.internal}", `dns.domain: bad value "-x.internal"`},
		{"dns: {domain: a..internal}", `label ""`},
		{"dns: {domain: " + strings.Repeat("abcdefghi.", 21) + "x}", "at most 200 characters"},
		{"dns: {listen: \"198.51.100.7\"}", `dns.listen: bad value "198.51.100.7": want ip:port`},
		{"dns: {listen: \"127.0.0.1:0\"}", `dns.listen: bad value "127.0.0.1:0"`},
		{"dns: {enabled: maybe}", `dns.enabled: bad value "maybe" (line 4): want true or false`},
		{"dns: {zone: x}", "dns.zone: unknown key"},
	} {
		_, err := Parse([]byte(base + c.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %s", c.yaml, err, c.want)
		}
	}
}
