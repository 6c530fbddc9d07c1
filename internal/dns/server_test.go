package dns

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func listenLoopback(t *testing.T, src Source) *Server {
	t.Helper()
	z := NewZone(Config{Domain: "prod.mesh.internal", Pool: netip.MustParsePrefix("100.100.0.0/16")}, src)
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), z, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func query(t *testing.T, net, addr, name string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	req := new(dns.Msg)
	req.SetQuestion(name, dns.TypeA)
	req.SetEdns0(1232, false)
	m, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", net, name, err)
	}
	return m
}

// Garbage and names over 255 bytes get FORMERR or nothing; the next
// query is answered.
func TestServerSurvivesGarbage(t *testing.T) {
	src := &fakeSource{hosts: []Host{{Name: "h1", Addr: netip.MustParseAddr("100.100.0.1"), Live: true}}}
	s := listenLoopback(t, src)
	addr := s.Addr().String()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	long := strings.Repeat("a", 63)
	oversized := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0} // header: one question
	for range 5 {                                                       // 5 labels of 63: 320 bytes of name
		oversized = append(oversized, 63)
		oversized = append(oversized, long...)
	}
	oversized = append(oversized, 0, 0, 1, 0, 1)
	for _, p := range [][]byte{{}, {0xff}, []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 1500), oversized,
		{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}} { // compression loop
		c.Write(p)
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("reply to garbage is not DNS: %v", err)
		}
		if m.Rcode != dns.RcodeFormatError && m.Rcode != dns.RcodeNotImplemented {
			t.Errorf("reply to garbage: %s, want FORMERR, NOTIMP or none", dns.RcodeToString[m.Rcode])
		}
	}
	if got := addrs(query(t, "udp", addr, "h1.prod.mesh.internal.")); len(got) != 1 {
		t.Fatalf("after garbage: %v", got)
	}
}

// A group too big for a datagram is truncated over UDP and whole over TCP.
func TestServerLargeGroupOverTCP(t *testing.T) {
	var hosts []Host
	for i := range 200 {
		hosts = append(hosts, Host{Name: fmt.Sprintf("h%d", i), Addr: netip.AddrFrom4([4]byte{100, 100, byte(i / 250), byte(i%250 + 1)}), Groups: []string{"big"}, Live: true})
	}
	s := listenLoopback(t, &fakeSource{hosts: hosts})
	m := query(t, "udp", s.Addr().String(), "big.group.prod.mesh.internal.")
	if !m.Truncated || len(m.Answer) >= 200 {
		t.Errorf("UDP answer for 200 members: tc %v with %d answers, want truncated", m.Truncated, len(m.Answer))
	}
	m = query(t, "tcp", s.Addr().String(), "big.group.prod.mesh.internal.")
	if m.Truncated || len(m.Answer) != 200 {
		t.Errorf("TCP answer for 200 members: tc %v with %d answers, want all 200", m.Truncated, len(m.Answer))
	}
	// The server counts an answer after writing it, so the client can read
	// the reply first: wait for the count rather than read it at once.
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().Answered < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.Answered != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 2 answered, none dropped", st)
	}
}

// A fixed port whose TCP side is taken is an error naming TCP, and the UDP
// side bound first is let go: nothing is left half-listening.
func TestListenFixedPortTakenLeavesNothing(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	at := netip.MustParseAddrPort(tcp.Addr().String())
	if _, _, err := listenBoth(at); err == nil || !strings.Contains(err.Error(), "listen tcp") {
		t.Fatalf("listenBoth(%s) with its TCP port taken: %v, want a listen tcp error", at, err)
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(at))
	if err != nil {
		t.Fatalf("UDP %s still held after the failed listen: %v", at, err)
	}
	udp.Close()
}
