package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// Bind is meshd's conn.Bind: the UDP sockets wireguard-go sends and
// receives through. It keeps what upstream's StdNetBind does well (one
// socket per address family, recvmmsg/sendmmsg batches, UDP GSO on send and
// GRO on receive, sticky source addresses) and drops its per-packet waste,
// which profiles of 64-byte floods put at the top of meshd's own CPU time
// (bench/PROFILES.md):
//
//   - Batches are built straight in mmsghdr arrays owned by the receiver (one
//     per socket) or pooled per send, and only the slots a batch used are
//     touched, before and after; StdNetBind resets all 128 on every batch.
//   - A received packet costs no allocation: the sender's address is read
//     from the raw sockaddr and its Endpoint comes from a bounded cache
//     keyed by address (x/net's ReadBatch allocates a net.UDPAddr per
//     message, StdNetBind an Endpoint on top).
//   - Socket buffers are sized for bursts, beyond net.core.*mem_max when
//     meshd may (SO_RCVBUFFORCE as root), and the size obtained is kept.
//
// Optional hooks on the receive path (BindOptions.OnInitiation) are the seam
// for lazy peers: they see handshake initiations before wireguard-go does.
type Bind struct {
	opts BindOptions

	mu     sync.Mutex // guards v4, v6 and open
	v4, v6 *bindSocket
	open   bool

	sendPool sync.Pool // *sendBatch
	stats    bindStats

	// initiatedTo is the local address each initiation's sender last sent
	// to, so Redeliver can hand an initiation back in as it came. Written
	// for initiations only (a few per peer per two minutes), bounded.
	initMu      sync.Mutex
	initiatedTo map[netip.AddrPort]netip.Addr
}

// maxInitiatedTo bounds Bind.initiatedTo; past it the map starts afresh.
const maxInitiatedTo = 16384

func (b *Bind) noteInitiation(e *Endpoint) {
	if !e.key.src.IsValid() {
		return
	}
	b.initMu.Lock()
	if b.initiatedTo == nil || len(b.initiatedTo) >= maxInitiatedTo {
		b.initiatedTo = map[netip.AddrPort]netip.Addr{}
	}
	b.initiatedTo[e.key.ap] = e.key.src
	b.initMu.Unlock()
}

// initiationDest is the local address from last sent an initiation to.
func (b *Bind) initiationDest(from netip.AddrPort) (netip.Addr, bool) {
	b.initMu.Lock()
	defer b.initMu.Unlock()
	a, ok := b.initiatedTo[from]
	return a, ok
}

// BindOptions tunes a Bind. The zero value is what meshd runs with.
type BindOptions struct {
	// NoOffload turns UDP GSO and GRO off even where the kernel has them.
	NoOffload bool
	// SocketBuffer is SO_RCVBUF and SO_SNDBUF in bytes; 0 means
	// DefaultSocketBuffer.
	SocketBuffer int
	// EndpointCache bounds the endpoints kept per address family: at most
	// twice this many are held (two generations). 0 means 4096.
	EndpointCache int
	// OnInitiation, if set, is called on the receive path for every datagram
	// that has the size and type of a WireGuard handshake initiation (type 1,
	// 148 bytes), before wireguard-go sees it. It runs on the receiving
	// goroutine, so it must not block: copy what it needs (msg is only valid
	// during the call) and hand it off, e.g. with a non-blocking channel
	// send. Lazy peers use this to bring an idle peer into the device while
	// wireguard-go answers (or drops) the initiation as before.
	OnInitiation func(from netip.AddrPort, msg []byte)
}

// DefaultSocketBuffer holds a burst of ~10 000 small datagrams (each costs
// about 700 bytes of skb truesize) or 130 full 64 KiB GRO batches.
const DefaultSocketBuffer = 8 << 20

// bindStats counts what a Bind did that tests and profiles want to see.
type bindStats struct {
	gsoSends      atomic.Uint64 // sendmmsg messages that carried more than one datagram
	groSplits     atomic.Uint64 // received messages that the kernel had coalesced
	groDropped    atomic.Uint64 // coalesced segments that found no free slot
	endpointsMade atomic.Uint64 // endpoint cache misses
	srcCleared    atomic.Uint64 // sends retried without a stale sticky source
}

// bindSocket is one address family's socket.
type bindSocket struct {
	conn      *net.UDPConn
	rc        syscall.RawConn
	is6       bool
	txOffload atomic.Bool // cleared when the kernel refuses GSO (EIO)
	rxOffload bool
	rcvbuf    int // obtained, as getsockopt reports it (twice the request)
	sndbuf    int
}

var (
	_ conn.Bind     = (*Bind)(nil)
	_ conn.Endpoint = (*Endpoint)(nil)
)

// NewBind returns a closed Bind; wireguard-go opens it.
func NewBind(opts BindOptions) *Bind {
	if opts.SocketBuffer == 0 {
		opts.SocketBuffer = DefaultSocketBuffer
	}
	if opts.EndpointCache == 0 {
		opts.EndpointCache = 4096
	}
	b := &Bind{opts: opts}
	b.sendPool.New = func() any { return newSendBatch() }
	return b
}

// BatchSize is the most datagrams one receive returns and one Send takes.
func (b *Bind) BatchSize() int { return conn.IdealBatchSize }

// Open listens on port for IPv4 and IPv6 (port 0: any free port, the same
// for both families).
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var v4, v6 *bindSocket
	var err error
	for tries := 0; ; tries++ {
		p := int(port)
		v4, p, err = b.listen("udp4", p)
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		v6, p, err = b.listen("udp6", p)
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			v4.close()
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			v4.close()
			return nil, 0, err
		}
		port = uint16(p)
		break
	}
	var fns []conn.ReceiveFunc
	if v4 != nil {
		fns = append(fns, newReceiver(b, v4).receiveIPv4)
	}
	if v6 != nil {
		fns = append(fns, newReceiver(b, v6).receiveIPv6)
	}
	if len(fns) == 0 {
		return nil, 0, syscall.EAFNOSUPPORT
	}
	b.v4, b.v6, b.open = v4, v6, true
	return fns, port, nil
}

// listen opens one family's socket with its options set before bind.
func (b *Bind) listen(network string, port int) (*bindSocket, int, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) { err = b.setSocketOptions(int(fd), network == "udp6") })
		return errors.Join(cerr, err)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(port))
	if err != nil {
		return nil, 0, err
	}
	uc := pc.(*net.UDPConn)
	s := &bindSocket{conn: uc, is6: network == "udp6"}
	if s.rc, err = uc.SyscallConn(); err != nil {
		uc.Close()
		return nil, 0, fmt.Errorf("raw %s socket on port %d: %w", network, port, err)
	}
	s.rc.Control(func(fd uintptr) { b.probeOffload(s, int(fd)) })
	return s, uc.LocalAddr().(*net.UDPAddr).Port, nil
}

// setSocketOptions runs before bind: buffers, PKTINFO for sticky sources,
// V6ONLY so the two sockets can share a port, and GRO if wanted.
func (b *Bind) setSocketOptions(fd int, is6 bool) error {
	size := b.opts.SocketBuffer
	// FORCE needs CAP_NET_ADMIN and passes net.core.{r,w}mem_max; without it
	// the plain option still gets up to that maximum.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
	}
	if is6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fmt.Errorf("IPV6_V6ONLY: %w", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("IP_PKTINFO: %w", err)
	}
	if !b.opts.NoOffload {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}
	return nil
}

// probeOffload records what the kernel gave: GRO only where it can be read
// back (kernels before 5.12 accept UDP_GRO but cannot report it; there it
// is switched off again rather than risk coalesced datagrams nobody splits).
func (b *Bind) probeOffload(s *bindSocket, fd int) {
	s.rcvbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	s.sndbuf, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if b.opts.NoOffload {
		return
	}
	_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	s.txOffload.Store(err == nil)
	gro, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO)
	s.rxOffload = err == nil && gro == 1
	if err != nil {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 0)
	}
}

func (s *bindSocket) close() error {
	if s == nil {
		return nil
	}
	return s.conn.Close()
}

// Close closes both sockets; receives under way return net.ErrClosed.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := errors.Join(b.v4.close(), b.v6.close())
	b.v4, b.v6, b.open = nil, nil, false
	return err
}

// SetMark sets SO_MARK (fwmark) on both sockets.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range []*bindSocket{b.v4, b.v6} {
		if s == nil {
			continue
		}
		var err error
		if cerr := s.rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); cerr != nil {
			return cerr
		}
		if err != nil {
			return fmt.Errorf("set fwmark %d: %w", mark, err)
		}
	}
	return nil
}

// socket is the open socket of addr's family, or why there is none.
func (b *Bind) socket(is6 bool) (*bindSocket, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return nil, net.ErrClosed
	}
	s := b.v4
	if is6 {
		s = b.v6
	}
	if s == nil {
		return nil, syscall.EAFNOSUPPORT
	}
	return s, nil
}

// ParseEndpoint parses a peer's endpoint, "198.51.100.7:51820" or
// "[2001:db8::7]:51820" (a zone is an interface name or index).
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", s, err)
	}
	var scope uint32
	if z := ap.Addr().Zone(); z != "" {
		if n, err := strconv.ParseUint(z, 10, 32); err == nil {
			scope = uint32(n)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			scope = uint32(ifi.Index)
		} else {
			return nil, fmt.Errorf("endpoint %q: zone %s: %w", s, z, err)
		}
	}
	return newEndpoint(epKey{ap: ap}, scope), nil
}
