package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestDecodeHostRefusesUnroutableUnderlay(t *testing.T) {
	for _, c := range []struct{ field, addr string }{
		{"private_ip", "127.0.0.1"},
		{"private_ip", "169.254.169.254"},
		{"private_ip", "169.254.1.1"},
		{"private_ip", "224.0.0.5"},
		{"private_ip", "0.0.0.0"},
		{"private_ip", netip.AddrFrom4([4]byte{0, 1, 2, 3}).String()}, // "this network", 0/8
		{"private_ip", "255.255.255.255"},
		{"private_ip", "100.100.3.4"}, // the overlay pool
		{"public_ip", "169.254.169.254"},
		{"public_ip", "127.0.0.2"},
		{"public_ip", "239.1.1.1"},
		{"public_ip", "100.100.0.9"},
	} {
		t.Run(c.field+"="+c.addr, func(t *testing.T) {
			h := sampleHost()
			a := netip.MustParseAddr(c.addr)
			if c.field == "private_ip" {
				h.PrivateIP = a
			} else {
				h.PublicIP = a
			}
			data, _ := json.Marshal(h)
			_, err := DecodeHost(data, testPool)
			var br *BadRecord
			if !errors.As(err, &br) || br.Reason != ReasonUnderlay {
				t.Fatalf("%s %s: got %v, want refused as %s", c.field, c.addr, err, ReasonUnderlay)
			}
			if !strings.Contains(br.Detail, c.addr) {
				t.Errorf("refusal does not name the address: %s", br.Detail)
			}
		})
	}
	// Ordinary private and public addresses pass.
	data, _ := json.Marshal(sampleHost())
	if _, err := DecodeHost(data, testPool); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeHostVersionBounds(t *testing.T) {
	for v, ok := range map[string]bool{
		"":                      true,
		"1.2.3-4-gabcdef (dev)": true,
		strings.Repeat("v", 64): true,
		strings.Repeat("v", 65): false,
		"1.0\n":                 false,
		"1.0\x1b[31m":           false,
		"1.0\u200b":             false, // zero-width space: not printable
		"1.0\x00":               false,
	} {
		h := sampleHost()
		h.Version = v
		data, _ := json.Marshal(h)
		_, err := DecodeHost(data, testPool)
		var br *BadRecord
		refused := errors.As(err, &br) && br.Reason == ReasonVersion
		if refused == ok {
			t.Errorf("version %q: err %v, want accepted=%v", v, err, ok)
		}
	}
}

func TestBoundsCheck(t *testing.T) {
	self := sampleHost()
	self.InstanceID = "me"
	b := bounds{maxGroups: 32, self: self}
	other := func(f func(h *Host)) Host {
		h := sampleHost()
		h.InstanceID, h.PrivateIP, h.PublicIP = "other", netip.MustParseAddr("198.18.2.50"), netip.MustParseAddr("198.19.2.50")
		f(&h)
		return h
	}
	groups := func(n int) []string {
		g := make([]string, n)
		for i := range g {
			g[i] = fmt.Sprintf("g%d", i)
		}
		return g
	}
	for _, c := range []struct {
		name   string
		h      Host
		reason string
	}{
		{"ordinary", other(func(h *Host) {}), ""},
		{"32 groups", other(func(h *Host) { h.Groups = groups(32) }), ""},
		{"33 groups", other(func(h *Host) { h.Groups = groups(33) }), ReasonTooManyGroups},
		{"10000 groups", other(func(h *Host) { h.Groups = groups(10000) }), ReasonTooManyGroups},
		{"my public address as public", other(func(h *Host) { h.PublicIP = self.PublicIP }), ReasonOwnAddress},
		{"my private address as public", other(func(h *Host) { h.PublicIP = self.PrivateIP }), ReasonOwnAddress},
		{"my public address as private", other(func(h *Host) { h.PrivateIP = self.PublicIP }), ReasonOwnAddress},
		{"my private address in my network", other(func(h *Host) { h.PrivateIP = self.PrivateIP }), ReasonOwnAddress},
		// Private ranges overlap between networks: not a claim on mine.
		{"my private address in another network", other(func(h *Host) { h.PrivateIP, h.Network = self.PrivateIP, "dc" }), ""},
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

// viewOf is the accepted ids, sorted.
func viewOf(v *view) string {
	var hs []*Host
	for _, h := range v.hosts {
		hs = append(hs, h)
	}
	return ids(hs)
}

func TestViewKeyClashes(t *testing.T) {
	now := time.Unix(1700000000, 0)
	v := newView()
	put := func(h Host) []change { c, _ := v.put(h.InstanceID, &h, "node/"+h.InstanceID, now); return c }
	a, b := hostFor("a", "vpc", 1), hostFor("b", "vpc", 2)
	put(a)
	put(b)
	if got := viewOf(v); got != "a b" {
		t.Fatalf("view %q", got)
	}

	// x copies b's public key: both are refused, b leaves the view.
	x := hostFor("x", "vpc", 3)
	x.PublicKey = b.PublicKey
	ch, began := v.put("x", &x, "node/x", now)
	if got := viewOf(v); got != "a" {
		t.Errorf("view with a duplicate key: %q, want a", got)
	}
	if len(ch) != 1 || ch[0].id != "b" || ch[0].cur != nil {
		t.Errorf("changes: %+v, want b removed", ch)
	}
	if len(began) != 2 || v.clash["b"].Reason != ReasonDuplicateKey || v.clash["x"].Reason != ReasonDuplicateKey {
		t.Errorf("clashes: %+v", v.clash)
	}
	if !strings.Contains(v.clash["x"].Detail, "b's") || v.clash["x"].Node != "node/x" {
		t.Errorf("refusal of x does not name b or its node: %+v", v.clash["x"])
	}
	// x goes: b is accepted again.
	ch, _ = v.put("x", nil, "", now)
	if got := viewOf(v); got != "a b" || len(v.clash) != 0 {
		t.Errorf("after the clash ended: view %q, clashes %v", got, v.clash)
	}
	if len(ch) != 1 || ch[0].id != "b" || ch[0].old != nil {
		t.Errorf("changes: %+v, want b added", ch)
	}
	// Again, and this time x changes key: the clash ends as well.
	put(x)
	x.PublicKey = hostFor("x", "vpc", 3).PublicKey
	put(x)
	if got := viewOf(v); got != "a b x" {
		t.Errorf("after x changed key: %q", got)
	}

	// y announces a's key as its next key: y is refused, a stays.
	y := hostFor("y", "vpc", 4)
	stolen := a.PublicKey
	y.NextPublicKey = &stolen
	put(y)
	if got := viewOf(v); got != "a b x" || v.clash["y"].Reason != ReasonNextKey {
		t.Errorf("next key stolen: view %q, clashes %v", got, v.clash)
	}
	// Its own key as next key is no clash (a rotation's last step).
	own := y.PublicKey
	y.NextPublicKey = &own
	put(y)
	if got := viewOf(v); got != "a b x y" {
		t.Errorf("next key = own key: view %q", got)
	}
	// An honest rotation: next key announced, then promoted.
	next := hostFor("a", "vpc", 1).PublicKey
	a.NextPublicKey = &next
	put(a)
	a.PublicKey, a.NextPublicKey = next, nil
	put(a)
	if got := viewOf(v); got != "a b x y" || len(v.clash) != 0 {
		t.Errorf("rotation: view %q, clashes %v", got, v.clash)
	}
}

// TestViewChangeIsO1: with many hosts, one change re-judges only the hosts
// that share its keys.
func TestViewChangeIsO1(t *testing.T) {
	v := newView()
	for i := 0; i < 5000; i++ {
		k, _ := wgtypes.GenerateKey()
		h := Host{InstanceID: fmt.Sprintf("h%d", i), PublicKey: k}
		v.put(h.InstanceID, &h, "", time.Time{})
	}
	k, _ := wgtypes.GenerateKey()
	h := Host{InstanceID: "h42", PublicKey: k}
	ch, _ := v.put("h42", &h, "", time.Time{})
	if len(ch) != 1 {
		t.Errorf("one key change produced %d changes", len(ch))
	}
	if len(v.byKey) != 5000 {
		t.Errorf("key index holds %d keys, want 5000 (the old key dropped)", len(v.byKey))
	}
}

// TestSnapshotHostsChecked: the snapshot is checked like ZooKeeper's
// records (it may predate a lower registry.max_groups): refused hosts are
// not in the view and Refused names them.
func TestSnapshotHostsChecked(t *testing.T) {
	dir := t.TempDir()
	ok, many, twin, mine := hostFor("ok", "vpc", 1), hostFor("many", "vpc", 2), hostFor("twin", "vpc", 3), hostFor("mine", "vpc", 4)
	many.Groups = []string{"a", "b", "c"}
	twin.PublicKey = ok.PublicKey
	self := hostFor("self", "vpc", 9)
	mine.PrivateIP = self.PrivateIP
	s := snapshot{SavedAt: time.Now().UTC()}
	for i, h := range []Host{ok, many, twin, mine} {
		h.Schema, h.OverlayIP = Schema, netip.AddrFrom4([4]byte{100, 100, 1, byte(i + 1)})
		s.Hosts = append(s.Hosts, h)
	}
	data, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, SnapshotFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens on loopback port 1: ZooKeeper is down.
	r, err := Open(context.Background(), Options{Servers: []string{"127.0.0.1:1"}, Mesh: "chk", Pool: testPool, StateDir: dir,
		MaxGroups: 2, Self: self})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := ids(r.Hosts()); got != "" {
		t.Errorf("view %q, want empty (ok and twin share a key)", got)
	}
	var got []string
	for _, f := range r.Refused() {
		got = append(got, f.Host+":"+f.Reason)
	}
	want := "many:too_many_groups mine:own_address ok:duplicate_key twin:duplicate_key"
	if strings.Join(got, " ") != want {
		t.Errorf("refused %v, want %s", got, want)
	}
	if c := r.Stats().BadRecordCounts(); c[ReasonDuplicateKey] != 2 || c[ReasonTooManyGroups] != 1 || c[ReasonOwnAddress] != 1 {
		t.Errorf("counts %v", c)
	}
}
