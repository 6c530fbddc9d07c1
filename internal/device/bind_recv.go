package device

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

const (
	recvControlSpace = pktinfo6Space + gsoSpace + 8 // PKTINFO and UDP_GRO (an int)

	// A WireGuard handshake initiation: message type 1, 148 bytes.
	initiationType = 1
	initiationSize = 148
)

// receiver is one socket's receive path. wireguard-go calls its ReceiveFunc
// from one goroutine; the mutex only makes a second caller safe, never
// contended in meshd.
type receiver struct {
	b     *Bind
	s     *bindSocket
	cache *epCache

	mu    sync.Mutex
	hdrs  [conn.IdealBatchSize]unix.Mmsghdr
	iovs  [conn.IdealBatchSize]unix.Iovec
	names [conn.IdealBatchSize]unix.RawSockaddrInet6
	oob   [conn.IdealBatchSize][recvControlSpace]byte
	msgs  [conn.IdealBatchSize]recvMsg
	// sawGRO: the last batch held coalesced messages, so the next reads few
	// messages, leaving room to split each into up to 64 datagrams.
	sawGRO bool

	// recvmmsg arguments and results, and the method value passed to
	// RawConn.Read, bound once so a receive allocates no closure.
	todo  []unix.Mmsghdr
	got   int
	errno error
	readF func(fd uintptr) bool
}

// recvMsg is what one received message holds once parsed.
type recvMsg struct {
	size, gso, segs, at int
	ep                  *Endpoint
}

func newReceiver(b *Bind, s *bindSocket) *receiver {
	r := &receiver{b: b, s: s, cache: newEPCache(b.opts.EndpointCache, &b.stats.endpointsMade)}
	r.readF = r.recvmmsg
	return r
}

func (r *receiver) receiveIPv4(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

func (r *receiver) receiveIPv6(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

// receive reads one batch into bufs. Without GRO it reads into every slot.
// With GRO the kernel may hand over one message holding up to 64
// datagrams, to be split into slots of their own: after a batch that had
// such messages it reads len(bufs)/64 messages, so any split fits; otherwise
// len(bufs)/2, and the rare overflow (coalescing that starts mid-batch in
// more than one message) is dropped and counted, as any UDP loss.
func (r *receiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	slots := min(len(bufs), len(sizes), len(eps), len(r.hdrs))
	if slots == 0 {
		return 0, nil
	}
	m := slots
	if r.s.rxOffload {
		m = max(1, slots/2)
		if r.sawGRO {
			m = max(1, slots/maxGSOSegments)
		}
	}
	for i := range m {
		h := &r.hdrs[i]
		r.iovs[i] = unix.Iovec{}
		if len(bufs[i]) > 0 {
			r.iovs[i].Base = &bufs[i][0]
			r.iovs[i].SetLen(len(bufs[i]))
		}
		h.Hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&r.names[i])), Namelen: unix.SizeofSockaddrInet6,
			Iov: &r.iovs[i], Iovlen: 1, Control: &r.oob[i][0]}
		h.Hdr.SetControllen(recvControlSpace)
		h.Len = 0
	}
	r.todo, r.got, r.errno = r.hdrs[:m], 0, nil
	err := r.s.rc.Read(r.readF)
	r.todo = nil
	if err != nil {
		return 0, err
	}
	if r.errno != nil {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	n := r.got

	// Parse every message and lay out where its datagrams go.
	total, coalesced := 0, false
	for i := range n {
		msg := &r.msgs[i]
		h := &r.hdrs[i]
		msg.size, msg.segs, msg.at = int(h.Len), 1, total
		key, scope, ok := parseSockaddr(&r.names[i], h.Hdr.Namelen)
		var gso int
		key.src, key.ifidx, gso = parseControl(r.oob[i][:h.Hdr.Controllen])
		if gso > 0 && msg.size > gso {
			msg.segs = (msg.size + gso - 1) / gso
			coalesced = true
			r.b.stats.groSplits.Add(1)
		}
		msg.gso = gso
		msg.ep = nil
		if ok {
			msg.ep = r.cache.get(key, scope)
		}
		total += msg.segs
	}
	r.sawGRO = coalesced

	// Move datagrams to their slots, last message first: a message's slots
	// lie at or after its own, and after every earlier message's, so
	// nothing is overwritten before it was moved; the first segment of a
	// message that stays in place is copied last (not at all).
	var dropped uint64
	for i := n - 1; i >= 0; i-- {
		msg := &r.msgs[i]
		for k := msg.segs - 1; k >= 0; k-- {
			o := msg.at + k
			if o >= slots {
				dropped++
				continue
			}
			start, end := 0, msg.size
			if msg.segs > 1 {
				start, end = k*msg.gso, min((k+1)*msg.gso, msg.size)
			}
			if o != i {
				copy(bufs[o], bufs[i][start:end])
			}
			sizes[o] = end - start
			if msg.ep == nil {
				sizes[o] = 0 // no sender address: nothing to answer, drop
				eps[o] = nil
			} else {
				eps[o] = msg.ep
			}
		}
		r.msgs[i].ep = nil
	}
	if dropped > 0 {
		r.b.stats.groDropped.Add(dropped)
	}
	out := min(total, slots)
	if hook := r.b.opts.OnInitiation; hook != nil {
		for o := range out {
			if sizes[o] == initiationSize && binary.LittleEndian.Uint32(bufs[o][:4]) == initiationType {
				ep := eps[o].(*Endpoint)
				r.b.noteInitiation(ep)
				hook(ep.AddrPort(), bufs[o][:initiationSize])
			}
		}
	}
	return out, nil
}

// recvmmsg is called by RawConn.Read; false means "wait until readable".
func (r *receiver) recvmmsg(fd uintptr) bool {
	var done bool
	r.got, done, r.errno = mmsg(unix.SYS_RECVMMSG, fd, r.todo)
	return done
}

// mmsg makes one recvmmsg or sendmmsg (trap) call on the non-blocking
// socket fd, the way RawConn.Read and Write call their function: done is
// false when the socket would block, so the runtime's poller waits for it.
// n is how many of msgs went through; err is a failure other than that.
func mmsg(trap, fd uintptr, msgs []unix.Mmsghdr) (n int, done bool, err error) {
	for {
		r, _, errno := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		switch errno {
		case 0:
			return int(r), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, false, nil
		default:
			return 0, true, errno
		}
	}
}

// parseSockaddr reads a sender's address from the raw sockaddr the kernel
// wrote; ok is false if it is not an IP address.
func parseSockaddr(sa *unix.RawSockaddrInet6, n uint32) (k epKey, scope uint32, ok bool) {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		k.ap = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
		return k, 0, true
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		k.ap = netip.AddrPortFrom(zoneOf(netip.AddrFrom16(sa.Addr), sa.Scope_id), port)
		return k, sa.Scope_id, true
	}
	return k, 0, false
}

// parseControl reads the local address and interface a datagram came in
// on (IP_PKTINFO, IPV6_PKTINFO) and the segment size of a coalesced one
// (UDP_GRO).
func parseControl(b []byte) (src netip.Addr, ifidx int32, gso int) {
	for len(b) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(b)
		if err != nil {
			return src, ifidx, gso
		}
		b = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			src, ifidx = netip.AddrFrom4(info.Spec_dst), info.Ifindex
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			src, ifidx = netip.AddrFrom16(info.Addr), int32(info.Ifindex)
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			gso = int(*(*int32)(unsafe.Pointer(&data[0])))
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= sizeofGSO:
			gso = int(*(*uint16)(unsafe.Pointer(&data[0])))
		}
	}
	return src, ifidx, gso
}

// appendPktinfo appends the control message that sends from src (and out
// of ifidx, as the datagram we answer came in).
func appendPktinfo(b []byte, src netip.Addr, ifidx int32) []byte {
	if src.Is4() {
		b, data := appendCmsg(b, unix.IPPROTO_IP, unix.IP_PKTINFO, unix.SizeofInet4Pktinfo)
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
		info.Ifindex, info.Spec_dst = ifidx, src.As4()
		return b
	}
	b, data := appendCmsg(b, unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unix.SizeofInet6Pktinfo)
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
	info.Ifindex, info.Addr = uint32(ifidx), src.As16()
	return b
}

// appendGSO appends UDP_SEGMENT: the kernel splits the message into
// datagrams of size bytes (the last may be shorter).
func appendGSO(b []byte, size uint16) []byte {
	b, data := appendCmsg(b, unix.SOL_UDP, unix.UDP_SEGMENT, sizeofGSO)
	*(*uint16)(unsafe.Pointer(&data[0])) = size
	return b
}

// appendCmsg appends a zeroed control message with room for n bytes of
// data (within b's capacity) and returns the data part to fill.
func appendCmsg(b []byte, level, typ, n int) ([]byte, []byte) {
	start, space := len(b), unix.CmsgSpace(n)
	b = b[:start+space]
	clear(b[start:])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(n))
	return b, b[start+unix.CmsgLen(0) : start+unix.CmsgLen(0)+n]
}
