package device

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func testKey(b byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = b
	}
	return k
}

func TestDeltaText(t *testing.T) {
	d := Delta{
		Upsert: []Peer{{
			PublicKey:           testKey(1),
			Endpoint:            netip.MustParseAddrPort("198.19.2.11:51820"),
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("100.100.0.7/32")},
			PersistentKeepalive: 25 * time.Second,
		}, {PublicKey: testKey(2)}},
		Remove: []wgtypes.Key{testKey(3)},
	}
	want := "public_key=0303030303030303030303030303030303030303030303030303030303030303\nremove=true\n" +
		"public_key=0101010101010101010101010101010101010101010101010101010101010101\nendpoint=198.19.2.11:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=100.100.0.7/32\n" +
		"public_key=0202020202020202020202020202020202020202020202020202020202020202\npersistent_keepalive_interval=0\nreplace_allowed_ips=true\n"
	if got := d.uapiText(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if containsReplacePeers := (Delta{Upsert: []Peer{{}}}).uapiText(); strings.Contains(containsReplacePeers, "replace_peers") {
		t.Error("a delta must never replace the peer set")
	}
}

func TestParseStats(t *testing.T) {
	text := "private_key=aa\nlisten_port=51820\n" +
		"public_key=0101010101010101010101010101010101010101010101010101010101010101\nendpoint=198.19.2.11:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=100.100.0.7/32\n" +
		"public_key=0202020202020202020202020202020202020202020202020202020202020202\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
	got, err := parseStats([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p := got[testKey(1)]
	if p.Endpoint.String() != "198.19.2.11:51820" || p.RxBytes != 20 || p.TxBytes != 10 || p.PersistentKeepalive != 25*time.Second ||
		!p.LastHandshake.Equal(time.Unix(1700000000, 5)) || len(p.AllowedIPs) != 1 {
		t.Errorf("peer 1 = %+v", p)
	}
	if q, ok := got[testKey(2)]; !ok || !q.LastHandshake.IsZero() || q.Endpoint.IsValid() {
		t.Errorf("peer 2 = %+v (present %v)", q, ok)
	}
	if _, err := parseStats([]byte("public_key=zz\n")); err == nil {
		t.Error("bad key accepted")
	}
	// Too long a key is refused, not decoded past the key's 32 bytes.
	if _, err := parseStats([]byte("public_key=" + strings.Repeat("01", 40) + "\n")); err == nil {
		t.Error("overlong key accepted")
	}
	if _, err := parseStats([]byte("public_key=0101010101010101010101010101010101010101010101010101010101010101\nrx_bytes=-1\n")); err == nil {
		t.Error("bad counter accepted")
	}
}
