// Package zkserver runs a real ZooKeeper server from Debian's zookeeper
// package for tests, the testbed and benchmarks: standalone or as an
// ensemble, on loopback or inside a network namespace, optionally with TLS.
// Servers are stopped by PID, never by name.
package zkserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Classpath is the server's classpath: the packaged zookeeper.jar lists its
// dependencies in its manifest but omits netty-codec, which the TLS
// (Netty) connection factory needs.
const Classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/netty-codec.jar:/usr/share/java/netty-transport-native-unix-common.jar"

// TLS makes the server also serve a TLS client port.
type TLS struct {
	CertKeyFile string // PEM: PKCS#8 key and certificate in one file
	CAFile      string // PEM: CA for client certificates
	Port        int
}

// Options describe one server.
type Options struct {
	Netns  string // run inside this network namespace ("" = this one)
	Host   string // client address; default 127.0.0.1
	Port   int    // client port; 0 picks a free one (loopback only)
	Dir    string // data and config; "" = a temp dir removed by Stop
	TLS    *TLS
	Logger *slog.Logger
	// Heap is the JVM's -Xmx; "" keeps 192m, enough for tests. A fleet
	// of thousands of sessions, each with hundreds of watches, needs more.
	Heap string
	// Fsync makes the server sync its transaction log to disk before it
	// answers a write, as ZooKeeper does in production; the benchmarks
	// set it. Tests leave it off (forceSync=no): their data need survive
	// a server restart, not a machine crash, and on a disk busy with a
	// build's writes one fsync held a session's creation for over 20 s,
	// failing a test whose meshd never got a lease (CI).
	Fsync bool
	// ListenBacklog is the client port's accept queue
	// (clientPortListenBacklog); 0 keeps Java's default of 50. A fleet
	// reconnecting at once after a restart overflows the default.
	ListenBacklog int

	// Members, for StartEnsemble only, places each server (see there).
	Members []Member
	// Observers, for StartEnsemble only, is how many observers to start
	// beside the voters: members that serve clients and watches and
	// forward writes, but neither vote nor count towards the quorum.
	Observers int

	// set by StartEnsemble
	myID     int
	servers  []string
	observer bool
}

// Server is one running ZooKeeper.
type Server struct {
	o       Options
	tempDir bool
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start writes the config and starts the server, returning once it answers
// ruok with imok.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{o: o}
	if s.o.Dir == "" {
		d, err := os.MkdirTemp("", "zk-")
		if err != nil {
			return nil, err
		}
		s.o.Dir, s.tempDir = d, true
	}
	if s.o.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.o.Port = p
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) writeConfig() error {
	data := filepath.Join(s.o.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	cfg := []string{
		"tickTime=500",
		"initLimit=20",
		"syncLimit=10",
		"dataDir=" + data,
		fmt.Sprintf("clientPort=%d", s.o.Port),
		"clientPortAddress=" + s.o.Host,
		"admin.enableServer=false",
		"4lw.commands.whitelist=ruok,srvr,mntr,stat,cons,wchs,wchc,dump,conf",
		"maxClientCnxns=0",
		// Sessions as short as the clients ask (tests force expiry).
		"minSessionTimeout=1000",
		"maxSessionTimeout=60000",
		"snapCount=100000",
		"autopurge.purgeInterval=0",
	}
	if !s.o.Fsync {
		cfg = append(cfg, "forceSync=no")
	}
	if s.o.ListenBacklog > 0 {
		cfg = append(cfg, fmt.Sprintf("clientPortListenBacklog=%d", s.o.ListenBacklog))
	}
	if t := s.o.TLS; t != nil {
		cfg = append(cfg,
			"serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
			fmt.Sprintf("secureClientPort=%d", t.Port),
			"secureClientPortAddress="+s.o.Host,
			"ssl.keyStore.location="+t.CertKeyFile,
			"ssl.keyStore.type=PEM",
			"ssl.trustStore.location="+t.CAFile,
			"ssl.trustStore.type=PEM",
			"ssl.clientAuth=want",
		)
	}
	if s.o.observer {
		cfg = append(cfg, "peerType=observer")
	}
	if len(s.o.servers) > 0 {
		cfg = append(cfg, s.o.servers...)
		if err := os.WriteFile(filepath.Join(data, "myid"), []byte(fmt.Sprint(s.o.myID)), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(s.o.Dir, "zoo.cfg"), []byte(strings.Join(cfg, "\n")+"\n"), 0o644)
}

func (s *Server) start(ctx context.Context) error {
	heap := s.o.Heap
	if heap == "" {
		heap = "192m"
	}
	args := []string{"-Xmx" + heap, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.log.dir=" + s.o.Dir, "-Dzookeeper.root.logger=INFO,CONSOLE",
		"-Dzookeeper.jmx.log4j.disable=true",
		"-cp", Classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(s.o.Dir, "zoo.cfg")}
	name := "java"
	if s.o.Netns != "" {
		args = append([]string{"netns", "exec", s.o.Netns, "java"}, args...)
		name = "ip"
	}
	log, err := os.OpenFile(filepath.Join(s.o.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd = exec.Command(name, args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// Its own process group, so a Ctrl-C of the test run does not race our
	// orderly Stop, and Stop can signal the JVM behind `ip netns exec`.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start zookeeper: %w", err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	if len(s.o.servers) > 0 {
		return nil // an ensemble member serves only once a quorum forms
	}
	return s.WaitReady(ctx, 60*time.Second)
}

// WaitReady polls ruok until the server answers imok.
func (s *Server) WaitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := s.FourLetter("ruok")
		if err == nil && out == "imok" {
			// imok comes before the server serves requests: wait for a mode.
			if st, err := s.FourLetter("srvr"); err == nil && strings.Contains(st, "Mode:") {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("zookeeper on %s exited during start:\n%s", s.Addr(), s.LogTail(30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper on %s not ready after %s (last: %v):\n%s", s.Addr(), limit, err, s.LogTail(30))
		}
	}
}

// FourLetter sends a four-letter command to this server.
func (s *Server) FourLetter(cmd string) (string, error) {
	if s.o.Netns != "" {
		// The server is not reachable from this namespace: ask from inside.
		return fourLetterNetns(s.o.Netns, s.Addr(), cmd)
	}
	return FourLetter(s.Addr(), cmd)
}

// FourLetter sends a four-letter command to addr and returns the answer.
func FourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return strings.TrimSpace(b.String()), nil
}

// Addr is the client address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.o.Host, fmt.Sprint(s.o.Port)) }

// SecureAddr is the TLS client address, or "".
func (s *Server) SecureAddr() string {
	if s.o.TLS == nil {
		return ""
	}
	return net.JoinHostPort(s.o.Host, fmt.Sprint(s.o.TLS.Port))
}

// PID is the server process (or `ip netns exec` that became it).
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Dir is the server's data and config directory.
func (s *Server) Dir() string { return s.o.Dir }

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	data, _ := os.ReadFile(filepath.Join(s.o.Dir, "server.log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 5*time.Second) }

// Halt stops the server (SIGTERM, then SIGKILL) but keeps its data for
// Restart.
func (s *Server) Halt() {
	if !s.signal(syscall.SIGTERM, 5*time.Second) {
		s.signal(syscall.SIGKILL, 5*time.Second)
	}
}

// Freeze stops the server's processes (SIGSTOP) without ending them: the
// kernel still accepts connections on its port and nothing answers, as
// with a server stuck in a pause. Thaw resumes it.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP, 0) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT, 0) }

// Stop halts the server and removes its temp dir if Start made one.
func (s *Server) Stop() error {
	s.Halt()
	if s.tempDir {
		return os.RemoveAll(s.o.Dir)
	}
	return nil
}

// Restart starts a halted server again on the same ports and data.
func (s *Server) Restart(ctx context.Context) error {
	s.Halt()
	return s.start(ctx)
}

// signal sends sig to the server's process group and reports whether it
// exited within limit.
func (s *Server) signal(sig syscall.Signal, limit time.Duration) bool {
	if s.cmd == nil || s.cmd.Process == nil {
		return true
	}
	select {
	case <-s.exited:
		return true
	default:
	}
	syscall.Kill(-s.cmd.Process.Pid, sig)
	select {
	case <-s.exited:
		return true
	case <-time.After(limit):
		return false
	}
}

// FreePort asks the kernel for a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var errNoAnswer = errors.New("no answer")

// fourLetterNetns runs a four-letter command from inside a namespace with
// bash's /dev/tcp, so no helper binary is needed there.
func fourLetterNetns(ns, addr, cmd string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && printf %s >&3 && timeout 2 cat <&3", host, port, cmd)
	out, err := exec.Command("ip", "netns", "exec", ns, "bash", "-c", script).Output()
	if err != nil {
		return "", fmt.Errorf("%s from namespace %s: %w", cmd, ns, err)
	}
	if len(out) == 0 {
		return "", errNoAnswer
	}
	return strings.TrimSpace(string(out)), nil
}
