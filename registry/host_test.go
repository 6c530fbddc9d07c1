package registry

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/name"
)

var testPool = netip.MustParsePrefix("100.100.0.0/16")

func sampleHost() Host {
	k, _ := wgtypes.GeneratePrivateKey()
	return Host{Schema: Schema, InstanceID: "i-0abc", OverlayIP: netip.MustParseAddr("100.100.0.7"), PublicKey: k.PublicKey(),
		Network: "vpc", PrivateIP: netip.MustParseAddr("198.18.2.11"), PublicIP: netip.MustParseAddr("198.19.2.11"),
		ListenPort: 51820, Groups: []string{"web"}, Version: "1.0", StartTime: time.Unix(1700000000, 0).UTC()}
}

func TestHostRoundTrip(t *testing.T) {
	h := sampleHost()
	next := h.PublicKey
	h.NextPublicKey = &next
	data, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHost(data, testPool)
	if err != nil {
		t.Fatal(err)
	}
	if got.InstanceID != h.InstanceID || got.PublicKey != h.PublicKey || *got.NextPublicKey != next || got.PublicIP != h.PublicIP || !got.StartTime.Equal(h.StartTime) {
		t.Errorf("round trip: %+v", got)
	}
	// No public address: omitted, decoded as zero.
	h.PublicIP = netip.Addr{}
	data, _ = json.Marshal(h)
	if got, err := DecodeHost(data, testPool); err != nil || got.PublicIP.IsValid() {
		t.Errorf("host without public address: %+v %v", got, err)
	}
}

func TestDecodeHostRejects(t *testing.T) {
	good, _ := json.Marshal(sampleHost())
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name, reason string
		data         []byte
	}{
		{"not json", "decode", []byte("{not json")},
		{"unknown schema", "schema", edit(func(m map[string]any) { m["schema"] = 99 })},
		{"address outside pool", "overlay_ip", edit(func(m map[string]any) { m["overlay_ip"] = "100.101.0.1" })},
		{"short key", "public_key", edit(func(m map[string]any) { m["public_key"] = "AAAA" })},
		{"zero key", "public_key", edit(func(m map[string]any) { m["public_key"] = wgtypes.Key{}.String() })},
		{"bad next key", "public_key", edit(func(m map[string]any) { m["next_public_key"] = "x" })},
		{"bad id", "instance_id", edit(func(m map[string]any) { m["instance_id"] = "../etc" })},
		{"no network", "network", edit(func(m map[string]any) { delete(m, "network") })},
		{"ipv6 private", "address", edit(func(m map[string]any) { m["private_ip"] = "2001:db8::1" })},
		{"bad public", "address", edit(func(m map[string]any) { m["public_ip"] = "nope" })},
		{"port zero", "listen_port", edit(func(m map[string]any) { m["listen_port"] = 0 })},
		{"bad group", "groups", edit(func(m map[string]any) { m["groups"] = []string{"a b"} })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeHost(c.data, testPool)
			var br *BadRecord
			if !errors.As(err, &br) || br.Reason != c.reason {
				t.Errorf("got %v, want a bad record for %s", err, c.reason)
			}
		})
	}
}

// FuzzDecodeHost: no input may panic, and whatever decodes must satisfy the
// checks the mesh relies on.
func FuzzDecodeHost(f *testing.F) {
	good, _ := json.Marshal(sampleHost())
	f.Add(good)
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHost(data, testPool)
		if err != nil {
			return
		}
		if !testPool.Contains(h.OverlayIP) || h.PublicKey == (wgtypes.Key{}) || !name.Valid(h.InstanceID) || h.ListenPort == 0 {
			t.Fatalf("accepted a bad record: %+v", h)
		}
	})
}

// TestSameRecordSeesEveryField changes each field of a record in turn:
// sameRecord compares field by field, so a field added to Host and not to
// it would make a changed record look the same and its update be lost.
func TestSameRecordSeesEveryField(t *testing.T) {
	base := sampleHost()
	base.NextPublicKey = &base.PublicKey
	base.Groups = []string{"web"}
	base.PrivateIP6 = netip.MustParseAddr("fd18::11")
	base.PublicIP6 = netip.MustParseAddr("fd19::11")
	base.Seq, base.CertSerial = 3, "0a"
	base.signed = &signedJSON{Record: "r", Sig: "s", Chain: []string{"c"}}
	if !sameRecord(base, base) {
		t.Fatal("a record differs from itself")
	}
	other := sampleHost() // every field set differently where it can be
	other.InstanceID, other.Network, other.Version = "i-0def", "dc", "v2"
	other.OverlayIP = netip.MustParseAddr("100.100.0.8")
	other.PrivateIP, other.PublicIP = netip.MustParseAddr("198.18.2.12"), netip.MustParseAddr("198.19.2.12")
	k, _ := wgtypes.GeneratePrivateKey()
	other.NextPublicKey, other.PublicKey = &other.PublicKey, k.PublicKey()
	other.ListenPort, other.Groups = 51821, []string{"db"}
	other.StartTime = base.StartTime.Add(time.Second)
	other.PrivateIP6, other.PublicIP6 = netip.MustParseAddr("fd18::12"), netip.MustParseAddr("fd19::12")
	other.Schema, other.Seq, other.CertSerial = Schema+1, 4, "0b"
	other.signed = &signedJSON{Record: "r2", Sig: "s", Chain: []string{"c"}}
	bv, ov := reflect.ValueOf(&base).Elem(), reflect.ValueOf(&other).Elem()
	for i := range bv.NumField() {
		name := bv.Type().Field(i).Name
		changed := base
		cv := reflect.ValueOf(&changed).Elem().Field(i)
		// Unexported fields are set through their address: this test is the
		// package's own.
		reflect.NewAt(cv.Type(), cv.Addr().UnsafePointer()).Elem().Set(reflect.NewAt(cv.Type(), ov.Field(i).Addr().UnsafePointer()).Elem())
		if sameRecord(base, changed) {
			t.Errorf("records differing in %s compare the same", name)
		}
	}
	// What the wire form does not tell apart is the same record.
	unset := base
	unset.Schema = 0
	if !sameRecord(unset, base) {
		t.Error("an unset schema made a record differ")
	}
	none, empty := base, base
	none.Groups, empty.Groups = nil, []string{}
	if !sameRecord(none, empty) {
		t.Error("nil and empty groups made a record differ")
	}
}
