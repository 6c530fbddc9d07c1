package device

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/device/handshake"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// These tests hand handshake initiations made by real wireguard-go, sent
// through meshd's Bind on loopback, to the handshake package: the inbound
// half of lazy peers against the implementation it must agree with.

// wgHost is a wireguard-go device on an in-memory TUN and meshd's Bind.
type wgHost struct {
	key  wgtypes.Key
	tun  *tuntest.ChannelTUN
	dev  *wgdevice.Device
	port uint16
	ip   netip.Addr // overlay address, only inside the test's packets
}

func newWGHost(t *testing.T, key wgtypes.Key, ip string, onInit func(netip.AddrPort, []byte)) *wgHost {
	t.Helper()
	h := &wgHost{key: key, tun: tuntest.NewChannelTUN(), ip: netip.MustParseAddr(ip)}
	h.dev = wgdevice.NewDevice(h.tun.TUN(), NewBind(BindOptions{OnInitiation: onInit}), wgdevice.NewLogger(wgdevice.LogLevelSilent, ""))
	t.Cleanup(h.dev.Close)
	h.set(t, "private_key=%s\nlisten_port=0\n", hex.EncodeToString(key[:]))
	if err := h.dev.Up(); err != nil {
		t.Fatalf("device up: %v", err)
	}
	text, err := h.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				t.Fatalf("listen port %q: %v", v, err)
			}
			h.port = uint16(p)
		}
	}
	if h.port == 0 {
		t.Fatalf("no listen port in %q", text)
	}
	return h
}

func (h *wgHost) set(t *testing.T, format string, args ...any) {
	t.Helper()
	if err := h.dev.IpcSet(fmt.Sprintf(format, args...)); err != nil {
		t.Fatalf("IpcSet: %v", err)
	}
}

func (h *wgHost) endpoint() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), h.port)
}

// addPeer configures p in h's device, reached at ep (none if invalid).
func (h *wgHost) addPeer(t *testing.T, p *wgHost, pub wgtypes.Key, ep netip.AddrPort) {
	t.Helper()
	conf := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", hex.EncodeToString(pub[:]), p.ip)
	if ep.IsValid() {
		conf += "endpoint=" + ep.String() + "\n"
	}
	h.set(t, "%s", conf)
}

func newKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type captured struct {
	from netip.AddrPort
	msg  []byte
}

func TestHandshakeIdentifiesWireGuardGoInitiator(t *testing.T) {
	aKey, bKey := newKey(t), newKey(t)
	found := make(chan handshake.Initiation, 16)
	id, err := handshake.NewIdentifier(handshake.Config{
		PrivateKey:   bKey,
		OnInitiation: func(in handshake.Initiation) { found <- in },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go id.Run(ctx)
	caps := make(chan captured, 16)
	hook := func(from netip.AddrPort, msg []byte) {
		select {
		case caps <- captured{from, bytes.Clone(msg)}:
		default:
		}
		id.Offer(from, msg)
	}
	// b is the responder with a idle: not in its device, only registered.
	b := newWGHost(t, bKey, "100.100.0.2", hook)
	a := newWGHost(t, aKey, "100.100.0.1", nil)
	id.SetPeer(a.key.PublicKey()) // registered, endpoint not known (NAT)
	a.addPeer(t, b, b.key.PublicKey(), b.endpoint())

	// A packet into a's TUN makes wireguard-go initiate a handshake to b.
	a.tun.Outbound <- tuntest.Ping(b.ip, a.ip)
	var in handshake.Initiation
	select {
	case in = <-found:
	case <-time.After(10 * time.Second):
		t.Fatalf("no initiation identified in 10s: %+v", id.Stats())
	}
	if in.Peer != a.key.PublicKey() {
		t.Fatalf("identified %s, want the initiator %s", in.Peer, a.key.PublicKey())
	}
	if in.By != handshake.ByDecryption || in.From != a.endpoint() {
		t.Errorf("identified by %s from %s, want by decryption from %s", in.By, in.From, a.endpoint())
	}
	// (a retries every 5s: on a slow run there may be more than one)
	if s := id.Stats(); s.ByDecryption == 0 || s.BadMAC1 != 0 || s.Undecryptable != 0 || s.UnknownKey != 0 {
		t.Errorf("stats %+v", s)
	}
	c := <-caps

	// The same initiation: from a registered endpoint no DH is needed; to
	// another host's key it identifies nobody.
	t.Run("by endpoint", func(t *testing.T) {
		got := identifyOnce(t, b.key, func(id *handshake.Identifier) { id.SetPeer(a.key.PublicKey(), a.endpoint()) }, c)
		if got.By != handshake.ByEndpoint || got.Peer != a.key.PublicKey() {
			t.Errorf("identified %s by %s, want %s by endpoint", got.Peer, got.By, a.key.PublicKey())
		}
	})
	t.Run("other responder key", func(t *testing.T) {
		r := handshake.NewResponder(newKey(t))
		if k, err := r.Initiator(c.msg); err != handshake.ErrMAC1 {
			t.Errorf("initiation for %s read with %s's key: %s, %v; want ErrMAC1", b.key.PublicKey(), r.PublicKey(), k, err)
		}
	})

	// An initiation wireguard-go addresses to another host's key, arriving
	// at b, is turned away at mac1 and counted.
	c3 := &wgHost{ip: netip.MustParseAddr("100.100.0.3")}
	a.addPeer(t, c3, newKey(t).PublicKey(), b.endpoint())
	a.tun.Outbound <- tuntest.Ping(c3.ip, a.ip)
	waitFor(t, 10*time.Second, "an initiation for another key refused at b", func() bool { return id.Stats().BadMAC1 == 1 })
	if s := id.Stats(); s.ByEndpoint != 0 || s.UnknownKey != 0 || s.Undecryptable != 0 {
		t.Errorf("after an initiation for another key: stats %+v", s)
	}

	// From a source nobody registered: a replay of a's initiation and
	// garbage shaped like an initiation identify nobody.
	rogue, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	garbage := make([]byte, handshake.MessageSize)
	garbage[0] = handshake.MessageType
	for _, m := range [][]byte{c.msg, garbage} {
		if _, err := rogue.WriteToUDPAddrPort(m, b.endpoint()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the replay and the garbage refused", func() bool {
		s := id.Stats()
		return s.Replayed == 1 && s.BadMAC1 == 2
	})
	if len(found) != 0 {
		in := <-found
		if in.From != a.endpoint() {
			t.Errorf("identified %s from %s after the replay", in.Peer, in.From)
		}
	}

	// What the identification is for: b brings a into its device. The
	// simplest way, enough here: configure a at the initiation's source and
	// initiate from b rather than wait ~5s for a's retry (wireguard-go
	// dropped the first initiation: a was not in the device yet). a's
	// staged ping then reaches b's TUN. (The daemon should rather hand the
	// held initiation to wireguard-go, and not trust an unauthenticated
	// source as the endpoint: bench/PROFILES.md, issue 17.)
	b.addPeer(t, a, in.Peer, in.From)
	if err := b.dev.LookupPeer(wgdevice.NoisePublicKey(in.Peer)).SendHandshakeInitiation(false); err != nil {
		t.Fatal(err)
	}
	select {
	case pkt := <-b.tun.Inbound:
		if src := netip.AddrFrom4([4]byte(pkt[12:16])); src != a.ip {
			t.Errorf("b received a packet from %s, want %s", src, a.ip)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a's first packet never reached b")
	}
}

// identifyOnce offers c to a fresh Identifier for key, set up by setup,
// and returns what it identified.
func identifyOnce(t *testing.T, key wgtypes.Key, setup func(*handshake.Identifier), c captured) handshake.Initiation {
	t.Helper()
	found := make(chan handshake.Initiation, 1)
	id, err := handshake.NewIdentifier(handshake.Config{PrivateKey: key, OnInitiation: func(in handshake.Initiation) { found <- in }})
	if err != nil {
		t.Fatal(err)
	}
	setup(id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go id.Run(ctx)
	id.Offer(c.from, c.msg)
	select {
	case in := <-found:
		return in
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing identified: %+v", id.Stats())
	}
	return handshake.Initiation{}
}
