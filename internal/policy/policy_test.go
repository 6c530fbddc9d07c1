package policy

import (
	"strings"
	"testing"
)

func TestParseAndRoundTrip(t *testing.T) {
	p, err := Parse([]byte("rules:\n  - {to: db, from: web, ports: [tcp/5432, udp/53, tcp/8000-8100, icmp]}\n  - {to: web, from: '*', ports: [tcp/443]}\nicmp_echo: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 2 || p.Rules[0].Ports[2] != (Port{"tcp", 8000, 8100}) || p.AllowsEcho() {
		t.Fatalf("parsed %+v", p)
	}
	again, err := Parse(p.JSON())
	if err != nil || string(again.JSON()) != string(p.JSON()) {
		t.Errorf("JSON round trip: %s -> %v %s", p.JSON(), err, again.JSON())
	}
	if def, _ := Parse([]byte("rules: []")); !def.AllowsEcho() {
		t.Error("echo must default to allowed")
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"rules: [{to: db, from: web, ports: [tcp/0]}]":     "rules[0].ports[0]: bad port \"tcp/0\"",
		"rules: [{to: db, from: web, ports: [sctp/9]}]":    "rules[0].ports[0]: bad protocol \"sctp\"",
		"rules: [{to: db, from: web, ports: [tcp/9-3]}]":   "bad port \"tcp/9-3\"",
		"rules: [{to: db, from: web, ports: [tcp/70000]}]": "bad port",
		"rules: [{to: db, from: web, ports: [5432]}]":      "want tcp/PORT",
		"rules: [{to: 'd b', from: web, ports: [tcp/1]}]":  "rules[0].to: bad group \"d b\"",
		"rules: [{to: db, from: web, ports: []}]":          "rules[0].ports: empty",
		"rules: [{to: db, from: web, port: [tcp/1]}]":      "field port not found",
		"rules: {to: db}": "policy:",
	}
	for in, want := range cases {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", in, err, want)
		}
	}
}

func TestValidateUnknownGroup(t *testing.T) {
	p, _ := Parse([]byte("rules: [{to: db, from: wbe, ports: [tcp/5432]}, {to: db, from: '*', ports: [icmp]}]"))
	err := p.Validate(map[string]bool{"db": true, "web": true})
	if err == nil || !strings.Contains(err.Error(), `rules[0].from: unknown group "wbe"`) {
		t.Errorf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("rules: [{to: db, from: web, ports: [tcp/5432]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		for _, r := range p.Rules {
			for _, port := range r.Ports {
				if port.Proto != "icmp" && (port.From == 0 || port.To < port.From) {
					t.Fatalf("accepted bad port %+v", port)
				}
			}
		}
	})
}

func TestAllowAllAndUnknownGroups(t *testing.T) {
	p, err := Parse([]byte(`{"allow_all": true}`))
	if err != nil || !p.AllowAll || len(p.Rules) != 0 {
		t.Errorf("allow_all document: %+v, %v", p, err)
	}
	if _, err := Parse([]byte("allow_all: true\nrules: [{to: db, from: web, ports: [tcp/5432]}]\n")); err == nil || !strings.Contains(err.Error(), "allow_all: true takes no rules") {
		t.Errorf("allow_all with rules: %v", err)
	}
	p, _ = Parse([]byte("rules: [{to: db, from: analytics, ports: [tcp/6000]}]\n"))
	w := p.UnknownGroups(map[string]bool{"db": true})
	if len(w) != 1 || !strings.Contains(w[0], `rules[0].from: group "analytics" has no live host yet`) {
		t.Errorf("warnings = %v", w)
	}
}
