// Command rr-profile records where a request/response round trip spends
// its time: sockperf's 64-byte UDP ping-pong (one message in flight) over
// meshd or Nebula between two testbed hosts, while perf records every
// scheduler switch and wake-up and every system call on the machine, then
// reads per round trip the thread wake-ups each daemon makes and the time
// from a datagram's receive to its TUN write (and from a TUN read to its
// send). With -gotrace it also saves a Go execution trace of both meshd
// processes (from their admin socket) during a second ping-pong run.
//
//	go build -o /tmp/rr-profile ./bench/cmd/rr-profile
//	/tmp/rr-profile -target meshd -out /tmp/rr-meshd -gotrace
//	/tmp/rr-profile -target nebula -nebula bench/out/nebula -out /tmp/rr-nebula
//	/tmp/rr-profile -analyze /tmp/rr-meshd
//
// It needs root, perf, sockperf and the built bin/meshd.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/meshd/meshd/bench/internal/nebula"
	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
)

const sockperfPort = "11111"

func main() {
	target := flag.String("target", "meshd", "what carries the ping-pong: meshd or nebula")
	out := flag.String("out", "/tmp/rr-profile", "directory for perf.data, the daemons' PIDs and fds, sockperf's output")
	bin := flag.String("bin", "bin", "directory with the built meshd")
	nebulaDir := flag.String("nebula", "bench/out/nebula", "directory with nebula and nebula-cert")
	fw := flag.String("firewall", "enforce", "meshd's firewall mode on both hosts")
	bind := flag.String("bind", "meshd", "meshd's interface.bind on both hosts: meshd or wireguard-go")
	secs := flag.Int("seconds", 3, "length of the perf recording (the ping-pong runs 3 s longer)")
	goTrace := flag.Bool("gotrace", false, "meshd: also save a Go execution trace of both daemons, in a second run")
	analyze := flag.String("analyze", "", "read a directory this command wrote and print the figures, instead of measuring")
	record := flag.Bool("perf", true, "record with perf (false: only the ping-pong, for its latency undisturbed)")
	flag.Parse()
	var err error
	if *analyze != "" {
		err = analyzeDir(*analyze, os.Stdout)
	} else {
		err = run(*target, *out, *bin, *nebulaDir, *fw, *bind, *secs, *goTrace, *record)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rr-profile:", err)
		os.Exit(1)
	}
}

// daemon is one side's overlay process, as the analysis needs it.
type daemon struct {
	host string
	pid  int
}

func run(target, out, bin, nebulaDir, fw, bind string, secs int, goTrace, record bool) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "rr-profile-")
	if err != nil {
		return err
	}
	tb, err := testbed.New(context.Background(), testbed.Options{Dir: logDir, ZooKeeper: target == "meshd"})
	if err != nil {
		return err
	}
	defer tb.Close()
	var hosts []*testbed.Host
	for i := 0; i < 2; i++ {
		h, err := tb.AddHost("vpc")
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
	}
	a, b := hosts[0], hosts[1]
	var daemons []daemon
	var meshds []*testbed.Meshd
	var addr string
	switch target {
	case "meshd":
		for _, h := range hosts {
			m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin, Firewall: fw, LogLevel: "warn", InstanceID: h.Name, Bind: bind})
			if err != nil {
				return err
			}
			defer m.Proc.Stop(5 * time.Second)
			meshds = append(meshds, m)
			daemons = append(daemons, daemon{h.Name, m.Proc.PID()})
		}
		st, err := meshds[1].Status()
		if err != nil {
			return err
		}
		addr = st.OverlayIP
	case "nebula":
		procs, ip, err := nebula.Start(tb, [2]*testbed.Host{hosts[0], hosts[1]}, nebulaDir, filepath.Join(logDir, "nebula"), "rr-profile")
		for _, p := range procs {
			defer p.Stop(5 * time.Second)
		}
		if err != nil {
			return err
		}
		for i, p := range procs {
			daemons = append(daemons, daemon{hosts[i].Name, p.PID()})
		}
		addr = ip
	default:
		return fmt.Errorf("-target %q: want meshd or nebula", target)
	}
	if err := a.WaitPing(addr, 20*time.Second); err != nil {
		return err
	}
	srv, err := tb.StartProcess(b, logDir+"/sockperf-server.log", "sockperf", "server", "-i", addr, "-p", sockperfPort)
	if err != nil {
		return err
	}
	defer srv.Stop(2 * time.Second)
	if err := waitUDP(b, sockperfPort, 5*time.Second); err != nil {
		return err
	}
	// The perf run: the system-wide recording starts once sockperf is past
	// its warm-up and ends before it stops.
	client, err := pingPong(tb, a, addr, secs+3, filepath.Join(out, "sockperf.txt"))
	if err != nil {
		return err
	}
	time.Sleep(1500 * time.Millisecond)
	if err := writeDaemons(filepath.Join(out, "daemons.txt"), daemons, srv.PID(), client.PID()); err != nil {
		return err
	}
	if !record {
		<-client.Exited()
		return printLatency(filepath.Join(out, "sockperf.txt"), target)
	}
	perf := exec.Command("perf", "record", "-q", "-a", "-o", filepath.Join(out, "perf.data"),
		"-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-e", "raw_syscalls:sys_enter", "-e", "raw_syscalls:sys_exit",
		"--", "sleep", fmt.Sprint(secs))
	perf.Stderr = os.Stderr
	if err := perf.Run(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	<-client.Exited()
	if !goTrace || target != "meshd" {
		return nil
	}
	// The Go trace run, apart: tracing slows every goroutine switch.
	client, err = pingPong(tb, a, addr, secs+3, filepath.Join(out, "sockperf-gotrace.txt"))
	if err != nil {
		return err
	}
	time.Sleep(1500 * time.Millisecond)
	errs := make(chan error, len(meshds))
	for _, m := range meshds {
		go func() { errs <- saveTrace(m, filepath.Join(out, m.Host.Name+".trace"), secs) }()
	}
	for range meshds {
		if err := <-errs; err != nil {
			return err
		}
	}
	<-client.Exited()
	return nil
}

// printLatency prints sockperf's ping-pong p50 and p99 from its output.
func printLatency(file, target string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	p := map[string]string{}
	for _, m := range percentile.FindAllStringSubmatch(ansi.ReplaceAllString(string(data), ""), -1) {
		p[m[1]] = m[2]
	}
	if p["50.000"] == "" {
		return fmt.Errorf("no percentiles in %s", file)
	}
	fmt.Printf("%s GOMAXPROCS=%s ping-pong UDP 64 B: p50 %s µs p99 %s µs\n", target, os.Getenv("GOMAXPROCS"), p["50.000"], p["99.000"])
	return nil
}

var (
	ansi       = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	percentile = regexp.MustCompile(`percentile\s+([0-9.]+)\s*=\s*([0-9.]+)`)
)

// pingPong starts sockperf's ping-pong client on h, its output to file,
// as a testbed process (stopped by PID at teardown).
func pingPong(tb *testbed.Testbed, h *testbed.Host, addr string, secs int, file string) (*testbed.Process, error) {
	return tb.StartProcess(h, file, "sockperf", "ping-pong", "--full-rtt", "-i", addr, "-p", sockperfPort, "-m", "64", "-t", fmt.Sprint(secs))
}

// writeDaemons records what the analysis reads perf's events against:
// each daemon's PID and what its file descriptors are (the TUN, the UDP
// sockets), and sockperf's server and client PIDs.
func writeDaemons(file string, ds []daemon, server, client int) error {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "daemon %s %d\n", d.host, d.pid)
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid))
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", d.pid, fd.Name()))
			if err == nil {
				fmt.Fprintf(&b, "fd %d %s %s\n", d.pid, fd.Name(), link)
			}
		}
	}
	fmt.Fprintf(&b, "sockperf-server %d\nsockperf-client %d\n", server, client)
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// saveTrace fetches a Go execution trace, secs long, from m's admin socket.
func saveTrace(m *testbed.Meshd, file string, secs int) error {
	c := &http.Client{Transport: admin.UnixTransport(m.Socket), Timeout: time.Duration(secs+30) * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://meshd/debug/pprof/trace?seconds=%d", secs))
	if err != nil {
		return fmt.Errorf("trace of %s: %w", m.Host.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("trace of %s: status %d %v", m.Host.Name, resp.StatusCode, err)
	}
	return os.WriteFile(file, data, 0o644)
}

func waitUDP(h *testbed.Host, port string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		out, _ := h.Run(context.Background(), "ss", "-Hlun", "sport = :"+port)
		if strings.Contains(out, ":"+port) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("sockperf server on %s not listening on udp/%s", h.Name, port)
}
