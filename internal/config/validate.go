package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/meshd/meshd/internal/policy"
)

// nameRe is what a mesh name, instance id, network or group may look like:
// each ends up in ZooKeeper paths, ipset names or log lines.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ifnameRe follows the kernel's limits: at most 15 bytes, no slash or space.
var ifnameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// Validate checks values the decoder cannot, and returns one error per bad
// key. The identity of an ec2 host is checked after metadata fills it in.
func (c *Config) Validate() Errors {
	var errs Errors
	bad := func(key string, val any, why string) {
		errs = append(errs, fmt.Errorf("%s: bad value %q: %s", key, fmt.Sprint(val), why))
	}
	if c.Mesh == "" {
		errs = append(errs, fmt.Errorf("mesh: missing: name the mesh, e.g. mesh: prod"))
	} else if !nameRe.MatchString(c.Mesh) {
		bad("mesh", c.Mesh, "use letters, digits, '.', '_' or '-' (at most 63)")
	}

	if len(c.ZooKeeper.Servers) == 0 {
		errs = append(errs, fmt.Errorf("zookeeper.servers: missing: list at least one host:port"))
	}
	for i, s := range c.ZooKeeper.Servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			bad(fmt.Sprintf("zookeeper.servers[%d]", i), s, "want host:port")
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad(fmt.Sprintf("zookeeper.servers[%d]", i), s, "port must be 1-65535")
		}
	}
	if c.ZooKeeper.SessionTimeout < 2*time.Second || c.ZooKeeper.SessionTimeout > 60*time.Second {
		bad("zookeeper.session_timeout", c.ZooKeeper.SessionTimeout, "must be between 2s and 60s")
	}
	tls := c.ZooKeeper.TLS
	if (tls.CertFile == "") != (tls.KeyFile == "") {
		errs = append(errs, fmt.Errorf("zookeeper.tls: cert_file and key_file go together: give both or neither"))
	}
	if tls.CertFile != "" && tls.CAFile == "" {
		errs = append(errs, fmt.Errorf("zookeeper.tls.ca_file: missing: a client certificate needs the CA that verifies the servers"))
	}

	switch c.Identity.Source {
	case SourceStatic:
		errs = append(errs, c.ValidateIdentity()...)
	case SourceEC2:
		// Filled from instance metadata at start; checked then. What the
		// file sets overrides metadata: the IPv6 keys are checked now.
		errs = append(errs, c.Identity.validateIP6()...)
	default:
		bad("identity.source", c.Identity.Source, "want static or ec2")
	}
	for i, g := range c.Identity.Groups {
		if !nameRe.MatchString(g) {
			bad(fmt.Sprintf("identity.groups[%d]", i), g, "use letters, digits, '.', '_' or '-'")
		}
	}

	if !ifnameRe.MatchString(c.Interface.Name) {
		bad("interface.name", c.Interface.Name, "an interface name of 1-15 letters, digits, '_', '.' or '-'")
	}
	if c.Interface.ListenPort < 1 || c.Interface.ListenPort > 65535 {
		bad("interface.listen_port", c.Interface.ListenPort, "must be 1-65535")
	}
	if c.Interface.MTU != 0 && (c.Interface.MTU < 1280 || c.Interface.MTU > 9000) {
		bad("interface.mtu", c.Interface.MTU, "must be 0 (automatic) or 1280-9000")
	}
	if c.Interface.Bind != "meshd" && c.Interface.Bind != "wireguard-go" {
		bad("interface.bind", c.Interface.Bind, "want meshd or wireguard-go")
	}

	p := c.Overlay.CIDR
	switch {
	case !p.IsValid():
		errs = append(errs, fmt.Errorf("overlay.cidr: missing: give the pool, e.g. 100.100.0.0/16"))
	case !p.Addr().Is4():
		bad("overlay.cidr", p, "must be an IPv4 prefix")
	case p.Bits() > 30 || p.Bits() < 8:
		bad("overlay.cidr", p, "prefix length must be /8 to /30")
	case p.Masked() != p:
		bad("overlay.cidr", p, fmt.Sprintf("host bits set; did you mean %s?", p.Masked()))
	}

	for i, l := range c.Links {
		key := fmt.Sprintf("links[%d]", i)
		if len(l) != 2 {
			bad(key, l, "a link joins exactly two networks, e.g. [vpc, dc]")
			continue
		}
		if l[0] == l[1] {
			bad(key, l, "a link joins two different networks")
		}
		for _, n := range l {
			if !nameRe.MatchString(n) {
				bad(key, l, fmt.Sprintf("network %q: use letters, digits, '.', '_' or '-'", n))
			}
		}
	}

	switch c.Firewall.Mode {
	case ModeEnforce, ModeShadow, ModeOff:
	default:
		bad("firewall.mode", c.Firewall.Mode, "want enforce, shadow or off")
	}
	for i, p := range c.Firewall.BreakglassSSHFrom {
		if p.Masked() != p {
			bad(fmt.Sprintf("firewall.breakglass_ssh_from[%d]", i), p, fmt.Sprintf("host bits set; did you mean %s?", p.Masked()))
		}
	}
	switch c.Firewall.Underlay.Members {
	case MembersPolicy, MembersNone:
	default:
		bad("firewall.underlay.members", c.Firewall.Underlay.Members, "want policy or none")
	}
	for i, a := range c.Firewall.Underlay.Allow {
		key := fmt.Sprintf("firewall.underlay.allow[%d]", i)
		if len(a.Ports) == 0 {
			errs = append(errs, fmt.Errorf("%s.ports: missing: list what to open, e.g. [tcp/443]", key))
		}
		for j, port := range a.Ports {
			if _, err := policy.ParsePort(port); err != nil {
				bad(fmt.Sprintf("%s.ports[%d]", key, j), port, err.Error())
			}
		}
		if len(a.From) == 0 {
			errs = append(errs, fmt.Errorf("%s.from: missing: list the sources, e.g. [\"0.0.0.0/0\", \"::/0\"]", key))
		}
		for j, p := range a.From {
			if p.Masked() != p {
				bad(fmt.Sprintf("%s.from[%d]", key, j), p, fmt.Sprintf("host bits set; did you mean %s?", p.Masked()))
			}
		}
	}

	t := c.Tuning
	if t.HandshakeTimeout < time.Second || t.HandshakeTimeout > 2*time.Minute {
		bad("tuning.handshake_timeout", t.HandshakeTimeout, "must be between 1s and 2m")
	}
	if t.PathRetry < time.Second || t.PathRetry > 5*time.Minute {
		bad("tuning.path_retry", t.PathRetry, "must be between 1s and 5m")
	}
	if t.HoldDown < 0 {
		bad("tuning.hold_down", t.HoldDown, "must not be negative")
	}
	if t.MaxRemovals < 0 {
		bad("tuning.max_removals", t.MaxRemovals, "must not be negative")
	}
	if t.BreakerWindow <= 0 {
		bad("tuning.breaker_window", t.BreakerWindow, "must be positive")
	}
	if t.KeyRotation != 0 && t.KeyRotation < time.Minute {
		bad("tuning.key_rotation", t.KeyRotation, "0 (off) or at least 1m")
	}
	if t.Quarantine < 0 {
		bad("tuning.quarantine", t.Quarantine, "must not be negative")
	}

	errs = append(errs, c.validateDNS()...)
	errs = append(errs, c.validateTrust()...)
	if c.Peers.Lazy && c.Interface.Bind == "wireguard-go" {
		bad("peers.lazy", c.Peers.Lazy, "lazy peers need interface.bind: meshd (wireguard-go's bind has no hook for the handshake initiations that bring an idle peer in); set peers.lazy: false")
	}
	if a := c.Peers.IdleAfter; a <= 3*time.Minute || a > 24*time.Hour {
		bad("peers.idle_after", a, "must be over 3m (WireGuard's reject-after time, so no side keeps a session the other dropped) and at most 24h")
	}
	if g := c.Registry.MaxGroups; g < 1 || g > 1024 {
		bad("registry.max_groups", g, "must be between 1 and 1024")
	}

	for key, path := range map[string]string{"state_dir": c.StateDir, "admin_socket": c.AdminSocket} {
		if !filepath.IsAbs(path) {
			bad(key, path, "must be an absolute path")
		}
	}
	if c.MetricsListen != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen); err != nil {
			bad("metrics_listen", c.MetricsListen, "want ip:port such as 127.0.0.1:9474, or \"\" to disable")
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", c.LogLevel, "want debug, info, warn or error")
	}
	return errs
}

// ValidateIdentity checks the identity keys; for source ec2 it runs after
// instance metadata has filled them in.
func (c *Config) ValidateIdentity() Errors {
	var errs Errors
	id := c.Identity
	if id.InstanceID == "" {
		errs = append(errs, fmt.Errorf("identity.instance_id: missing: a stable host id is required with source static"))
	} else if !nameRe.MatchString(id.InstanceID) {
		errs = append(errs, fmt.Errorf("identity.instance_id: bad value %q: use letters, digits, '.', '_' or '-'", id.InstanceID))
	}
	if id.Network == "" {
		errs = append(errs, fmt.Errorf("identity.network: missing: name the network (VPC id, classic, or a data-centre name)"))
	} else if !nameRe.MatchString(id.Network) {
		errs = append(errs, fmt.Errorf("identity.network: bad value %q: use letters, digits, '.', '_' or '-'", id.Network))
	}
	if !id.PrivateIP.IsValid() {
		errs = append(errs, fmt.Errorf("identity.private_ip: missing: the host's address in its own network"))
	} else if !id.PrivateIP.Is4() {
		errs = append(errs, fmt.Errorf("identity.private_ip: bad value %q: must be IPv4", id.PrivateIP))
	}
	if id.PublicIP.IsValid() && !id.PublicIP.Is4() {
		errs = append(errs, fmt.Errorf("identity.public_ip: bad value %q: must be IPv4", id.PublicIP))
	}
	return append(errs, id.validateIP6()...)
}

// validateIP6 checks the optional IPv6 underlay addresses. With source
// ec2 they are checked when the file is read (they override metadata) and
// again once metadata has filled them in.
func (id Identity) validateIP6() Errors {
	var errs Errors
	for _, k := range []struct {
		key string
		a   netip.Addr
	}{{"identity.private_ip6", id.PrivateIP6}, {"identity.public_ip6", id.PublicIP6}} {
		if why := badIP6(k.a); why != "" {
			errs = append(errs, fmt.Errorf("%s: bad value %q: %s", k.key, k.a, why))
		}
	}
	return errs
}

// badIP6 says why an optional IPv6 underlay address cannot be one (what
// peers would refuse in the record), or "".
func badIP6(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case !a.Is6() || a.Is4In6():
		return "must be IPv6 (not IPv4 or IPv4-mapped); IPv4 goes in private_ip / public_ip"
	case a.Zone() != "":
		return "must not carry a zone"
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast():
		return "must be a routable unicast address (not unspecified, loopback, multicast or link-local)"
	}
	return ""
}

// validateTrust checks the trust keys; the files themselves are read (and
// their problems named) when meshd starts.
func (c *Config) validateTrust() Errors {
	var errs Errors
	t := c.Trust
	switch t.Mode {
	case TrustPermissive, TrustStrict:
	default:
		errs = append(errs, fmt.Errorf("trust.mode: bad value %q: want permissive or strict", t.Mode))
	}
	for key, path := range map[string]string{"trust.ca_file": t.CAFile, "trust.cert_file": t.CertFile, "trust.key_file": t.KeyFile} {
		if path != "" && !filepath.IsAbs(path) {
			errs = append(errs, fmt.Errorf("%s: bad value %q: must be an absolute path", key, path))
		}
	}
	if t.CAFile == "" && t.CertFile != "" {
		errs = append(errs, fmt.Errorf("trust.ca_file: missing: trust.cert_file is set, and peers check it against the fleet CA"))
	}
	if t.CAFile != "" && t.CertFile == "" {
		errs = append(errs, fmt.Errorf("trust.cert_file: missing: with trust.ca_file set this host signs its record under its certificate (make one with meshd csr)"))
	}
	return errs
}

// TrustKeyFile is where the identity key lives.
func (c *Config) TrustKeyFile() string {
	if c.Trust.KeyFile != "" {
		return c.Trust.KeyFile
	}
	return filepath.Join(c.StateDir, "identity.key")
}
