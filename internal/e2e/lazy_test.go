package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/device/handshake"
	"github.com/meshd/meshd/internal/keys"
	"github.com/meshd/meshd/internal/testbed"
)

// synRetrans is the host's count of retransmitted SYNs.
func synRetrans(t *testing.T, h *testbed.Host) int {
	t.Helper()
	n, err := h.SynRetransmits()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wgPeers is how many peers the host's WireGuard device holds.
func wgPeers(t *testing.T, m *testbed.Meshd) int {
	t.Helper()
	out, err := m.Host.Run(context.Background(), "wg", "show", m.Iface, "peers")
	if err != nil {
		t.Fatalf("wg show: %v\n%s", err, out)
	}
	return len(strings.Fields(out))
}

// TestLazyPeers: lazy peers are the default (issue 17): hosts whose config
// has no peers block say so in their status and know each other (meshctl
// peers says idle) but hold none in their WireGuard devices until traffic.
// The first TCP connection, both sides idle to each other, goes through
// without a SYN retransmission; the answering side was brought in by the
// initiation alone; a third host's first ping is answered.
func TestLazyPeers(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for _, n := range []string{"vpc", "vpc", "classic"} {
		ms = append(ms, startHost(t, tb, n, testbed.MeshdOptions{Groups: []string{n}, LogLevel: "debug"}))
	}
	a, b, c := ms[0], ms[1], ms[2]
	for _, m := range ms {
		if cfg, err := os.ReadFile(m.Config); err != nil || strings.Contains(string(cfg), "peers:") {
			t.Fatalf("%s's config has a peers block (or is unreadable: %v): this test is of the default", m.Host.Name, err)
		}
		if st, err := m.Status(); err != nil || st.Lazy == nil {
			t.Fatalf("%s, no peers block in its config: status has no lazy object (%v): lazy peers are not the default", m.Host.Name, err)
		}
	}
	waitFor(t, 20*time.Second, "every host to list the others idle", func() error {
		for _, m := range ms {
			ps, err := m.Peers()
			if err != nil {
				return err
			}
			if len(ps) != 2 {
				return fmt.Errorf("%s lists %d peers", m.Host.Name, len(ps))
			}
			for _, p := range ps {
				if p.State != "idle" {
					return fmt.Errorf("%s lists %s %s", m.Host.Name, p.Name, p.State)
				}
			}
		}
		return nil
	})
	for _, m := range ms {
		if n := wgPeers(t, m); n != 0 {
			t.Errorf("%s's WireGuard device holds %d peers before any traffic", m.Host.Name, n)
		}
	}

	// a -> b over TCP: a's SYN is held and sent on, b brings a in on a's
	// initiation.
	bo, _ := peerOf(a, b.Host.Name)
	listen(t, b.Host, "0.0.0.0", 7001)
	retrans := synRetrans(t, a.Host)
	start := time.Now()
	out, err := a.Host.Run(context.Background(), "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+bo.OverlayIP+"/7001")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("first connection to an idle peer: %v\n%s", err, out)
	}
	t.Logf("first TCP connection, both sides idle: %s", took)
	if n := synRetrans(t, a.Host) - retrans; n != 0 {
		t.Errorf("the first SYN was retransmitted %d times (took %s): lost, not held", n, took)
	}
	if took >= time.Second {
		t.Errorf("first connection took %s: it waited for a retransmission", took)
	}
	if na, nb, nc := wgPeers(t, a), wgPeers(t, b), wgPeers(t, c); na != 1 || nb != 1 || nc != 0 {
		t.Errorf("device peers after a->b: a %d, b %d, c %d; want 1, 1, 0", na, nb, nc)
	}
	if p, _ := peerOf(a, c.Host.Name); p.State != "idle" {
		t.Errorf("a lists c %s after talking only to b", p.State)
	}
	// What the operator reads on a.
	out, err = meshctl(t, a, "status")
	if err != nil || !strings.Contains(out, "1 in the device, 1 idle (out after 5m0s without traffic)") {
		t.Errorf("meshctl status on a, want its lazy peers line: %v\n%s", err, out)
	}

	// c -> a across networks (public path): first ping answered.
	ao, _ := peerOf(c, a.Host.Name)
	if out, err := c.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", ao.OverlayIP); err != nil || !strings.Contains(out, "1 received") {
		t.Errorf("first ping from c to idle a: %v\n%s", err, out)
	}
	waitFor(t, 5*time.Second, "a and c to list each other up", func() error {
		for _, pair := range [][2]*testbed.Meshd{{a, c}, {c, a}} {
			p, err := peerOf(pair[0], pair[1].Host.Name)
			if err != nil {
				return err
			}
			if p.State != "up" {
				return fmt.Errorf("%s lists %s %s", pair[0].Host.Name, pair[1].Host.Name, p.State)
			}
		}
		return nil
	})
}

// lazyIdle is the idle time the reap tests give meshd through the test-only
// MESHD_DEBUG_IDLE_AFTER (the config's floor is over 3m).
const lazyIdle = 5 * time.Second

// reapLimit bounds the wait for a reap after traffic: the last data
// received is answered by WireGuard's passive keepalive 10 s later, which
// is traffic too, then lazyIdle, then a reconciler tick; the rest is margin
// for a loaded machine.
const reapLimit = 45 * time.Second

// startLazy starts meshd with lazy peers and a lazyIdle idle time on a new
// host in network, vpc and dc joined by a link.
func startLazy(t *testing.T, tb *testbed.Testbed, network string, o testbed.MeshdOptions) *testbed.Meshd {
	t.Helper()
	o.Groups, o.Links = []string{network}, [][]string{{"vpc", "dc"}}
	o.Extra = "peers:\n  lazy: true\n"
	o.Env = append(o.Env, "MESHD_DEBUG_IDLE_AFTER="+lazyIdle.String())
	return startHost(t, tb, network, o)
}

// allIdle says why not, unless every host in ms lists every other idle
// and its WireGuard device holds no peer (`wg show <iface> peers`).
func allIdle(ms []*testbed.Meshd) error {
	for _, m := range ms {
		ps, err := m.Peers()
		if err != nil {
			return err
		}
		if len(ps) != len(ms)-1 {
			return fmt.Errorf("%s lists %d peers, want %d", m.Host.Name, len(ps), len(ms)-1)
		}
		for _, p := range ps {
			if p.State != "idle" {
				return fmt.Errorf("%s lists %s %s", m.Host.Name, p.Name, p.State)
			}
		}
		out, err := m.Host.Run(context.Background(), "wg", "show", m.Iface, "peers")
		if err != nil {
			return err
		}
		if n := len(strings.Fields(out)); n != 0 {
			return fmt.Errorf("%s's WireGuard device holds %d peers", m.Host.Name, n)
		}
	}
	return nil
}

// firstConnect opens a TCP connection from one host to another's overlay
// address, to which it is idle: the first SYN must go through, held and
// sent on, not retransmitted, and both sides must then be up on the path
// their networks give.
func firstConnect(t *testing.T, from, to *testbed.Meshd, port int) {
	t.Helper()
	p, err := peerOf(from, to.Host.Name)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != "idle" {
		t.Fatalf("%s lists %s %s before the connection, want idle", from.Host.Name, to.Host.Name, p.State)
	}
	want, _ := wantPath(from, to)
	retrans := synRetrans(t, from.Host)
	start := time.Now()
	out, err := from.Host.Run(context.Background(), "timeout", "5", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", p.OverlayIP, port))
	took := time.Since(start)
	if err != nil {
		t.Errorf("%s -> %s (%s): first connection to an idle peer: %v\n%s", from.Host.Name, to.Host.Name, want, err, out)
		return
	}
	t.Logf("%s -> %s (%s path): first TCP connection to the idle peer in %s", from.Host.Name, to.Host.Name, want, took.Round(time.Millisecond))
	if n := synRetrans(t, from.Host) - retrans; n != 0 {
		t.Errorf("%s -> %s (%s): the first SYN was retransmitted %d times (took %s): lost, not held", from.Host.Name, to.Host.Name, want, n, took)
	}
	if took >= time.Second {
		t.Errorf("%s -> %s (%s): first connection took %s: it waited for a retransmission", from.Host.Name, to.Host.Name, want, took)
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%s and %s up on the %s path", from.Host.Name, to.Host.Name, want), func() error {
		for _, pair := range [][2]*testbed.Meshd{{from, to}, {to, from}} {
			p, err := peerOf(pair[0], pair[1].Host.Name)
			if err != nil {
				return err
			}
			if p.State != "up" || p.Path != want {
				return fmt.Errorf("%s lists %s %s on path %q", pair[0].Host.Name, pair[1].Host.Name, p.State, p.Path)
			}
		}
		return nil
	})
}

// TestLazyPeersReaped: with a short idle time (the test-only override;
// a bad value of it fails meshd's start), peers that talked and fell
// quiet are reaped: gone from `wg show` on both sides and idle in `meshctl
// peers -o json`. A host then reaches each reaped peer at once, the first
// SYN held and sent on, over the private, link and public paths; reaped
// again, each peer reaches the host at once the other way.
func TestLazyPeersReaped(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})

	// A bad override is a startup error that names it.
	h, err := tb.AddHost("classic")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Extra: "peers:\n  lazy: true\n", Env: []string{"MESHD_DEBUG_IDLE_AFTER=soon"}}); err == nil {
		m.Proc.Kill()
		t.Fatal("meshd started with MESHD_DEBUG_IDLE_AFTER=soon")
	} else if !strings.Contains(err.Error(), `MESHD_DEBUG_IDLE_AFTER="soon"`) {
		t.Errorf("meshd with MESHD_DEBUG_IDLE_AFTER=soon: want a start error naming it, got %v", err)
	}

	a := startLazy(t, tb, "vpc", testbed.MeshdOptions{})
	b := startLazy(t, tb, "vpc", testbed.MeshdOptions{})     // a-b: private path
	c := startLazy(t, tb, "dc", testbed.MeshdOptions{})      // a-c: link path
	d := startLazy(t, tb, "classic", testbed.MeshdOptions{}) // a-d: public path
	ms, others := []*testbed.Meshd{a, b, c, d}, []*testbed.Meshd{b, c, d}
	waitFor(t, 20*time.Second, "every host to list the others idle, its device empty", func() error { return allIdle(ms) })
	for _, m := range ms {
		listen(t, m.Host, "0.0.0.0", 7001)
	}
	if st, err := a.Status(); err != nil || st.Lazy == nil || st.Lazy.IdleAfter != lazyIdle.String() {
		t.Fatalf("a's status does not report the overridden idle time %s: %v %+v", lazyIdle, err, st.Lazy)
	}
	if log, _ := os.ReadFile(a.Log); !warned(string(log), "MESHD_DEBUG_IDLE_AFTER overrides peers.idle_after; for tests only", "reject-after") {
		t.Errorf("a's log has no warning that the override is for tests and below reject-after:\n%s", a.LogTail(20))
	}

	// Traffic: a pings each peer once; all are in the devices.
	for _, m := range others {
		p, _ := peerOf(a, m.Host.Name)
		if out, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", p.OverlayIP); err != nil || !strings.Contains(out, "1 received") {
			t.Fatalf("first ping from a to idle %s: %v\n%s", m.Host.Name, err, out)
		}
	}
	if n := wgPeers(t, a); n != 3 {
		t.Fatalf("a's device holds %d peers after pinging three, want 3", n)
	}
	for _, m := range others {
		if n := wgPeers(t, m); n != 1 {
			t.Fatalf("%s's device holds %d peers after a's ping, want 1", m.Host.Name, n)
		}
	}

	// Quiet: every peer is reaped on both sides.
	took := waitFor(t, reapLimit, "every peer reaped on both sides", func() error { return allIdle(ms) })
	t.Logf("reaped on both sides %s after the last ping (idle time %s)", took.Round(100*time.Millisecond), lazyIdle)
	out, err := meshctl(t, a, "peers", "-o", "json")
	var ps []admin.Peer
	if err == nil {
		err = json.Unmarshal([]byte(out), &ps)
	}
	if err != nil || len(ps) != 3 {
		t.Fatalf("meshctl peers -o json on a: %v (%d peers)\n%s", err, len(ps), out)
	}
	for _, p := range ps {
		if p.State != "idle" {
			t.Errorf("meshctl peers -o json on a lists %s %s after the reap, want idle", p.Name, p.State)
		}
	}
	if out, err := meshctl(t, a, "status"); err != nil || !strings.Contains(out, "0 in the device, 3 idle (out after 5s without traffic)") {
		t.Errorf("meshctl status on a after the reap: %v\n%s", err, out)
	}

	// a reaches each reaped peer at once: private, link, public.
	for _, m := range others {
		firstConnect(t, a, m, 7001)
	}
	took = waitFor(t, reapLimit, "every peer reaped again", func() error { return allIdle(ms) })
	t.Logf("reaped again %s after the connections", took.Round(100*time.Millisecond))
	// Each reaped peer reaches a at once: the other direction.
	for _, m := range others {
		firstConnect(t, m, a, 7001)
	}
}

// warned reports whether one WARN line of log says all of words.
func warned(log string, words ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "level=WARN") {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

// restart ends meshd on m (SIGTERM, or SIGKILL as a crash) and starts it
// again; Start returns once its admin socket answers.
func restart(t *testing.T, m *testbed.Meshd, crash bool) {
	t.Helper()
	if crash {
		m.Proc.Kill()
	} else if !m.Proc.Stop(10 * time.Second) {
		t.Fatalf("meshd on %s did not stop on SIGTERM", m.Host.Name)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestLazyPeersIdleRestart: a peer that was reaped restarts (stopped, or
// killed as in a crash) while the other side holds it idle; the first
// connection still goes through at once, to the restarted peer and from
// it, over the private and public paths.
func TestLazyPeersIdleRestart(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	a := startLazy(t, tb, "vpc", testbed.MeshdOptions{})
	b := startLazy(t, tb, "vpc", testbed.MeshdOptions{})     // a-b: private path
	d := startLazy(t, tb, "classic", testbed.MeshdOptions{}) // a-d: public path
	ms := []*testbed.Meshd{a, b, d}
	waitFor(t, 20*time.Second, "every host to list the others idle, its device empty", func() error { return allIdle(ms) })
	for _, m := range ms {
		listen(t, m.Host, "0.0.0.0", 7001)
	}
	for _, m := range []*testbed.Meshd{b, d} {
		p, _ := peerOf(a, m.Host.Name)
		if out, err := a.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", p.OverlayIP); err != nil {
			t.Fatalf("first ping from a to idle %s: %v\n%s", m.Host.Name, err, out)
		}
	}

	for round, crashB := range []bool{false, true} {
		took := waitFor(t, reapLimit, "every peer reaped on both sides", func() error { return allIdle(ms) })
		t.Logf("round %d: reaped on both sides %s after the last traffic", round+1, took.Round(100*time.Millisecond))
		restart(t, b, crashB)
		restart(t, d, !crashB)
		took = waitFor(t, 20*time.Second, "the restarted hosts and a to list each other idle", func() error { return allIdle(ms) })
		t.Logf("round %d: b (crashed: %t) and d (crashed: %t) restarted; all idle again %s after", round+1, crashB, !crashB, took.Round(100*time.Millisecond))
		if round == 0 {
			firstConnect(t, a, b, 7001) // to the restarted peer
			firstConnect(t, d, a, 7001) // from the restarted peer
		} else {
			firstConnect(t, b, a, 7001)
			firstConnect(t, a, d, 7001)
		}
	}
}

// Noise IK as WireGuard starts it, for forging initiations: written out
// here, apart from meshd's own code, so that the test does not share its
// mistakes.
var (
	noiseChainKey = blake2s.Sum256([]byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"))
	noiseHash     = mixHash(noiseChainKey, []byte("WireGuard v1 zx2c4 Jason@zx2c4.com"))
)

func mixHash(h [32]byte, data []byte) [32]byte {
	return blake2s.Sum256(append(h[:], data...))
}

func hmacBLAKE2s(key []byte, data ...[]byte) []byte {
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// kdf2 is WireGuard's KDF2: the next chaining key and a cipher key.
func kdf2(ck, input []byte) (c, k []byte) {
	t0 := hmacBLAKE2s(ck, input)
	c = hmacBLAKE2s(t0, []byte{1})
	return c, hmacBLAKE2s(t0, c, []byte{2})
}

// initiation is a handshake initiation (148 bytes, type 1) to responder
// whose encrypted static key says static, with a correct mac1. Given
// static's private key it is genuine, its timestamp sealed; without it,
// it is what anyone who knows the public keys can forge: the timestamp is
// random bytes.
func initiation(t *testing.T, responder, static wgtypes.Key, staticPriv *wgtypes.Key) []byte {
	t.Helper()
	var nonce [chacha20poly1305.NonceSize]byte
	msg := make([]byte, handshake.MessageSize)
	binary.LittleEndian.PutUint32(msg, handshake.MessageType)
	rand.Read(msg[4:8]) // sender index
	eph, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ephPub := eph.PublicKey()
	copy(msg[8:40], ephPub[:])
	h := mixHash(mixHash(noiseHash, responder[:]), ephPub[:])
	c := hmacBLAKE2s(hmacBLAKE2s(noiseChainKey[:], ephPub[:]), []byte{1})
	ss, err := curve25519.X25519(eph[:], responder[:])
	if err != nil {
		t.Fatal(err)
	}
	c, k := kdf2(c, ss)
	aead, _ := chacha20poly1305.New(k)
	aead.Seal(msg[40:40], nonce[:], static[:], h[:]) // msg[40:88]
	if staticPriv == nil {
		rand.Read(msg[88:116])
	} else {
		h = mixHash(h, msg[40:88])
		ss, err := curve25519.X25519(staticPriv[:], responder[:])
		if err != nil {
			t.Fatal(err)
		}
		_, k := kdf2(c, ss)
		var ts [12]byte // TAI64N
		now := time.Now()
		binary.BigEndian.PutUint64(ts[:8], 0x400000000000000a+uint64(now.Unix()))
		binary.BigEndian.PutUint32(ts[8:], uint32(now.Nanosecond()))
		aead, _ := chacha20poly1305.New(k)
		aead.Seal(msg[88:88], nonce[:], ts[:], h[:]) // msg[88:116]
	}
	mk := blake2s.Sum256(append([]byte("mac1----"), responder[:]...))
	m, _ := blake2s.New128(mk[:])
	m.Write(msg[:116])
	copy(msg[116:132], m.Sum(nil))
	return msg
}

// sendUDP sends msg as one datagram from inside h to addr.
func sendUDP(t *testing.T, h *testbed.Host, addr string, msg []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "datagram")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Run(context.Background(), "bash", "-c", fmt.Sprintf(`cat %q > /dev/udp/%s/51820`, f, addr)); err != nil {
		t.Fatalf("send from %s: %v\n%s", h.Name, err, out)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestLazyPeersForgedInitiation: garbage and forged handshake initiations
// sent to a host's WireGuard port by a rogue host on its LAN and by the
// outsider on the internet bring nobody into its device: meshd refuses
// every initiation-shaped one and identifies none. The host's firewall is
// off, so that all of it reaches meshd rather than being dropped before.
// The forged initiation names a real peer; that peer's next genuine
// connection still goes through at once.
func TestLazyPeersForgedInitiation(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	a := startLazy(t, tb, "vpc", testbed.MeshdOptions{Firewall: "off"})
	b := startLazy(t, tb, "vpc", testbed.MeshdOptions{})
	rogue, err := tb.AddHost("vpc")
	if err != nil {
		t.Fatal(err)
	}
	ms := []*testbed.Meshd{a, b}
	waitFor(t, 20*time.Second, "a and b to list each other idle, their devices empty", func() error { return allIdle(ms) })

	ast, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	aPub, err := wgtypes.ParseKey(ast.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	bp, _ := peerOf(a, b.Host.Name)
	bPub, err := wgtypes.ParseKey(bp.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	type1Garbage := randomBytes(handshake.MessageSize)
	binary.LittleEndian.PutUint32(type1Garbage, handshake.MessageType)
	notType1 := randomBytes(handshake.MessageSize)
	binary.LittleEndian.PutUint32(notType1, 4)
	forged := initiation(t, aPub, bPub, nil)
	strangers := initiation(t, aPub, stranger.PublicKey(), &stranger)

	// The messages are what they claim, checked with a's own key: mac1 of
	// the forged and the stranger's is right, so they reach decryption; the
	// forged names b and fails at the timestamp; the stranger's is
	// genuine, from a key a does not know.
	aPriv, err := keys.Load(filepath.Join(a.Dir, keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	r := handshake.NewResponder(aPriv)
	if err := r.CheckMAC1(type1Garbage); !errors.Is(err, handshake.ErrMAC1) {
		t.Fatalf("garbage type 1: CheckMAC1 %v, want ErrMAC1", err)
	}
	if k, _, err := r.Authenticate(forged, r.StaticSecret); k != bPub || !errors.Is(err, handshake.ErrUnauthenticated) {
		t.Fatalf("forged initiation: names %s (%v), want b's key %s and ErrUnauthenticated", k, err, bPub)
	}
	if k, _, err := r.Authenticate(strangers, r.StaticSecret); k != stranger.PublicKey() || err != nil {
		t.Fatalf("stranger's initiation: names %s (%v), want the stranger's key authenticated", k, err)
	}

	before := ast.Lazy
	var initiations uint64
	for _, from := range []struct {
		h  *testbed.Host
		to string
	}{{rogue, a.Host.PrivateIP.String()}, {tb.Outsider(), a.Host.PublicIP.String()}} {
		for _, msg := range [][]byte{randomBytes(64), randomBytes(1200), notType1, type1Garbage, forged, strangers} {
			sendUDP(t, from.h, from.to, msg)
			if len(msg) == handshake.MessageSize && binary.LittleEndian.Uint32(msg) == handshake.MessageType {
				initiations++
			}
		}
	}
	// Every initiation-shaped datagram reached meshd and was refused.
	waitFor(t, 5*time.Second, fmt.Sprintf("a to refuse the %d initiations", initiations), func() error {
		st, err := a.Status()
		if err != nil {
			return err
		}
		if got := st.Lazy.Refused - before.Refused; got < initiations {
			return fmt.Errorf("refused %d", got)
		}
		return nil
	})
	// And nobody came in, for a while after.
	hold := time.Now().Add(2 * time.Second)
	for time.Now().Before(hold) {
		if err := allIdle(ms); err != nil {
			t.Fatalf("after garbage and forged initiations: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if l := st.Lazy; l.Identified != before.Identified || l.Throttled != before.Throttled || l.Refused-before.Refused != initiations || l.InDevice != 0 {
		t.Errorf("a's lazy counters after garbage and forged initiations: %+v, before %+v; want %d more refused, nothing else", *l, *before, initiations)
	}
	t.Logf("a refused %d initiations (garbage, forged as b, a stranger's), identified none", initiations)

	// The forgery named b: b's own first connection still goes through.
	listen(t, a.Host, "0.0.0.0", 7001)
	firstConnect(t, b, a, 7001)
	if st, err := a.Status(); err != nil || st.Lazy.Identified == before.Identified {
		t.Errorf("a identified no initiation from b: %v %+v", err, st.Lazy)
	}
}

// TestLazyPeersOff: peers.lazy: false is the way back to every known peer
// in the WireGuard device. Such hosts put each other in their devices
// before any traffic, a joining host is in every device within a second,
// and their status has no lazy object. A host with lazy peers (the
// default) meshes with them both ways.
func TestLazyPeersOff(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	off := func(network string) *testbed.Meshd {
		return startHost(t, tb, network, testbed.MeshdOptions{Groups: []string{network}, Links: [][]string{{"vpc", "dc"}},
			Extra: "peers:\n  lazy: false\n"})
	}
	var ms []*testbed.Meshd
	for _, n := range []string{"vpc", "classic", "dc"} {
		ms = append(ms, off(n))
	}
	inDevice := func(m *testbed.Meshd, keys ...string) error {
		out, err := m.Host.Run(context.Background(), "wg", "show", m.Iface, "peers")
		if err != nil {
			return fmt.Errorf("wg show on %s: %v %s", m.Host.Name, err, out)
		}
		for _, k := range keys {
			if !strings.Contains(out, k) {
				return fmt.Errorf("%s's device lacks %s: has %d peers", m.Host.Name, k, len(strings.Fields(out)))
			}
		}
		return nil
	}
	key := func(m *testbed.Meshd) string {
		st, err := m.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.PublicKey
	}
	waitFor(t, 20*time.Second, "every device to hold every other host before any traffic", func() error {
		for _, m := range ms {
			var keys []string
			for _, o := range ms {
				if o != m {
					keys = append(keys, key(o))
				}
			}
			if err := inDevice(m, keys...); err != nil {
				return err
			}
			ps, err := m.Peers()
			if err != nil {
				return err
			}
			for _, p := range ps {
				if p.State == "idle" {
					return fmt.Errorf("%s lists %s idle with lazy peers off", m.Host.Name, p.Name)
				}
			}
		}
		return nil
	})
	for _, m := range ms {
		if st, err := m.Status(); err != nil || st.Lazy != nil {
			t.Errorf("%s with peers.lazy: false: status lazy %+v (%v), want none", m.Host.Name, st.Lazy, err)
		}
	}
	if out, err := meshctl(t, ms[0], "status"); err != nil || !strings.Contains(out, "off (peers.lazy: false)") {
		t.Errorf("meshctl status with lazy peers off: %v\n%s", err, out)
	}

	// A joining host is in every device within a second.
	start := time.Now()
	n := off("vpc")
	started := time.Since(start)
	nk := key(n)
	var slowest time.Duration
	for _, m := range ms {
		slowest = max(slowest, waitFor(t, 10*time.Second, m.Host.Name+"'s device to hold the new host", func() error { return inDevice(m, nk) }))
	}
	t.Logf("join convergence, lazy peers off: every device had the new host within %s of its admin socket answering (start took %s)", slowest, started)
	if slowest > time.Second {
		t.Errorf("join took %s to reach every device, want <= 1s", slowest)
	}

	// A lazy host (the default) and hosts that are not reach each other.
	// The lazy one's first ping is answered. The others' devices take it
	// in as its record appears and initiate at once: meshd publishes its
	// record only once its socket is open, so that first initiation is
	// answered. Lost, WireGuard would wait 5 s before the next, past the
	// 3 s allowed here.
	l := startHost(t, tb, "vpc", testbed.MeshdOptions{Groups: []string{"vpc"}, Links: [][]string{{"vpc", "dc"}}})
	overlay := func(from, to *testbed.Meshd) string {
		var p admin.Peer
		waitFor(t, 10*time.Second, from.Host.Name+" to list "+to.Host.Name, func() (err error) {
			p, err = peerOf(from, to.Host.Name)
			return err
		})
		return p.OverlayIP
	}
	to := overlay(ms[1], l)
	waitFor(t, 3*time.Second, ms[1].Host.Name+" (lazy peers off) reaches lazy "+l.Host.Name, func() error {
		_, err := ms[1].Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", to)
		return err
	})
	if out, err := l.Host.Run(context.Background(), "ping", "-c", "1", "-W", "2", overlay(l, ms[0])); err != nil {
		t.Errorf("first ping from lazy %s to %s: %v\n%s", l.Host.Name, ms[0].Host.Name, err, out)
	}
}
