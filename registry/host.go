package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/name"
)

// Schema is the host record version this build writes and reads.
const Schema = 1

// Host is one host's record.
type Host struct {
	Schema        int
	InstanceID    string
	OverlayIP     netip.Addr
	PublicKey     wgtypes.Key
	NextPublicKey *wgtypes.Key // published before a key rotation takes effect
	Network       string
	PrivateIP     netip.Addr
	PublicIP      netip.Addr // zero: no public address
	ListenPort    uint16
	Groups        []string
	Version       string
	StartTime     time.Time
	// IPv6 underlay addresses, optional. The firewall admits members'
	// WireGuard datagrams and, by the policy, their traffic from these;
	// WireGuard endpoints stay on the IPv4 addresses above.
	PrivateIP6 netip.Addr
	PublicIP6  netip.Addr

	// Set when the record was signed under the fleet CA (trust): its
	// sequence, which only increases, and the certificate's serial. Groups
	// and Network then come from the certificate, not from the record.
	Seq        uint64
	CertSerial string
	signed     *signedJSON // the signature as stored, kept for the snapshot
}

type hostJSON struct {
	Schema        int        `json:"schema"`
	InstanceID    string     `json:"instance_id"`
	OverlayIP     netip.Addr `json:"overlay_ip"`
	PublicKey     string     `json:"public_key"`
	NextPublicKey string     `json:"next_public_key,omitempty"`
	Network       string     `json:"network"`
	PrivateIP     netip.Addr `json:"private_ip"`
	PublicIP      string     `json:"public_ip,omitempty"`
	ListenPort    uint16     `json:"listen_port"`
	Groups        []string   `json:"groups,omitempty"`
	Version       string     `json:"version,omitempty"`
	StartTime     time.Time  `json:"start_time"`
	// Added with IPv6 underlay addresses; omitted when empty, so a record
	// without them is byte for byte what the previous release wrote, and
	// the previous release ignores them.
	PrivateIP6 string `json:"private_ip6,omitempty"`
	PublicIP6  string `json:"public_ip6,omitempty"`
	// Added by trust; a reader that predates them ignores them.
	Seq    uint64      `json:"seq,omitempty"`
	Signed *signedJSON `json:"signed,omitempty"`
}

// MarshalJSON writes the record in its wire form.
func (h Host) MarshalJSON() ([]byte, error) {
	j := hostJSON{Schema: h.Schema, InstanceID: h.InstanceID, OverlayIP: h.OverlayIP, PublicKey: h.PublicKey.String(),
		Network: h.Network, PrivateIP: h.PrivateIP, ListenPort: h.ListenPort, Groups: h.Groups, Version: h.Version, StartTime: h.StartTime,
		Seq: h.Seq, Signed: h.signed}
	if j.Schema == 0 {
		j.Schema = Schema
	}
	if h.NextPublicKey != nil {
		j.NextPublicKey = h.NextPublicKey.String()
	}
	if h.PublicIP.IsValid() {
		j.PublicIP = h.PublicIP.String()
	}
	if h.PrivateIP6.IsValid() {
		j.PrivateIP6 = h.PrivateIP6.String()
	}
	if h.PublicIP6.IsValid() {
		j.PublicIP6 = h.PublicIP6.String()
	}
	return json.Marshal(j)
}

// BadRecord is why a record was skipped.
type BadRecord struct {
	Reason string // short, bounded set: used as a metric label
	Detail string
}

func (b *BadRecord) Error() string { return b.Reason + ": " + b.Detail }

func bad(reason, format string, args ...any) error {
	return &BadRecord{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// DecodeHost parses and checks a record: its format, underlay addresses
// (IPv4, and the optional IPv6 ones, never IPv4-mapped) that are routable
// unicast outside pool (which also bounds the overlay address), a short
// printable version. Every failure is a *BadRecord. The bounds that depend
// on this host (group count, its own addresses) and on other records (key
// clashes) are the Registry's.
func DecodeHost(data []byte, pool netip.Prefix) (Host, error) {
	var j hostJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Host{}, bad("decode", "%v", err)
	}
	if j.Schema != Schema {
		return Host{}, bad("schema", "unknown schema %d (this meshd reads %d)", j.Schema, Schema)
	}
	h := Host{Schema: j.Schema, InstanceID: j.InstanceID, OverlayIP: j.OverlayIP, Network: j.Network, PrivateIP: j.PrivateIP,
		ListenPort: j.ListenPort, Groups: j.Groups, Version: j.Version, StartTime: j.StartTime, Seq: j.Seq}
	if !name.Valid(h.InstanceID) {
		return Host{}, bad("instance_id", "bad instance id %q", h.InstanceID)
	}
	if !h.OverlayIP.Is4() || !pool.Contains(h.OverlayIP) {
		return Host{}, bad("overlay_ip", "overlay address %s outside the pool %s", h.OverlayIP, pool)
	}
	var err error
	if h.PublicKey, err = parseKey(j.PublicKey); err != nil {
		return Host{}, bad("public_key", "public key: %v", err)
	}
	if j.NextPublicKey != "" {
		k, err := parseKey(j.NextPublicKey)
		if err != nil {
			return Host{}, bad("public_key", "next public key: %v", err)
		}
		h.NextPublicKey = &k
	}
	if !name.Valid(h.Network) {
		return Host{}, bad("network", "bad network %q", h.Network)
	}
	if !h.PrivateIP.Is4() {
		return Host{}, bad("address", "private address %v is not IPv4", h.PrivateIP)
	}
	if err := checkUnderlay("private", h.PrivateIP, pool); err != nil {
		return Host{}, err
	}
	if j.PublicIP != "" {
		if h.PublicIP, err = netip.ParseAddr(j.PublicIP); err != nil || !h.PublicIP.Is4() {
			return Host{}, bad("address", "public address %q is not IPv4", j.PublicIP)
		}
		if err := checkUnderlay("public", h.PublicIP, pool); err != nil {
			return Host{}, err
		}
	}
	if h.PrivateIP6, err = decodeIP6("private", j.PrivateIP6, pool); err != nil {
		return Host{}, err
	}
	if h.PublicIP6, err = decodeIP6("public", j.PublicIP6, pool); err != nil {
		return Host{}, err
	}
	if h.ListenPort == 0 {
		return Host{}, bad("listen_port", "listen port 0")
	}
	if err := checkVersion(h.Version); err != nil {
		return Host{}, err
	}
	for _, g := range h.Groups {
		if !name.Valid(g) {
			return Host{}, bad("groups", "bad group %q", g)
		}
	}
	return h, nil
}

// decodeIP6 reads an optional IPv6 underlay address: "" is none. An
// IPv4-mapped address is refused: it would land in the IPv4 sets under an
// IPv6 name, and an IPv4 address has its own field.
func decodeIP6(what, s string, pool netip.Prefix) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || !a.Is6() || a.Zone() != "":
		return netip.Addr{}, bad("address", "%s IPv6 address %q is not an IPv6 address", what, s)
	case a.Is4In6():
		return netip.Addr{}, bad(ReasonUnderlay, "%s IPv6 address %s is IPv4-mapped", what, a)
	}
	return a, checkUnderlay(what+" IPv6", a, pool)
}

func parseKey(s string) (wgtypes.Key, error) {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		return k, errors.New("not 32 bytes of base64")
	}
	if k == (wgtypes.Key{}) {
		return k, errors.New("all zero")
	}
	return k, nil
}
