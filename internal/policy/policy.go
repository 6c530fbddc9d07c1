// Package policy owns the fleet's group ingress policy: its document format
// (YAML or JSON, stored as JSON in the registry), parsing and validation.
//
//	rules:
//	  - to: db            # the group that accepts
//	    from: web         # the group allowed in; "*" = every mesh member
//	    ports: [tcp/5432, udp/53, tcp/8000-8100, icmp]
//	icmp_echo: true       # members may ping members (default true)
//
// No policy means every member may reach every member over the overlay,
// and nothing else may. A policy replaces that default and denies what it
// does not allow, except ICMP echo between members unless icmp_echo: false.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Any is the group that stands for every mesh member.
const Any = "*"

// Policy is a parsed, valid policy.
type Policy struct {
	Rules    []Rule `json:"rules"`
	ICMPEcho *bool  `json:"icmp_echo,omitempty"`
	// AllowAll opens every member to every member. It is the only way to
	// lift a policy: a missing or emptied policy node keeps the last one.
	AllowAll bool `json:"allow_all,omitempty"`
}

// Rule lets members of From reach members of To on Ports.
type Rule struct {
	To    string `json:"to"`
	From  string `json:"from"`
	Ports []Port `json:"ports"`
}

// Port is a protocol with a port range; ICMP has none.
type Port struct {
	Proto    string // tcp, udp, icmp
	From, To uint16
}

// String renders the port as written: tcp/5432, tcp/8000-8100, icmp.
func (p Port) String() string {
	switch {
	case p.Proto == "icmp":
		return "icmp"
	case p.From == p.To:
		return fmt.Sprintf("%s/%d", p.Proto, p.From)
	}
	return fmt.Sprintf("%s/%d-%d", p.Proto, p.From, p.To)
}

// MarshalJSON writes a port as its string form.
func (p Port) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// AllowsEcho reports whether members may ping members.
func (p Policy) AllowsEcho() bool { return p.ICMPEcho == nil || *p.ICMPEcho }

var groupRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

type rawPolicy struct {
	Rules []struct {
		To    string   `yaml:"to"`
		From  string   `yaml:"from"`
		Ports []string `yaml:"ports"`
	} `yaml:"rules"`
	ICMPEcho *bool `yaml:"icmp_echo"`
	AllowAll bool  `yaml:"allow_all"`
}

// Parse reads a policy document (YAML or JSON) and checks its syntax; every
// error names the rule, the field and the value.
func Parse(data []byte) (Policy, error) {
	var raw rawPolicy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	p := Policy{ICMPEcho: raw.ICMPEcho, AllowAll: raw.AllowAll}
	var errs []string
	if raw.AllowAll && len(raw.Rules) > 0 {
		errs = append(errs, "allow_all: true takes no rules: it opens every member to every member")
	}
	for i, r := range raw.Rules {
		rule := Rule{To: r.To, From: r.From}
		for _, g := range []struct{ field, v string }{{"to", r.To}, {"from", r.From}} {
			if g.v != Any && !groupRe.MatchString(g.v) {
				errs = append(errs, fmt.Sprintf("rules[%d].%s: bad group %q", i, g.field, g.v))
			}
		}
		if len(r.Ports) == 0 {
			errs = append(errs, fmt.Sprintf("rules[%d].ports: empty: list what %s accepts, e.g. [tcp/5432]", i, r.To))
		}
		for j, s := range r.Ports {
			port, err := ParsePort(s)
			if err != nil {
				errs = append(errs, fmt.Sprintf("rules[%d].ports[%d]: %v", i, j, err))
				continue
			}
			rule.Ports = append(rule.Ports, port)
		}
		p.Rules = append(p.Rules, rule)
	}
	if len(errs) > 0 {
		return Policy{}, fmt.Errorf("policy:\n  %s", strings.Join(errs, "\n  "))
	}
	return p, nil
}

// ParsePort reads tcp/N, tcp/N-M, udp/..., or icmp.
func ParsePort(s string) (Port, error) {
	if s == "icmp" {
		return Port{Proto: "icmp"}, nil
	}
	proto, rng, ok := strings.Cut(s, "/")
	if !ok {
		return Port{}, fmt.Errorf("bad port %q: want tcp/PORT, udp/PORT, PROTO/FROM-TO or icmp", s)
	}
	if proto != "tcp" && proto != "udp" {
		return Port{}, fmt.Errorf("bad protocol %q in %q: want tcp, udp or icmp", proto, s)
	}
	lo, hi, isRange := strings.Cut(rng, "-")
	from, err1 := strconv.ParseUint(lo, 10, 16)
	to := from
	var err2 error
	if isRange {
		to, err2 = strconv.ParseUint(hi, 10, 16)
	}
	if err1 != nil || err2 != nil || from == 0 || to < from {
		return Port{}, fmt.Errorf("bad port %q: ports are 1-65535, a range low-high", s)
	}
	return Port{Proto: proto, From: uint16(from), To: uint16(to)}, nil
}

// UnknownGroups names the groups a policy names that no live host has: a
// typo, or a tier not deployed yet. Such a group matches nobody; the
// policy is still applied, with these as warnings.
func (p Policy) UnknownGroups(known map[string]bool) []string {
	var out []string
	for i, r := range p.Rules {
		for _, g := range []struct{ field, v string }{{"to", r.To}, {"from", r.From}} {
			if g.v != Any && !known[g.v] {
				out = append(out, fmt.Sprintf("rules[%d].%s: group %q has no live host yet: it matches nobody", i, g.field, g.v))
			}
		}
	}
	return out
}

// Validate checks the groups a policy names against the groups the fleet
// has; a policy naming a group nobody is in is most likely a typo.
func (p Policy) Validate(known map[string]bool) error {
	var errs []string
	for i, r := range p.Rules {
		for _, g := range []struct{ field, v string }{{"to", r.To}, {"from", r.From}} {
			if g.v != Any && !known[g.v] {
				errs = append(errs, fmt.Sprintf("rules[%d].%s: unknown group %q (no host is in it)", i, g.field, g.v))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("policy:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// JSON renders the policy as stored in the registry.
func (p Policy) JSON() []byte {
	out, _ := json.Marshal(p)
	return out
}
