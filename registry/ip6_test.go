package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/trust"
)

func sampleHost6() Host {
	h := sampleHost()
	h.PrivateIP6, h.PublicIP6 = netip.MustParseAddr("fd18:2::11"), netip.MustParseAddr("fd18:0:2::11")
	return h
}

// A record with IPv6 addresses round-trips; one without them is written
// exactly as the previous release wrote it (no new keys at all).
func TestHostIP6RoundTrip(t *testing.T) {
	h := sampleHost6()
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"private_ip6":"fd18:2::11"`)) || !bytes.Contains(data, []byte(`"public_ip6":"fd18:0:2::11"`)) {
		t.Errorf("record lacks its IPv6 keys: %s", data)
	}
	got, err := DecodeHost(data, testPool)
	if err != nil {
		t.Fatal(err)
	}
	if got.PrivateIP6 != h.PrivateIP6 || got.PublicIP6 != h.PublicIP6 || got.PrivateIP != h.PrivateIP {
		t.Errorf("round trip: private6 %v public6 %v private %v", got.PrivateIP6, got.PublicIP6, got.PrivateIP)
	}
	data, _ = json.Marshal(sampleHost())
	if bytes.Contains(data, []byte("ip6")) {
		t.Errorf("record without IPv6 addresses names them: %s", data)
	}
}

// The previous release's record (no IPv6 keys) still decodes, and this
// release's record decodes in the previous release's shape with every
// field it knows intact: readers ignore keys they do not know.
func TestHostIP6ReadableAcrossReleases(t *testing.T) {
	old := `{"schema":1,"instance_id":"i-0old","overlay_ip":"100.100.0.8","public_key":"` + sampleHost().PublicKey.String() +
		`","network":"vpc","private_ip":"198.18.2.12","public_ip":"198.19.2.12","listen_port":51820,"groups":["web"],` +
		`"version":"0.9","start_time":"2026-01-01T00:00:00Z"}`
	h, err := DecodeHost([]byte(old), testPool)
	if err != nil {
		t.Fatalf("previous release's record: %v", err)
	}
	if h.PrivateIP6.IsValid() || h.PublicIP6.IsValid() || h.PrivateIP.String() != "198.18.2.12" {
		t.Errorf("previous release's record decoded as %+v", h)
	}

	// The previous release's wire struct, as it was.
	type previous struct {
		Schema     int        `json:"schema"`
		InstanceID string     `json:"instance_id"`
		OverlayIP  netip.Addr `json:"overlay_ip"`
		PublicKey  string     `json:"public_key"`
		Network    string     `json:"network"`
		PrivateIP  netip.Addr `json:"private_ip"`
		PublicIP   string     `json:"public_ip,omitempty"`
		ListenPort uint16     `json:"listen_port"`
		Groups     []string   `json:"groups,omitempty"`
	}
	cur := sampleHost6()
	data, _ := json.Marshal(cur)
	var p previous
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("previous release reading this release's record: %v", err)
	}
	if p.Schema != Schema || p.InstanceID != cur.InstanceID || p.PrivateIP != cur.PrivateIP || p.PublicIP != cur.PublicIP.String() ||
		p.PublicKey != cur.PublicKey.String() || p.ListenPort != cur.ListenPort || strings.Join(p.Groups, ",") != "web" {
		t.Errorf("previous release reads %+v from %s", p, data)
	}
}

func TestDecodeHostRefusesBadIP6(t *testing.T) {
	for _, c := range []struct{ field, addr, reason string }{
		{"private_ip6", "::1", ReasonUnderlay},
		{"private_ip6", "::", ReasonUnderlay},
		{"private_ip6", "fe80::1", ReasonUnderlay},
		{"private_ip6", "ff02::1", ReasonUnderlay},
		{"private_ip6", "::ffff:198.18.2.9", ReasonUnderlay},     // IPv4-mapped
		{"private_ip6", "::ffff:100.100.0.9", ReasonUnderlay},    // mapped, and the overlay pool
		{"public_ip6", "::ffff:169.254.169.254", ReasonUnderlay}, // mapped metadata service
		{"public_ip6", "fe80::a:b", ReasonUnderlay},
		{"public_ip6", "ff0e::1", ReasonUnderlay},
		{"public_ip6", "::1", ReasonUnderlay},
		{"private_ip6", "198.18.2.9", "address"}, // IPv4 in the IPv6 field
		{"private_ip6", "fd18:2::9%eth0", "address"},
		{"public_ip6", "nope", "address"},
	} {
		t.Run(c.field+"="+c.addr, func(t *testing.T) {
			var m map[string]any
			data, _ := json.Marshal(sampleHost())
			json.Unmarshal(data, &m)
			m[c.field] = c.addr
			data, _ = json.Marshal(m)
			_, err := DecodeHost(data, testPool)
			var br *BadRecord
			if !errors.As(err, &br) || br.Reason != c.reason {
				t.Fatalf("%s %s: got %v, want refused as %s", c.field, c.addr, err, c.reason)
			}
			if !strings.Contains(br.Detail, strings.TrimPrefix(c.addr, "::ffff:")) {
				t.Errorf("refusal does not name the address: %s", br.Detail)
			}
		})
	}
	// Unique-local and global unicast pass.
	for _, a := range []string{"fd18:2::9", "2001:db8::9"} {
		h := sampleHost()
		h.PrivateIP6, h.PublicIP6 = netip.MustParseAddr(a), netip.MustParseAddr(a)
		data, _ := json.Marshal(h)
		if _, err := DecodeHost(data, testPool); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
}

func TestBoundsCheckIP6(t *testing.T) {
	self := sampleHost6()
	self.InstanceID = "me"
	b := bounds{maxGroups: 32, self: self}
	other := func(f func(h *Host)) Host {
		h := sampleHost()
		h.InstanceID, h.PrivateIP, h.PublicIP = "other", netip.MustParseAddr("198.18.2.50"), netip.MustParseAddr("198.19.2.50")
		h.PrivateIP6, h.PublicIP6 = netip.MustParseAddr("fd18:2::50"), netip.MustParseAddr("fd18:0:2::50")
		f(&h)
		return h
	}
	for _, c := range []struct {
		name   string
		h      Host
		reason string
	}{
		{"ordinary", other(func(h *Host) {}), ""},
		{"no IPv6", other(func(h *Host) { h.PrivateIP6, h.PublicIP6 = netip.Addr{}, netip.Addr{} }), ""},
		{"my public IPv6 as public", other(func(h *Host) { h.PublicIP6 = self.PublicIP6 }), ReasonOwnAddress},
		{"my private IPv6 as public", other(func(h *Host) { h.PublicIP6 = self.PrivateIP6 }), ReasonOwnAddress},
		{"my public IPv6 as private", other(func(h *Host) { h.PrivateIP6 = self.PublicIP6 }), ReasonOwnAddress},
		{"my private IPv6 in my network", other(func(h *Host) { h.PrivateIP6 = self.PrivateIP6 }), ReasonOwnAddress},
		{"my private IPv6 in another network", other(func(h *Host) { h.PrivateIP6, h.Network = self.PrivateIP6, "dc" }), ""},
		{"this host's own record", self, ""},
	} {
		err := b.check(c.h)
		var br *BadRecord
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.reason != "" && (!errors.As(err, &br) || br.Reason != c.reason):
			t.Errorf("%s: got %v, want refused as %s", c.name, err, c.reason)
		}
	}
}

// With trust, the IPv6 addresses are inside the signed bytes: a reader
// believes the signed ones, whatever the plain keys beside them say, and a
// change to the signed bytes breaks the signature.
func TestSignedRecordCoversIP6(t *testing.T) {
	fca := newFleetCA(t)
	pool, _ := trust.NewPool(fca.ca.PEM)
	ht := fca.host(t, pool, "i-0abc", trust.Template{Groups: []string{"web"}, Network: "vpc"})
	r := &Registry{o: Options{Trust: ht, Pool: testPool}}

	h := sampleHost6()
	h.Seq = 7
	data, err := SealRecord(h, ht)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]json.RawMessage
	json.Unmarshal(data, &env)
	var s signedJSON
	json.Unmarshal(env["signed"], &s)
	payload, _ := base64.StdEncoding.DecodeString(s.Record)
	if !bytes.Contains(payload, []byte(`"private_ip6":"fd18:2::11"`)) || !bytes.Contains(payload, []byte(`"public_ip6":"fd18:0:2::11"`)) {
		t.Fatalf("signed bytes lack the IPv6 addresses: %s", payload)
	}
	got, err := r.decode(data)
	if err != nil || got.PrivateIP6 != h.PrivateIP6 || got.PublicIP6 != h.PublicIP6 {
		t.Fatalf("signed record: %+v %v", got, err)
	}

	// The plain keys rewritten by someone with write access: not believed.
	env["private_ip6"], _ = json.Marshal("fd18:2::66")
	tampered, _ := json.Marshal(env)
	if got, err := r.decode(tampered); err != nil || got.PrivateIP6 != h.PrivateIP6 {
		t.Errorf("plain private_ip6 rewritten: believed %v (err %v), want the signed %v", got.PrivateIP6, err, h.PrivateIP6)
	}
	// The signed bytes rewritten: the signature fails.
	s.Record = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte("fd18:2::11"), []byte("fd18:2::66"), 1))
	env["signed"], _ = json.Marshal(s)
	tampered, _ = json.Marshal(env)
	if got, err := r.decode(tampered); err == nil {
		t.Errorf("signed private_ip6 rewritten: accepted with %v", got.PrivateIP6)
	}
}
