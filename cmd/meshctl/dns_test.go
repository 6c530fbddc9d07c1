package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/admin"
)

// meshctl status names the zone and where it is served, or why not.
func TestStatusShowsDNS(t *testing.T) {
	for _, c := range []struct {
		dns  *admin.DNSStatus
		want string
	}{
		{&admin.DNSStatus{Domain: "prod.mesh.internal", Listen: "100.100.0.7:53", Resolved: "routes ~prod.mesh.internal to 100.100.0.7:53 on mesh0", Answered: 12, Dropped: 3},
			"dns: prod.mesh.internal on 100.100.0.7:53 (12 answered, 3 from non-members dropped); systemd-resolved: routes ~prod.mesh.internal to 100.100.0.7:53 on mesh0\n"},
		{&admin.DNSStatus{Domain: "prod.mesh.internal", Error: "dns: listen udp 100.100.0.7:53: address already in use"},
			"dns: prod.mesh.internal NOT SERVED: dns: listen udp 100.100.0.7:53: address already in use\n"},
		{nil, ""},
	} {
		var b bytes.Buffer
		writeStatus(&b, admin.Status{Name: "h1", DNS: c.dns})
		line := ""
		for _, l := range strings.SplitAfter(b.String(), "\n") {
			// The column width follows the longest label in the table.
			if rest, ok := strings.CutPrefix(l, "dns:"); ok {
				line = "dns: " + strings.TrimLeft(rest, " ")
			}
		}
		if line != c.want {
			t.Errorf("dns row = %q, want %q", line, c.want)
		}
	}
}
