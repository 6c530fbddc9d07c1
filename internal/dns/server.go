package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// maxTCPConns bounds the TCP connections served at once; more are closed.
const maxTCPConns = 64

// udpSize is the largest datagram answered: the DNS flag day's size, which
// fits every path's MTU without fragments.
const udpSize = 1232

// Server serves a Zone over UDP and TCP on one address, to loopback and
// members only: anyone else gets no answer at all, not even an error, so
// the server cannot be used to reflect or amplify.
type Server struct {
	zone *Zone
	addr netip.AddrPort
	log  *slog.Logger
	udp  *dns.Server
	tcp  *dns.Server

	answered atomic.Uint64
	dropped  atomic.Uint64 // from non-members
}

// Stats counts what the server did since it started.
type Stats struct {
	Answered uint64 // replies sent
	Dropped  uint64 // queries and connections from non-members, unanswered
}

// listenBoth binds UDP and TCP on addr. With port 0 (tests) TCP takes the
// port UDP was given, and another process may hold that TCP port: then it
// tries again with a new one, a few times.
func listenBoth(addr netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		at := netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(at))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if addr.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || attempt == 7 {
			return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", at, err)
		}
	}
}

// Listen binds addr (UDP and TCP) and serves zone there until Close.
func Listen(addr netip.AddrPort, zone *Zone, log *slog.Logger) (*Server, error) {
	s := &Server{zone: zone, addr: addr, log: log}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	addr = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
	s.addr = addr
	s.udp = &dns.Server{
		PacketConn: pc, Handler: s,
		DecorateReader: func(r dns.Reader) dns.Reader { return memberReader{Reader: r, s: s} },
	}
	s.tcp = &dns.Server{
		Listener: &memberListener{Listener: ln, s: s, slots: make(chan struct{}, maxTCPConns)}, Handler: s,
		ReadTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }, MaxTCPQueries: 100,
	}
	// Wait until both serve: a Close before that would find nothing to shut down.
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				log.Error("dns: serving stopped", "listen", addr, "err", err)
			}
		}()
	}
	<-started
	<-started
	return s, nil
}

// Addr is where the server listens.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Stats reports the counters.
func (s *Server) Stats() Stats {
	return Stats{Answered: s.answered.Load(), Dropped: s.dropped.Load()}
}

// Close stops serving and releases the sockets.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
}

// allowed: loopback and the overlay addresses of known hosts.
func (s *Server) allowed(a net.Addr) bool {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		return false
	}
	ip := ap.Addr().Unmap()
	if ip.IsLoopback() || s.zone.IsMember(ip) {
		return true
	}
	s.dropped.Add(1)
	return false
}

// ServeDNS answers one parsed query. Non-members were filtered before
// parsing; the check is repeated so no path answers them.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if !s.allowed(w.RemoteAddr()) {
		return
	}
	m := s.zone.Answer(req)
	size := dns.MaxMsgSize
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(min(max(o.UDPSize(), dns.MinMsgSize), udpSize))
		}
	}
	// Large groups do not fit a datagram: TC set, the client retries over TCP.
	m.Truncate(size)
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns: write answer", "to", w.RemoteAddr(), "err", err)
		return
	}
	s.answered.Add(1)
}

// memberReader drops datagrams from non-members before the library parses
// them: even a malformed packet from a stranger gets no FORMERR back.
type memberReader struct {
	dns.Reader
	s *Server
}

func (r memberReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := r.Reader.ReadUDP(conn, timeout)
		if err != nil || r.s.allowed(sess.RemoteAddr()) {
			return m, sess, err
		}
	}
}

// memberListener closes TCP connections from non-members unread, and
// bounds how many are served at once.
type memberListener struct {
	net.Listener
	s     *Server
	slots chan struct{}
}

func (l *memberListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.s.allowed(c.RemoteAddr()) {
			c.Close()
			continue
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.s.log.Debug("dns: too many TCP connections; closing one", "from", c.RemoteAddr(), "limit", maxTCPConns)
			c.Close()
		}
	}
}

type slotConn struct {
	net.Conn
	closed  atomic.Bool
	release func()
}

func (c *slotConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}
