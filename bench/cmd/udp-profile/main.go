// Command udp-profile records a system-wide CPU profile (perf record -a -g)
// of a 64-byte UDP flood over meshd between two testbed hosts, with the
// firewall in the given mode on both, so the kernel's share of the
// firewall's cost can be read with perf report:
//
//	go build -o /tmp/udp-profile ./bench/cmd/udp-profile
//	/tmp/udp-profile -firewall enforce -out /tmp/perf-enforce.data
//	perf report -i /tmp/perf-enforce.data --no-children --sort sym -g none
//
// With -perf=false it only runs the flood and prints meshd's CPU; -tcp runs
// one full-size TCP stream instead of the flood.
//
// It needs root, perf and the built bin/meshd.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

func main() {
	fw := flag.String("firewall", "enforce", "firewall mode on both hosts: enforce or off")
	out := flag.String("out", "/tmp/perf.data", "perf data file")
	bin := flag.String("bin", "bin", "directory with the built meshd")
	secs := flag.Int("seconds", 8, "length of the profile (the flood runs 2 s longer)")
	bind := flag.String("bind", "meshd", "interface.bind on both hosts: meshd or wireguard-go")
	record := flag.Bool("perf", true, "record the profile (false: only the flood, for its rate)")
	tcp := flag.Bool("tcp", false, "one full-size TCP stream instead of the 64-byte UDP flood")
	rate := flag.String("rate", "0", "iperf3 -b for the UDP flood: bits/s of 64-byte payload offered, as 20M (0: as fast as iperf3 sends; 64 bytes at 1 Mbit/s are 1953 packets/s)")
	lazy := flag.Bool("lazy", true, "peers.lazy on both hosts (false: every peer in the device, as meshd-bench's rounds run)")
	flag.Parse()
	if err := run(*fw, *out, *bin, *bind, *secs, *record, *tcp, *lazy, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "udp-profile:", err)
		os.Exit(1)
	}
}

func run(fw, out, bin, bind string, secs int, record, tcp, lazy bool, rate string) error {
	logDir, err := os.MkdirTemp("", "udp-profile-")
	if err != nil {
		return err
	}
	tb, err := testbed.New(context.Background(), testbed.Options{Dir: logDir, ZooKeeper: true})
	if err != nil {
		return err
	}
	defer tb.Close()
	var ms []*testbed.Meshd
	for i := 0; i < 2; i++ {
		h, err := tb.AddHost("vpc")
		if err != nil {
			return err
		}
		extra := ""
		if !lazy {
			extra = "peers:\n  lazy: false\n"
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin, Firewall: fw, LogLevel: "warn", InstanceID: h.Name, Bind: bind, Extra: extra})
		if err != nil {
			return err
		}
		defer m.Proc.Stop(5 * time.Second)
		ms = append(ms, m)
	}
	a, b := ms[0].Host, ms[1].Host
	st, err := ms[1].Status()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := a.Run(context.Background(), "ping", "-c1", "-W1", st.OverlayIP); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s cannot reach %s over the mesh", a.Name, st.OverlayIP)
		}
	}
	srv, err := tb.StartProcess(b, logDir+"/iperf3.log", "iperf3", "-s", "--forceflush", "-B", st.OverlayIP)
	if err != nil {
		return err
	}
	defer srv.Stop(time.Second)
	for !listening(b) {
		if time.Now().After(deadline) {
			return fmt.Errorf("iperf3 server on %s not listening", b.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	args := []string{"-c", st.OverlayIP, "-t", fmt.Sprint(secs + 2)}
	if !tcp {
		args = append(args, "-u", "-l", "64", "-b", rate)
	}
	flood := a.Command(context.Background(), "iperf3", args...)
	flood.Stdout = os.Stdout
	if err := flood.Start(); err != nil {
		return err
	}
	if !record {
		// The CPU both meshd processes spend for the flood: on a loaded
		// machine a steadier figure than the rate, read per delivered
		// datagram against iperf3's receiver line.
		before := []time.Duration{cpuOf(ms[0].Proc.PID()), cpuOf(ms[1].Proc.PID())}
		err := flood.Wait()
		fmt.Printf("meshd CPU during the flood: sender %s, receiver %s\n",
			cpuOf(ms[0].Proc.PID())-before[0], cpuOf(ms[1].Proc.PID())-before[1])
		return err
	}
	time.Sleep(time.Second) // past the start of the flood
	perf := exec.Command("perf", "record", "-a", "-g", "-o", out, "--", "sleep", fmt.Sprint(secs))
	perf.Stderr = os.Stderr
	if err := perf.Run(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	return flood.Wait()
}

func listening(h *testbed.Host) bool {
	out, _ := h.Run(context.Background(), "ss", "-Hltn", "sport = :5201")
	return len(out) > 0
}

// cpuOf is the user and system time a process has used so far (from
// /proc/PID/stat, in clock ticks of 10 ms).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}
