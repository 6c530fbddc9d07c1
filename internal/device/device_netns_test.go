package device

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The device must be created by a process inside the host's namespace (the
// TUN device and the UDP socket belong to the namespace of the thread that
// creates them), so each test host is this test binary re-executed with
// `ip netns exec`, driven over stdin/stdout with JSON lines.

const helperEnv = "MESHD_DEVICE_HELPER"

type helperReq struct {
	Op    string      `json:"op"` // apply, stats, handshake, close
	Delta *Delta      `json:"delta,omitempty"`
	Key   wgtypes.Key `json:"key"`
	Addr  string      `json:"addr,omitempty"`  // serve, send: overlay ip:port
	Bytes int64       `json:"bytes,omitempty"` // send
}

// lazyEnv makes the helper's device hold packets to idle peers (op idle).
const lazyEnv = "MESHD_DEVICE_HELPER_LAZY=1"

type helperResp struct {
	Err       string               `json:"err,omitempty"`
	PublicKey wgtypes.Key          `json:"public_key"`
	Stats     map[string]PeerStats `json:"stats,omitempty"`
	Sum       string               `json:"sum,omitempty"` // sha256 of what was sent or received
	Bytes     int64                `json:"bytes,omitempty"`
	Dial      time.Duration        `json:"dial,omitempty"` // send: time to connect
	Gate      GateCounts           `json:"gate"`
}

func TestHelperDevice(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for the netns tests")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	out := json.NewEncoder(os.Stdout)
	var (
		d         *Device
		idleMu    sync.Mutex
		idlePeers = map[netip.Addr]Peer{}
	)
	if os.Getenv("MESHD_DEVICE_HELPER_LAZY") != "" {
		// What the reconciler will do: put the peer in, then let the
		// held packets go.
		cfg.OnIdlePacket = func(addr netip.Addr) {
			idleMu.Lock()
			p, ok := idlePeers[addr]
			delete(idlePeers, addr)
			idleMu.Unlock()
			if !ok {
				return
			}
			go func() {
				if err := d.Apply(Delta{Upsert: []Peer{p}}); err != nil {
					fmt.Fprintln(os.Stderr, "bring in idle peer:", err)
					return
				}
				if _, err := d.Activate(addr); err != nil {
					fmt.Fprintln(os.Stderr, "activate idle peer:", err)
				}
			}()
		}
	}
	if os.Getenv("MESHD_DEVICE_HELPER_LAZY") != "" {
		// An idle peer's initiation: bring it in, then hand the
		// initiation back, as the daemon does.
		cfg.OnInitiation = func(from netip.AddrPort, msg []byte) {
			idleMu.Lock()
			var p Peer
			var addr netip.Addr
			for a, q := range idlePeers {
				if q.Endpoint == from {
					p, addr = q, a
				}
			}
			delete(idlePeers, addr)
			idleMu.Unlock()
			if !addr.IsValid() {
				return
			}
			msg = append([]byte(nil), msg...)
			go func() {
				if err := d.Apply(Delta{Upsert: []Peer{p}}); err != nil {
					fmt.Fprintln(os.Stderr, "bring in initiating peer:", err)
					return
				}
				d.Activate(addr)
				if os.Getenv("MESHD_DEVICE_HELPER_NO_REDELIVER") == "" {
					if err := d.Redeliver(from, msg); err != nil {
						fmt.Fprintln(os.Stderr, "redeliver:", err)
					}
				}
			}()
		}
	}
	d, err := New(cfg)
	if err != nil {
		out.Encode(helperResp{Err: err.Error()})
		return
	}
	out.Encode(helperResp{PublicKey: d.PublicKey()})
	var served chan helperResp
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var req helperReq
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			out.Encode(helperResp{Err: err.Error()})
			continue
		}
		var resp helperResp
		switch req.Op {
		case "apply":
			if err := d.Apply(*req.Delta); err != nil {
				resp.Err = err.Error()
			}
		case "stats":
			st, err := d.Stats()
			if err != nil {
				resp.Err = err.Error()
			}
			resp.Stats = map[string]PeerStats{}
			for k, v := range st {
				resp.Stats[k.String()] = v
			}
		case "serve":
			l, err := net.Listen("tcp", req.Addr)
			if err != nil {
				resp.Err = err.Error()
				break
			}
			served = make(chan helperResp, 1)
			go func() { served <- receive(l) }()
		case "served":
			resp = <-served
		case "send":
			resp = send(req.Addr, req.Bytes)
		case "idle":
			for _, p := range req.Delta.Upsert {
				addr := p.AllowedIPs[0].Addr()
				idleMu.Lock()
				idlePeers[addr] = p
				idleMu.Unlock()
				if err := d.MarkIdle(addr); err != nil {
					resp.Err = err.Error()
				}
			}
		case "gate":
			resp.Gate = d.IdleGateCounts()
		case "handshake":
			if err := d.Handshake(req.Key); err != nil {
				resp.Err = err.Error()
			}
		case "close":
			if err := d.Close(); err != nil {
				resp.Err = err.Error()
			}
			out.Encode(resp)
			return
		}
		out.Encode(resp)
	}
	d.Close()
}

// receive accepts one connection and hashes everything it carries.
func receive(l net.Listener) helperResp {
	defer l.Close()
	c, err := l.Accept()
	if err != nil {
		return helperResp{Err: err.Error()}
	}
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return helperResp{Err: err.Error()}
	}
	return helperResp{Sum: hex.EncodeToString(h.Sum(nil)), Bytes: n}
}

// send writes n pseudo-random bytes to addr and returns their hash.
func send(addr string, n int64) helperResp {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return helperResp{Err: err.Error()}
	}
	dial := time.Since(start)
	h := sha256.New()
	src := io.LimitReader(mrand.NewChaCha8([32]byte{1}), n)
	if _, err := io.Copy(io.MultiWriter(c, h), src); err != nil {
		c.Close()
		return helperResp{Err: err.Error()}
	}
	if err := c.Close(); err != nil {
		return helperResp{Err: err.Error()}
	}
	return helperResp{Sum: hex.EncodeToString(h.Sum(nil)), Bytes: n, Dial: dial}
}

// nsHost is one namespace with a device running in a helper process.
type nsHost struct {
	t      *testing.T
	ns     string
	ifname string
	under  netip.Addr
	over   netip.Addr
	key    wgtypes.Key
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *json.Decoder
}

func (h *nsHost) call(req helperReq) helperResp {
	h.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := h.in.Write(append(b, '\n')); err != nil {
		h.t.Fatalf("%s: write to helper: %v", h.ns, err)
	}
	var resp helperResp
	if err := h.out.Decode(&resp); err != nil {
		h.t.Fatalf("%s: read from helper: %v", h.ns, err)
	}
	if resp.Err != "" {
		h.t.Fatalf("%s: %s: %s", h.ns, req.Op, resp.Err)
	}
	return resp
}

func (h *nsHost) stats(peer wgtypes.Key) PeerStats {
	return h.call(helperReq{Op: "stats"}).Stats[peer.String()]
}

func (h *nsHost) peer(o *nsHost) Peer {
	return Peer{PublicKey: o.key, Endpoint: netip.AddrPortFrom(o.under, 51820), AllowedIPs: []netip.Prefix{netip.PrefixFrom(o.over, 32)}}
}

func (h *nsHost) exec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// lan builds n namespaces on one bridge (in its own namespace), each with a
// device: underlay 198.18.77.x/24, overlay 100.100.77.x/16.
func lan(t *testing.T, n int, env ...string) []*nsHost {
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: needs root to create network namespaces and TUN devices")
	}
	suffix := make([]byte, 2)
	rand.Read(suffix)
	id := "dv" + hex.EncodeToString(suffix)
	sw := id + "-sw"
	run(t, "ip", "netns", "add", sw)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sw).Run() })
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	var hosts []*nsHost
	for i := 1; i <= n; i++ {
		h := &nsHost{ns: fmt.Sprintf("%s-h%d", id, i), ifname: fmt.Sprintf("%sw%d", id, i),
			under: netip.MustParseAddr(fmt.Sprintf("198.18.77.%d", i)), over: netip.MustParseAddr(fmt.Sprintf("100.100.77.%d", i))}
		run(t, "ip", "netns", "add", h.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.ns).Run() })
		run(t, "ip", "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", fmt.Sprintf("p%d", i), "netns", sw)
		run(t, "ip", "-n", sw, "link", "set", fmt.Sprintf("p%d", i), "master", "br0", "up")
		run(t, "ip", "-n", h.ns, "addr", "add", h.under.String()+"/24", "dev", "eth0")
		run(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", h.ns, "link", "set", "lo", "up")
		hosts = append(hosts, startHelper(t, h.ns, h.ifname, h.under, h.over, env...))

	}
	return hosts
}

type prefixWriter struct {
	t      *testing.T
	prefix string
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "[%s] %s", w.prefix, p)
	}
	return len(p), nil
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDeviceDeltasInNamespaces(t *testing.T) {
	hs := lan(t, 3)
	a, b, c := hs[0], hs[1], hs[2]
	a.call(helperReq{Op: "apply", Delta: &Delta{Upsert: []Peer{a.peer(b), a.peer(c)}}})
	b.call(helperReq{Op: "apply", Delta: &Delta{Upsert: []Peer{b.peer(a)}}})
	c.call(helperReq{Op: "apply", Delta: &Delta{Upsert: []Peer{c.peer(a)}}})

	for _, o := range []*nsHost{b, c} {
		if out, err := a.exec("ping", "-c", "2", "-i", "0.2", "-W", "2", o.over.String()); err != nil {
			t.Fatalf("ping %s over the overlay: %v\n%s", o.over, err, out)
		}
	}
	// wg show reads the device through its UAPI socket.
	out, err := a.exec("wg", "show", a.ifname)
	if err != nil {
		t.Fatalf("wg show: %v\n%s", err, out)
	}
	for _, o := range []*nsHost{b, c} {
		if !strings.Contains(out, "peer: "+o.key.String()) || !strings.Contains(out, "latest handshake") {
			t.Errorf("wg show does not list peer %s with a handshake:\n%s", o.key, out)
		}
	}
	if out, _ := a.exec("ip", "-4", "route", "show", "100.100.0.0/16"); strings.Count(out, "dev "+a.ifname) != 1 {
		t.Errorf("want exactly one overlay route via %s, got %q", a.ifname, out)
	}

	// Removing c leaves b's session alone: a ping to b running meanwhile
	// loses nothing and b's handshake time does not move.
	before := a.stats(b.key)
	ping := exec.Command("ip", "netns", "exec", a.ns, "ping", "-c", "20", "-i", "0.1", "-W", "1", b.over.String())
	var pingOut strings.Builder
	ping.Stdout = &pingOut
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	rx0 := before.RxBytes
	waitFor(t, 5*time.Second, "the ping to be answered", func() bool { return a.stats(b.key).RxBytes > rx0 })
	a.call(helperReq{Op: "apply", Delta: &Delta{Remove: []wgtypes.Key{c.key}}})
	if err := ping.Wait(); err != nil || !strings.Contains(pingOut.String(), " 0% packet loss") {
		t.Errorf("ping to the kept peer across the removal: %v\n%s", err, pingOut.String())
	}
	after := a.call(helperReq{Op: "stats"}).Stats
	if _, ok := after[c.key.String()]; ok {
		t.Errorf("removed peer still on the device")
	}
	if !after[b.key.String()].LastHandshake.Equal(before.LastHandshake) {
		t.Errorf("kept peer re-handshook: %v -> %v", before.LastHandshake, after[b.key.String()].LastHandshake)
	}

	// An endpoint update keeps the session too.
	p := a.peer(b)
	a.call(helperReq{Op: "apply", Delta: &Delta{Upsert: []Peer{p}}})
	if got := a.stats(b.key); !got.LastHandshake.Equal(before.LastHandshake) || got.RxBytes < before.RxBytes {
		t.Errorf("re-upserting a peer reset it: %+v -> %+v", before, got)
	}

	// Handshake on demand.
	hs0 := a.stats(b.key).LastHandshake
	// WireGuard sends at most one initiation per RekeyTimeout (5s); the
	// protocol's timer, not a race, so wait it out.
	time.Sleep(time.Until(hs0.Add(5*time.Second + 100*time.Millisecond)))
	a.call(helperReq{Op: "handshake", Key: b.key})
	waitFor(t, 7*time.Second, "a handshake on demand", func() bool { return a.stats(b.key).LastHandshake.After(hs0) })

	// Close removes the interface and the socket.
	a.call(helperReq{Op: "close"})
	if out, _ := a.exec("ip", "link", "show", a.ifname); !strings.Contains(out, "does not exist") {
		t.Errorf("interface still there after close: %s", out)
	}
	if _, err := os.Stat("/var/run/wireguard/" + a.ifname + ".sock"); !os.IsNotExist(err) {
		t.Errorf("UAPI socket still there after close: %v", err)
	}
}
