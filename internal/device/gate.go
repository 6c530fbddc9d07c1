package device

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// The outbound side of lazy peers (issue 17). A peer that has been idle is
// not in wireguard-go's device at all: no queues, no goroutines, no timers.
// The first packet the kernel routes to its overlay address must then
// neither be dropped (wireguard-go has no peer for it, and a lost SYN costs
// the connection a one-second retransmission) nor wait for the next packet.
//
// idleGate sits between the TUN and wireguard-go. A packet to an address
// marked idle is copied aside and its slot emptied (wireguard-go skips
// zero-sized slots), and the owner is asked, once, to bring the peer in.
// Once the peer is in the device, Activate sends the held packets out again
// through a raw IPv4 socket: the kernel routes them to the TUN like any
// other packet, so they arrive on wireguard-go's own read path, find the
// peer, and start its handshake. Nothing waits on the blocked TUN read and
// nothing is added to the path of packets to active peers but one atomic
// load per batch while no peer is idle, and one map lookup per packet
// while some are.
type idleGate struct {
	tun.Device
	onIdle func(netip.Addr) // must not block

	nIdle atomic.Int64 // len(idle), read without the lock on every batch
	mu    sync.Mutex
	idle  map[netip.Addr]*heldQueue
	held  int // packets held over all peers

	rawOnce sync.Once
	raw     int // IPv4 raw socket (IPPROTO_RAW: header included)
	rawErr  error

	stats GateStats
}

// heldQueue is what waits for one idle peer.
type heldQueue struct {
	pkts  [][]byte
	asked time.Time // when onIdle was last called for it; zero: not yet
}

// Bounds on held packets: a peer's first packets (a SYN, a DNS query and
// its retries), not a buffer for a flood to a peer that never comes up.
const (
	maxHeldPerPeer = 16
	maxHeldTotal   = 4096
	reaskAfter     = time.Second // ask again if the peer has not come in
)

// GateStats counts what the gate did with packets to idle peers.
type GateStats struct {
	Held     atomic.Uint64 // packets set aside for an idle peer
	Dropped  atomic.Uint64 // over the per-peer or total bound
	Replayed atomic.Uint64 // sent again once the peer was in
	Asked    atomic.Uint64 // calls to the owner to bring a peer in
}

func newIdleGate(inner tun.Device, onIdle func(netip.Addr)) *idleGate {
	return &idleGate{Device: inner, onIdle: onIdle, idle: map[netip.Addr]*heldQueue{}, raw: -1}
}

// Read passes wireguard-go its batch with the packets to idle peers taken
// out.
func (g *idleGate) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := g.Device.Read(bufs, sizes, offset)
	if n > 0 && g.nIdle.Load() > 0 {
		g.hold(bufs[:n], sizes[:n], offset)
	}
	return n, err
}

func (g *idleGate) hold(bufs [][]byte, sizes []int, offset int) {
	now := time.Now()
	var ask []netip.Addr
	g.mu.Lock()
	for i := range bufs {
		pkt := bufs[i][offset : offset+sizes[i]]
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			continue // the overlay is IPv4
		}
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		q, ok := g.idle[dst]
		if !ok {
			continue
		}
		sizes[i] = 0 // wireguard-go skips empty slots
		if len(q.pkts) >= maxHeldPerPeer || g.held >= maxHeldTotal {
			g.stats.Dropped.Add(1)
		} else {
			q.pkts = append(q.pkts, append([]byte(nil), pkt...))
			g.held++
			g.stats.Held.Add(1)
		}
		if q.asked.IsZero() || now.Sub(q.asked) >= reaskAfter {
			q.asked = now
			ask = append(ask, dst)
		}
	}
	g.mu.Unlock()
	for _, a := range ask {
		g.stats.Asked.Add(1)
		g.onIdle(a)
	}
}

// markIdle makes packets to addr wait for Activate from now on.
func (g *idleGate) markIdle(addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("idle peer address %s: the overlay is IPv4", addr)
	}
	g.mu.Lock()
	if _, ok := g.idle[addr]; !ok {
		g.idle[addr] = &heldQueue{}
		g.nIdle.Store(int64(len(g.idle)))
	}
	g.mu.Unlock()
	return nil
}

// activate ends addr's idleness and sends what was held for it out again.
// The caller has put the peer in the device first.
func (g *idleGate) activate(addr netip.Addr) (int, error) {
	g.mu.Lock()
	q := g.idle[addr]
	delete(g.idle, addr)
	g.nIdle.Store(int64(len(g.idle)))
	if q != nil {
		g.held -= len(q.pkts)
	}
	g.mu.Unlock()
	if q == nil || len(q.pkts) == 0 {
		return 0, nil
	}
	fd, err := g.rawSocket()
	if err != nil {
		return 0, err
	}
	sa := &syscall.SockaddrInet4{Addr: addr.As4()}
	sent := 0
	for _, p := range q.pkts {
		if err := syscall.Sendto(fd, p, 0, sa); err != nil {
			return sent, fmt.Errorf("replay held packet to %s: %w", addr, err)
		}
		sent++
		g.stats.Replayed.Add(1)
	}
	return sent, nil
}

// forget drops addr and anything held for it (the peer left the fleet).
func (g *idleGate) forget(addr netip.Addr) {
	g.mu.Lock()
	if q, ok := g.idle[addr]; ok {
		g.held -= len(q.pkts)
		g.stats.Dropped.Add(uint64(len(q.pkts)))
		delete(g.idle, addr)
		g.nIdle.Store(int64(len(g.idle)))
	}
	g.mu.Unlock()
}

// rawSocket opens, once, the socket held packets go out again through. It
// needs CAP_NET_RAW, which the unit grants.
func (g *idleGate) rawSocket() (int, error) {
	g.rawOnce.Do(func() {
		g.raw, g.rawErr = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
		if g.rawErr != nil {
			g.rawErr = fmt.Errorf("raw socket for held packets (needs CAP_NET_RAW): %w", g.rawErr)
		}
	})
	return g.raw, g.rawErr
}

func (g *idleGate) Close() error {
	err := g.Device.Close()
	g.rawOnce.Do(func() {}) // after an activate's open, or none from now on
	if g.raw >= 0 {
		err = errors.Join(err, syscall.Close(g.raw))
		g.raw = -1
	}
	return err
}

var errNoGate = errors.New("lazy peers are off on this device (Config.OnIdlePacket is nil)")

// MarkIdle holds packets to the peer at overlay address addr, which the
// caller has taken (or is about to take) out of the device, until Activate.
func (d *Device) MarkIdle(addr netip.Addr) error {
	if d.gate == nil {
		return errNoGate
	}
	return d.gate.markIdle(addr)
}

// Activate ends addr's idleness: the packets held for it go out again.
// Call it after the peer is back in the device. It reports how many went.
func (d *Device) Activate(addr netip.Addr) (int, error) {
	if d.gate == nil {
		return 0, errNoGate
	}
	return d.gate.activate(addr)
}

// Forget drops addr from the idle set with whatever was held for it: the
// peer left the fleet.
func (d *Device) Forget(addr netip.Addr) {
	if d.gate != nil {
		d.gate.forget(addr)
	}
}

// GateCounts is a snapshot of GateStats.
type GateCounts struct {
	Held, Dropped, Replayed, Asked uint64
}

// IdleGateCounts reports what the lazy peers' gate did; zero when off.
func (d *Device) IdleGateCounts() GateCounts {
	if d.gate == nil {
		return GateCounts{}
	}
	s := &d.gate.stats
	return GateCounts{Held: s.Held.Load(), Dropped: s.Dropped.Load(), Replayed: s.Replayed.Load(), Asked: s.Asked.Load()}
}

// Redeliver hands a handshake initiation back to the device as if it had
// just arrived from from, to the local address it was sent to: a raw
// IPv4/UDP datagram over loopback. Lazy peers use it after bringing in the
// peer that sent it, which wireguard-go had dropped (it knew no such peer);
// had wireguard-go taken the original after all, it refuses this copy as a
// replay (the initiation's timestamp is not newer). The initiator is spared
// its five-second retry, and no second handshake crosses the first.
func (d *Device) Redeliver(from netip.AddrPort, msg []byte) error {
	b, ok := d.bind.(*Bind)
	if d.gate == nil || !ok {
		return errNoGate
	}
	to, ok := b.initiationDest(from)
	if !ok || !from.Addr().Is4() || !to.Is4() {
		return fmt.Errorf("redeliver initiation from %s: no IPv4 local address known for it", from)
	}
	fd, err := d.gate.rawSocket()
	if err != nil {
		return err
	}
	pkt := udp4Datagram(from, netip.AddrPortFrom(to, uint16(d.cfg.ListenPort)), msg)
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: to.As4()}); err != nil {
		return fmt.Errorf("redeliver initiation from %s to %s: %w", from, to, err)
	}
	return nil
}

// udp4Datagram is an IPv4 header and a UDP header before payload. The
// kernel fills in the IP checksum, length and id (IP_HDRINCL); a UDP
// checksum of zero means none, which IPv4 allows.
func udp4Datagram(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, syscall.IPPROTO_UDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s, t := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], t[:])
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}
