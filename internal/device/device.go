// Package device owns the userspace WireGuard interface: a TUN device driven
// by wireguard-go, its UAPI socket (so `wg show` and wgctrl work), its
// overlay address and MTU (set with netlink), and peer changes as deltas.
//
// It is the only package that imports wireguard-go's device and tun.
package device

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	wgdevice "golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultMTU fits WireGuard's 80 bytes of overhead into a 1500-byte underlay.
const DefaultMTU = 1420

// Config describes the interface to create.
type Config struct {
	Name       string
	PrivateKey wgtypes.Key
	ListenPort int
	MTU        int          // 0: DefaultMTU
	Address    netip.Prefix // overlay address with the pool's length, e.g. 100.100.0.5/16
	Logger     *slog.Logger
	// Bind chooses the UDP sockets: BindMeshd (the default, also for "") or
	// BindWireGuardGo, upstream's StdNetBind, kept so the two can be
	// compared on the same build and as a way back should ours misbehave.
	Bind string
	// OnInitiation, with meshd's Bind, sees every handshake initiation on
	// the receive path before wireguard-go does: the seam for lazy peers
	// (see BindOptions.OnInitiation; it must not block).
	OnInitiation func(from netip.AddrPort, msg []byte) `json:"-"`
	// OnIdlePacket, if set, turns on the outbound side of lazy peers:
	// packets to an address given to MarkIdle are held, and OnIdlePacket
	// asks (once a second at most, per address) for that peer to be put
	// in the device; Activate then sends them on. It must not block.
	OnIdlePacket func(overlay netip.Addr) `json:"-"`
}

// UDP binds Config.Bind selects.
const (
	BindMeshd       = "meshd"
	BindWireGuardGo = "wireguard-go"
)

// newBind is the conn.Bind the name selects.
func newBind(name string, onInit func(netip.AddrPort, []byte)) (conn.Bind, error) {
	switch name {
	case "", BindMeshd:
		return NewBind(BindOptions{OnInitiation: onInit}), nil
	case BindWireGuardGo:
		if onInit != nil {
			return nil, fmt.Errorf("UDP bind %s has no initiation hook: lazy peers need %s", name, BindMeshd)
		}
		return conn.NewStdNetBind(), nil
	}
	return nil, fmt.Errorf("UDP bind %q: want %s or %s", name, BindMeshd, BindWireGuardGo)
}

// Device is a running WireGuard interface.
type Device struct {
	cfg    Config
	log    *slog.Logger
	tun    tun.Device
	gate   *idleGate // nil unless Config.OnIdlePacket
	bind   conn.Bind
	wg     *wgdevice.Device
	uapi   net.Listener
	sock   string
	closed sync.Once
	done   chan struct{}

	// statsBuf is reused by every Stats: the UAPI text of 100 active
	// peers is 20 KB a second of garbage otherwise.
	statsMu  sync.Mutex
	statsBuf bytes.Buffer
}

// New creates and brings up the interface. On failure nothing is left
// behind: no interface, no socket.
func New(cfg Config) (_ *Device, err error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Device{cfg: cfg, log: cfg.Logger.With("interface", cfg.Name), done: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	bind, err := newBind(cfg.Bind, cfg.OnInitiation)
	if err != nil {
		return nil, err
	}
	d.bind = bind
	if d.tun, err = tun.CreateTUN(cfg.Name, cfg.MTU); err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", cfg.Name, err)
	}
	if cfg.OnIdlePacket != nil {
		d.gate = newIdleGate(d.tun, cfg.OnIdlePacket)
		d.tun = d.gate
	}
	d.wg = wgdevice.NewDevice(d.tun, bind, wgLogger(d.log))
	k := cfg.PrivateKey
	if err = d.wg.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(k[:]), cfg.ListenPort)); err != nil {
		return nil, fmt.Errorf("configure %s (listen port %d): %w", cfg.Name, cfg.ListenPort, err)
	}
	if err = d.openUAPI(); err != nil {
		return nil, err
	}
	if err = d.configureLink(); err != nil {
		return nil, err
	}
	if err = d.wg.Up(); err != nil {
		return nil, fmt.Errorf("bring up %s: %w", cfg.Name, err)
	}
	return d, nil
}

// openUAPI serves the UAPI socket that `wg show` and wgctrl use.
func (d *Device) openUAPI() error {
	f, err := ipc.UAPIOpen(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("open UAPI socket for %s: %w", d.cfg.Name, err)
	}
	d.sock = filepath.Join("/var/run/wireguard", d.cfg.Name+".sock")
	d.uapi, err = ipc.UAPIListen(d.cfg.Name, f)
	if err != nil {
		f.Close()
		return fmt.Errorf("listen on UAPI socket %s: %w", d.sock, err)
	}
	go func() {
		for {
			c, err := d.uapi.Accept()
			if err != nil {
				return
			}
			go d.wg.IpcHandle(c)
		}
	}()
	return nil
}

// configureLink sets the overlay address and MTU and brings the link up. The
// address carries the pool's prefix length, so the kernel installs the one
// route to the overlay through this interface.
func (d *Device) configureLink() error {
	link, err := netlink.LinkByName(d.cfg.Name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", d.cfg.Name, err)
	}
	if err := netlink.LinkSetMTU(link, d.cfg.MTU); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", d.cfg.MTU, d.cfg.Name, err)
	}
	addr := &netlink.Addr{IPNet: prefixToIPNet(d.cfg.Address)}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", d.cfg.Address, d.cfg.Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", d.cfg.Name, err)
	}
	return nil
}

// Apply makes one change to the peer set with a single UAPI set operation.
func (d *Device) Apply(delta Delta) error {
	if delta.Empty() {
		return nil
	}
	if err := d.wg.IpcSet(delta.uapiText()); err != nil {
		return fmt.Errorf("apply %d upserts, %d removals to %s: %w", len(delta.Upsert), len(delta.Remove), d.cfg.Name, err)
	}
	return nil
}

// Replace makes the device's peers exactly peers, as a delta against what
// the device has: peers that did not change keep their sessions.
func (d *Device) Replace(peers []Peer) error {
	have, err := d.Stats()
	if err != nil {
		return err
	}
	var delta Delta
	want := map[wgtypes.Key]bool{}
	for _, p := range peers {
		want[p.PublicKey] = true
		delta.Upsert = append(delta.Upsert, p)
	}
	for k := range have {
		if !want[k] {
			delta.Remove = append(delta.Remove, k)
		}
	}
	return d.Apply(delta)
}

// Stats reads every peer's endpoint, last handshake and counters.
func (d *Device) Stats() (map[wgtypes.Key]PeerStats, error) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	d.statsBuf.Reset()
	if err := d.wg.IpcGetOperation(&d.statsBuf); err != nil {
		return nil, fmt.Errorf("read peers of %s: %w", d.cfg.Name, err)
	}
	return parseStats(d.statsBuf.Bytes())
}

// Handshake starts a handshake with a peer now instead of at its next
// packet. A restarted host needs this: its peers keep sending on their old
// session, which it no longer has, until their own timers give up.
// WireGuard sends at most one initiation per peer every 5 s (RekeyTimeout);
// a call within that window is a no-op.
func (d *Device) Handshake(key wgtypes.Key) error {
	p, err := d.peer("handshake", key)
	if err != nil {
		return err
	}
	return p.SendHandshakeInitiation(false)
}

// peer is one peer of the device, or an error naming what wanted it.
func (d *Device) peer(what string, key wgtypes.Key) (*wgdevice.Peer, error) {
	p := d.wg.LookupPeer(wgdevice.NoisePublicKey(key))
	if p == nil {
		return nil, fmt.Errorf("%s: no peer %s on %s", what, key, d.cfg.Name)
	}
	return p, nil
}

// HandshakeOnce sends one initiation as a retry would: WireGuard's count of
// attempts is not reset, so for a peer it already gave up on (after 90 s
// without an answer) no new chain of retries follows and nothing stays
// queued. Rate-limited like Handshake.
func (d *Device) HandshakeOnce(key wgtypes.Key) error {
	p, err := d.peer("handshake", key)
	if err != nil {
		return err
	}
	return p.SendHandshakeInitiation(true)
}

// ExpireSessions stops sending on a peer's sessions and lifts the rate
// limit on its next handshake initiation (WireGuard's 5 s): for a peer
// that restarted, whose end of them is gone. What is sent next waits for
// a new handshake instead of going out on keys nobody holds.
func (d *Device) ExpireSessions(key wgtypes.Key) error {
	p, err := d.peer("expire sessions", key)
	if err != nil {
		return err
	}
	p.ExpireCurrentKeypairs()
	return nil
}

// DropQueued drops the packets queued for a peer until it has a session.
// WireGuard answers a configuration change of a peer with queued packets by
// restarting its 90 s of handshake retries; for a peer that never answers
// that never ends (and each queued packet holds a 64 KiB buffer).
func (d *Device) DropQueued(key wgtypes.Key) error {
	p, err := d.peer("drop queued", key)
	if err != nil {
		return err
	}
	p.FlushStagedPackets()
	return nil
}

// PublicKey is the interface's public key.
func (d *Device) PublicKey() wgtypes.Key { return d.cfg.PrivateKey.PublicKey() }

// PrivateKey is the interface's private key, for a rotation to fall back on.
func (d *Device) PrivateKey() wgtypes.Key { return d.cfg.PrivateKey }

// Name is the interface name.
func (d *Device) Name() string { return d.cfg.Name }

// MTU is the interface MTU.
func (d *Device) MTU() int { return d.cfg.MTU }

// Close takes the interface down and removes it and its UAPI socket.
func (d *Device) Close() error {
	var err error
	d.closed.Do(func() {
		if d.uapi != nil {
			d.uapi.Close()
			os.Remove(d.sock)
		}
		if d.wg != nil {
			d.wg.Close() // closes the TUN too
		} else if d.tun != nil {
			d.tun.Close()
		}
		err = waitLinkGone(d.cfg.Name, 5*time.Second)
	})
	return err
}

func waitLinkGone(name string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		if _, err := netlink.LinkByName(name); errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interface %s still present %s after close", name, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// wgLogger routes wireguard-go's log lines to slog; its verbose lines only
// at debug level, and formatted only when they will be written.
func wgLogger(log *slog.Logger) *wgdevice.Logger {
	return &wgdevice.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) },
	}
}

// SetPrivateKey switches the interface to a new private key (key
// rotation). Sessions made with the old key end; peers that already know
// the new public key accept the handshakes that follow at once.
func (d *Device) SetPrivateKey(k wgtypes.Key) error {
	if err := d.wg.IpcSet(fmt.Sprintf("private_key=%s\n", hex.EncodeToString(k[:]))); err != nil {
		return fmt.Errorf("set private key on %s: %w", d.cfg.Name, err)
	}
	d.cfg.PrivateKey = k
	return nil
}
