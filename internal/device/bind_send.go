package device

import (
	"errors"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

const (
	// Exceeding these gives EMSGSIZE: the most UDP payload one (GSO) send may
	// carry, and the most segments the kernel splits one into.
	maxIPv4Payload   = 1<<16 - 1 - 20 - 8
	maxIPv6Payload   = 1<<16 - 1 - 8
	maxGSOSegments   = 64
	sizeofGSO        = 2
	pktinfo6Space    = 40 // unix.CmsgSpace(unix.SizeofInet6Pktinfo), the larger PKTINFO
	gsoSpace         = 24 // unix.CmsgSpace(sizeofGSO)
	sendControlSpace = pktinfo6Space + gsoSpace
)

// sendBatch is one Send's mmsghdrs, iovecs and control messages, pooled.
// Only the slots a Send filled are cleared when it is returned.
type sendBatch struct {
	hdrs [conn.IdealBatchSize]unix.Mmsghdr
	iovs [conn.IdealBatchSize]unix.Iovec
	data [conn.IdealBatchSize][]byte // payload of each message (coalesced for GSO)
	oob  [conn.IdealBatchSize][sendControlSpace]byte
	used int
	gso  int // messages of the last build that carry more than one datagram

	// sendmmsg arguments and results, and the method value passed to
	// RawConn.Write, bound once so a Send allocates no closure.
	todo   []unix.Mmsghdr
	sent   int
	errno  error
	writeF func(fd uintptr) bool
}

func newSendBatch() *sendBatch {
	sb := &sendBatch{}
	sb.writeF = sb.sendmmsg
	return sb
}

func (b *Bind) putSendBatch(sb *sendBatch) {
	for i := range sb.used {
		sb.hdrs[i] = unix.Mmsghdr{}
		sb.iovs[i] = unix.Iovec{}
		sb.data[i] = nil // do not keep wireguard-go's buffers alive
	}
	sb.used, sb.todo = 0, nil
	b.sendPool.Put(sb)
}

// Send sends bufs to ep in as few system calls as the kernel allows: one
// sendmmsg for the batch, and with GSO runs of equal-sized datagrams as one
// message each.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	s, err := b.socket(e.DstIP().Is6())
	if err != nil {
		return err
	}
	sb := b.sendPool.Get().(*sendBatch)
	defer b.putSendBatch(sb)
	gso := s.txOffload.Load()
	src, ifidx, sticky := e.sticky()
	gsoRefused := false
	for {
		err = s.send(sb, sb.build(bufs, e, gso, src, ifidx, sticky))
		if err == nil {
			b.stats.gsoSends.Add(uint64(sb.gso))
			break
		}
		if gso && errors.Is(err, unix.EIO) {
			// The route's device cannot checksum for UDP_SEGMENT: stop using
			// GSO on this socket and send the batch again without it.
			s.txOffload.Store(false)
			gso, gsoRefused = false, true
			continue
		}
		if sticky && staleSource(err) {
			// The sticky source is gone (address removed or moved): forget it
			// and let the kernel choose, as the route listener would have had
			// us do (wireguard-go runs that for StdNetBind only).
			e.ClearSrc()
			b.stats.srcCleared.Add(1)
			sticky = false
			continue
		}
		break
	}
	if gsoRefused {
		return conn.ErrUDPGSODisabled{RetryErr: err}
	}
	return err
}

// staleSource reports an error that a sticky source no longer valid causes.
func staleSource(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENETUNREACH)
}

// build fills the batch's messages for bufs and reports how many. With gso,
// consecutive datagrams of one size (the last may be shorter) are appended
// into the first one's buffer, as StdNetBind does: wireguard-go's buffers
// have room behind each packet.
func (sb *sendBatch) build(bufs [][]byte, e *Endpoint, gso bool, src netip.Addr, ifidx int32, sticky bool) int {
	maxPayload := maxIPv4Payload
	if e.DstIP().Is6() {
		maxPayload = maxIPv6Payload
	}
	n := -1
	sb.gso = 0
	var segSize, segs int
	closed := false // the current message ended with a short datagram
	for i, buf := range bufs {
		if gso && i > 0 && !closed && segs < maxGSOSegments &&
			len(buf) <= segSize && len(sb.data[n])+len(buf) <= maxPayload &&
			len(buf) <= cap(sb.data[n])-len(sb.data[n]) {
			sb.data[n] = append(sb.data[n], buf...)
			segs++
			closed = len(buf) < segSize
			continue
		}
		if n >= 0 {
			sb.finish(n, e, segSize, segs, src, ifidx, sticky)
		}
		n++
		sb.data[n] = buf
		segSize, segs, closed = len(buf), 1, false
	}
	if n >= 0 {
		sb.finish(n, e, segSize, segs, src, ifidx, sticky)
	}
	if n+1 > sb.used {
		sb.used = n + 1
	}
	return n + 1
}

// finish sets message i's header: destination, payload and control
// messages (sticky source, GSO segment size).
func (sb *sendBatch) finish(i int, e *Endpoint, segSize, segs int, src netip.Addr, ifidx int32, sticky bool) {
	h := &sb.hdrs[i]
	h.Hdr = unix.Msghdr{Name: &e.sa[0], Namelen: e.salen, Iov: &sb.iovs[i], Iovlen: 1}
	h.Len = 0
	d := sb.data[i]
	sb.iovs[i] = unix.Iovec{}
	if len(d) > 0 {
		sb.iovs[i].Base = &d[0]
		sb.iovs[i].SetLen(len(d))
	}
	oob := sb.oob[i][:0]
	if sticky {
		oob = appendPktinfo(oob, src, ifidx)
	}
	if segs > 1 {
		sb.gso++
		oob = appendGSO(oob, uint16(segSize))
	}
	if len(oob) > 0 {
		h.Hdr.Control = &sb.oob[i][0]
		h.Hdr.SetControllen(len(oob))
	}
}

// send writes the first n messages, going on where the kernel stopped.
func (s *bindSocket) send(sb *sendBatch, n int) error {
	sb.todo = sb.hdrs[:n]
	for len(sb.todo) > 0 {
		sb.sent, sb.errno = 0, nil
		if err := s.rc.Write(sb.writeF); err != nil {
			return err
		}
		if sb.errno != nil {
			return os.NewSyscallError("sendmmsg", sb.errno)
		}
		sb.todo = sb.todo[sb.sent:]
	}
	return nil
}

// sendmmsg is called by RawConn.Write; false means "wait until writable".
func (sb *sendBatch) sendmmsg(fd uintptr) bool {
	var done bool
	sb.sent, done, sb.errno = mmsg(unix.SYS_SENDMMSG, fd, sb.todo)
	return done
}
