package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// DNS is meshd's resolver for the mesh's names.
type DNS struct {
	Enabled bool `yaml:"enabled"`
	// Domain is the zone: <instance-id>.<domain>, <group>.group.<domain>.
	// Empty in the file means <mesh>.mesh.internal.
	Domain string `yaml:"domain"`
	// Listen is ip:port; "" means the host's overlay address, port 53.
	Listen string `yaml:"listen"`
}

// labelRe is one DNS label as resolvers and stub zones accept it.
var labelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)

// dnsDefaults fills what depends on other keys: the domain follows the mesh.
func (c *Config) dnsDefaults() {
	if c.DNS.Domain == "" && c.Mesh != "" {
		c.DNS.Domain = strings.ToLower(c.Mesh) + ".mesh.internal"
	}
	c.DNS.Domain = strings.ToLower(strings.TrimSuffix(c.DNS.Domain, "."))
}

func (c *Config) validateDNS() Errors {
	var errs Errors
	d := c.DNS
	if d.Domain != "" {
		labels := strings.Split(d.Domain, ".")
		switch {
		case len(d.Domain) > 200:
			errs = append(errs, fmt.Errorf("dns.domain: bad value %q: at most 200 characters, so host names fit under it", d.Domain))
		case len(labels) < 2:
			errs = append(errs, fmt.Errorf("dns.domain: bad value %q: want at least two labels, e.g. prod.mesh.internal", d.Domain))
		default:
			for _, l := range labels {
				if !labelRe.MatchString(l) {
					errs = append(errs, fmt.Errorf("dns.domain: bad value %q: label %q: use letters, digits, '-' or '_' (1-63, not starting or ending with '-')", d.Domain, l))
					break
				}
			}
		}
	}
	if d.Listen != "" {
		if ap, err := netip.ParseAddrPort(d.Listen); err != nil || ap.Port() == 0 {
			errs = append(errs, fmt.Errorf("dns.listen: bad value %q: want ip:port such as 127.0.0.1:53, or \"\" for the overlay address, port 53", d.Listen))
		}
	}
	return errs
}
