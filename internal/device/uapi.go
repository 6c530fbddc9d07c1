package device

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is the configuration of one WireGuard peer.
type Peer struct {
	PublicKey           wgtypes.Key
	Endpoint            netip.AddrPort // zero: no endpoint (the peer must call us)
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration
}

// Delta is a change to the peer set: peers added or updated, peers removed.
// It never replaces the whole set, so peers it does not name keep their
// sessions untouched.
type Delta struct {
	Upsert []Peer
	Remove []wgtypes.Key
}

// Empty reports whether the delta changes nothing.
func (d Delta) Empty() bool { return len(d.Upsert) == 0 && len(d.Remove) == 0 }

// PeerStats is what the device reports about one peer.
type PeerStats struct {
	Endpoint            netip.AddrPort
	LastHandshake       time.Time // zero if never
	RxBytes, TxBytes    uint64
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration
}

// uapiText renders a delta in the UAPI set protocol. Upserting a peer that
// exists updates it in place: wireguard-go keeps its session and counters.
func (d Delta) uapiText() string {
	var b strings.Builder
	for _, k := range d.Remove {
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", hex.EncodeToString(k[:]))
	}
	for _, p := range d.Upsert {
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Endpoint.IsValid() {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String()
}

// parseStats reads the peers out of a UAPI get response. It runs every
// tick on every peer in the device, so it reads the bytes in place: no
// copy of the text, no string per line.
func parseStats(text []byte) (map[wgtypes.Key]PeerStats, error) {
	out := map[wgtypes.Key]PeerStats{}
	var key wgtypes.Key
	var cur *PeerStats
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			out[key] = *cur
		}
	}
	for len(text) > 0 {
		var line []byte
		line, text, _ = bytes.Cut(text, []byte{'\n'})
		kb, vb, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		if string(kb) == "public_key" {
			flush()
			// Length first: hex.Decode writes len(vb)/2 bytes.
			if len(vb) != 2*wgtypes.KeyLen {
				return nil, fmt.Errorf("uapi: bad public_key %q", vb)
			}
			if _, err := hex.Decode(key[:], vb); err != nil {
				return nil, fmt.Errorf("uapi: bad public_key %q", vb)
			}
			cur, sec, nsec = &PeerStats{}, 0, 0
			continue
		}
		if cur == nil {
			continue // device-level keys
		}
		var err error
		k, v := string(kb), string(vb)
		switch k {
		case "endpoint":
			cur.Endpoint, err = netip.ParseAddrPort(v)
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.RxBytes, err = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			cur.TxBytes, err = strconv.ParseUint(v, 10, 64)
		case "persistent_keepalive_interval":
			var s int
			s, err = strconv.Atoi(v)
			cur.PersistentKeepalive = time.Duration(s) * time.Second
		case "allowed_ip":
			var p netip.Prefix
			p, err = netip.ParsePrefix(v)
			cur.AllowedIPs = append(cur.AllowedIPs, p)
		}
		if err != nil {
			return nil, fmt.Errorf("uapi: bad %s=%q: %v", k, v, err)
		}
	}
	flush()
	return out, nil
}
