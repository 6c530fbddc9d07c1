package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Linux x86-64 system call numbers the analysis tells apart.
const (
	sysRead     = 0
	sysWrite    = 1
	sysWritev   = 20
	sysSendto   = 44
	sysRecvfrom = 45
	sysSendmsg  = 46
	sysRecvmsg  = 47
	sysRecvmmsg = 299
	sysSendmmsg = 307
)

var sysNames = map[int]string{0: "read", 1: "write", 20: "writev", 35: "nanosleep", 44: "sendto", 45: "recvfrom",
	46: "sendmsg", 47: "recvmsg", 202: "futex", 232: "epoll_wait", 281: "epoll_pwait", 299: "recvmmsg", 307: "sendmmsg", 24: "sched_yield"}

// event is one line of perf script: a system call's entry or exit, a
// wake-up or a switch, at t µs.
type event struct {
	t         float64
	tgid, tid int
	kind      string // enter, exit, wakeup, switch
	nr        int
	fd        int   // enter: the first argument
	ret       int64 // exit
	other     int   // wakeup: the woken thread; switch: the thread switched out
	next      int   // switch: the thread switched in
	state     string
}

// profiled is what the analysis keeps per daemon.
type profiled struct {
	host      string
	pid       int
	tun       int          // the TUN's fd
	sockets   map[int]bool // its socket fds
	syscalls  map[int]int
	wakeIn    int // its threads woken by its own threads (a hand-off)
	wakeOut   int // its threads woken from outside (the kernel on a packet, another process)
	switches  int // its threads leaving the CPU to sleep
	tunWrites int
	onCPU     float64         // µs its threads ran
	delays    []float64       // µs from a wake-up of one of its threads to its running
	woken     map[int]float64 // by thread: when it was woken, until it runs
	running   map[int]float64 // by thread: since when it runs
	// The two paths through the daemon, each from the moment the packet
	// is handed to it to the system call that passes it on.
	in, out, inArrive, outArrive []float64
	inWakes, outWakes            []float64
	// state of the paths in progress
	inStart, outStart, lastExt, lastDone float64
	inArr, outArr                        float64
	inN, outN                            int
}

func analyzeDir(dir string, w io.Writer) error {
	ds, err := readDaemons(filepath.Join(dir, "daemons.txt"))
	if err != nil {
		return err
	}
	script := filepath.Join(dir, "script.txt")
	if _, err := os.Stat(script); err != nil {
		out, err := os.Create(script)
		if err != nil {
			return err
		}
		cmd := exec.Command("perf", "script", "-i", filepath.Join(dir, "perf.data"), "-F", "pid,tid,cpu,time,event,trace")
		cmd.Stdout = out
		err = cmd.Run()
		out.Close()
		if err != nil {
			os.Remove(script)
			return fmt.Errorf("perf script: %w", err)
		}
	}
	evs, tgidOf, err := readScript(script)
	if err != nil {
		return err
	}
	byPid := map[int]*profiled{}
	for _, d := range ds {
		byPid[d.pid] = d
	}
	pending := map[int]event{} // by thread: its last system call entry
	for _, e := range evs {
		switch e.kind {
		case "enter":
			pending[e.tid] = e
		case "exit":
			if en, ok := pending[e.tid]; ok && en.nr == e.nr {
				e.fd = en.fd
			} else {
				e.fd = -1
			}
			delete(pending, e.tid)
		}
		if e.kind == "switch" {
			if d := byPid[tgidOf[e.other]]; d != nil && d.running[e.other] > 0 {
				d.onCPU += e.t - d.running[e.other]
				d.running[e.other] = 0
			}
			if d := byPid[tgidOf[e.next]]; d != nil {
				d.running[e.next] = e.t
				if w := d.woken[e.next]; w > 0 {
					d.delays = append(d.delays, e.t-w)
					d.woken[e.next] = 0
				}
			}
		}
		if e.kind == "wakeup" {
			d := byPid[tgidOf[e.other]]
			if d == nil {
				continue
			}
			d.woken[e.other] = e.t
			if e.tgid == d.pid {
				d.wakeIn++
				if d.inStart > 0 {
					d.inN++
				}
				if d.outStart > 0 {
					d.outN++
				}
			} else {
				d.wakeOut++
				d.lastExt = e.t
			}
			continue
		}
		d := byPid[e.tgid]
		if d == nil {
			continue
		}
		d.step(e)
	}
	for _, d := range ds {
		d.report(w)
	}
	traces, _ := filepath.Glob(filepath.Join(dir, "*.trace"))
	for _, t := range traces {
		if err := analyzeGoTrace(t, w); err != nil {
			return err
		}
	}
	return nil
}

// step follows one daemon's own events: the datagram path (a socket
// receive, then the TUN write) and the TUN path (a TUN read, then the
// socket send).
func (d *profiled) step(e event) {
	switch e.kind {
	case "switch":
		if e.state != "R" && e.state != "R+" {
			d.switches++
		}
	case "enter":
		d.syscalls[e.nr]++
		switch {
		case (e.nr == sysWrite || e.nr == sysWritev) && e.fd == d.tun:
			d.tunWrites++
			if d.inStart > 0 {
				d.in = append(d.in, e.t-d.inStart)
				if d.inArr > 0 {
					d.inArrive = append(d.inArrive, e.t-d.inArr)
				}
				d.inWakes = append(d.inWakes, float64(d.inN))
				d.inStart = 0
			}
			d.lastDone = e.t
		case (e.nr == sysSendmmsg || e.nr == sysSendmsg || e.nr == sysSendto || e.nr == sysWrite) && d.sockets[e.fd]:
			if d.outStart > 0 {
				d.out = append(d.out, e.t-d.outStart)
				if d.outArr > 0 {
					d.outArrive = append(d.outArrive, e.t-d.outArr)
				}
				d.outWakes = append(d.outWakes, float64(d.outN))
				d.outStart = 0
			}
			d.lastDone = e.t
		}
	case "exit":
		if e.ret <= 0 {
			return
		}
		// The external wake-up that preceded the read, if it came after
		// the last packet was passed on: when the packet became ready.
		arrival := 0.0
		if d.lastExt > d.lastDone {
			arrival = d.lastExt
		}
		switch {
		case (e.nr == sysRecvmmsg || e.nr == sysRecvmsg || e.nr == sysRecvfrom) && d.sockets[e.fd] && d.inStart == 0:
			d.inStart, d.inArr, d.inN = e.t, arrival, 0
		case e.nr == sysRead && e.fd == d.tun && d.outStart == 0:
			d.outStart, d.outArr, d.outN = e.t, arrival, 0
		}
	}
}

func (d *profiled) report(w io.Writer) {
	rt := float64(max(d.tunWrites, 1))
	fmt.Fprintf(w, "%s (pid %d): %d TUN writes (one a round trip)\n", d.host, d.pid, d.tunWrites)
	fmt.Fprintf(w, "  per round trip: %.2f wake-ups of its threads (%.2f by its own threads, %.2f from outside), %.2f switches to sleep\n",
		float64(d.wakeIn+d.wakeOut)/rt, float64(d.wakeIn)/rt, float64(d.wakeOut)/rt, float64(d.switches)/rt)
	fmt.Fprintf(w, "  on CPU %.1f µs per round trip; wake-up to running %s\n", d.onCPU/rt, pcts(d.delays))
	type kv struct {
		nr, n int
	}
	var sc []kv
	total := 0
	for nr, n := range d.syscalls {
		sc = append(sc, kv{nr, n})
		total += n
	}
	slices.SortFunc(sc, func(a, b kv) int { return b.n - a.n })
	var parts []string
	for _, s := range sc[:min(len(sc), 8)] {
		name := sysNames[s.nr]
		if name == "" {
			name = "nr" + strconv.Itoa(s.nr)
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", name, float64(s.n)/rt))
	}
	fmt.Fprintf(w, "  system calls per round trip: %.1f (%s)\n", float64(total)/rt, strings.Join(parts, ", "))
	fmt.Fprintf(w, "  socket receive -> TUN write:   %s; in-process wake-ups on the way %s\n", pcts(d.in), pcts(d.inWakes))
	fmt.Fprintf(w, "  wake on arrival -> TUN write:  %s\n", pcts(d.inArrive))
	fmt.Fprintf(w, "  TUN read -> socket send:       %s; in-process wake-ups on the way %s\n", pcts(d.out), pcts(d.outWakes))
	fmt.Fprintf(w, "  wake on TUN packet -> send:    %s\n", pcts(d.outArrive))
}

// pcts is "p50 X p90 Y (n)" of xs.
func pcts(xs []float64) string {
	if len(xs) == 0 {
		return "none"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return fmt.Sprintf("p50 %.1f p90 %.1f (n %d)", s[len(s)/2], s[len(s)*9/10], len(s))
}

func readDaemons(file string) ([]*profiled, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var ds []*profiled
	byPid := map[int]*profiled{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "daemon":
			pid, _ := strconv.Atoi(f[2])
			d := &profiled{host: f[1], pid: pid, tun: -1, sockets: map[int]bool{}, syscalls: map[int]int{},
				woken: map[int]float64{}, running: map[int]float64{}}
			ds = append(ds, d)
			byPid[pid] = d
		case len(f) == 4 && f[0] == "fd":
			pid, _ := strconv.Atoi(f[1])
			fd, _ := strconv.Atoi(f[2])
			if d := byPid[pid]; d != nil {
				if f[3] == "/dev/net/tun" {
					d.tun = fd
				} else if strings.HasPrefix(f[3], "socket:") {
					d.sockets[fd] = true
				}
			}
		}
	}
	return ds, nil
}

// readScript parses perf script -F pid,tid,cpu,time,event,trace, and
// maps every thread seen to its process.
func readScript(file string) ([]event, map[int]int, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var evs []event
	tgidOf := map[int]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		ids := strings.SplitN(fs[0], "/", 2)
		if len(ids) != 2 {
			continue
		}
		var e event
		e.tgid, _ = strconv.Atoi(ids[0])
		e.tid, _ = strconv.Atoi(ids[1])
		tgidOf[e.tid] = e.tgid
		secs, err := strconv.ParseFloat(strings.TrimSuffix(fs[2], ":"), 64)
		if err != nil {
			continue
		}
		e.t = secs * 1e6
		rest := fs[4:]
		switch strings.TrimSuffix(fs[3], ":") {
		case "raw_syscalls:sys_enter": // NR 1 (6, c000..., ...)
			e.kind = "enter"
			e.nr, _ = strconv.Atoi(rest[1])
			if len(rest) > 2 {
				fd, _ := strconv.ParseInt(strings.Trim(rest[2], "(,"), 16, 64)
				e.fd = int(fd)
			}
		case "raw_syscalls:sys_exit": // NR 1 = 92
			e.kind = "exit"
			e.nr, _ = strconv.Atoi(rest[1])
			e.ret, _ = strconv.ParseInt(rest[len(rest)-1], 10, 64)
		case "sched:sched_wakeup": // comm=meshd pid=7520 prio=120 target_cpu=000
			e.kind = "wakeup"
			e.other = intField(rest, "pid=")
		case "sched:sched_switch": // prev_comm=... prev_pid=7486 prev_prio=120 prev_state=S ==> ...
			e.kind = "switch"
			e.other = intField(rest, "prev_pid=")
			e.next = intField(rest, "next_pid=")
			for _, r := range rest {
				if v, ok := strings.CutPrefix(r, "prev_state="); ok {
					e.state = v
				}
			}
		default:
			continue
		}
		evs = append(evs, e)
	}
	slices.SortStableFunc(evs, func(a, b event) int {
		switch {
		case a.t < b.t:
			return -1
		case a.t > b.t:
			return 1
		}
		return 0
	})
	return evs, tgidOf, sc.Err()
}

func intField(fs []string, prefix string) int {
	for _, f := range fs {
		if v, ok := strings.CutPrefix(f, prefix); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// analyzeGoTrace reads one daemon's Go execution trace (as go tool trace
// -d=parsed prints it) and counts goroutine wake-ups, named after where
// each goroutine had blocked (its first frame outside the runtime and the
// standard library), and the times an idle P was started: the runtime
// waking a thread to run what became runnable.
func analyzeGoTrace(file string, w io.Writer) error {
	cmd := exec.Command("go", "tool", "trace", "-d=parsed", file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	blockedAt := map[string]string{} // GoID: where it blocked
	wakes := map[string]int{}
	var procStarts, syscalls int
	var cur string // the GoID whose blocking stack follows
	inStack := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "M="):
			inStack, cur = false, ""
			if !strings.Contains(line, " StateTransition ") {
				continue
			}
			f := strings.Fields(line)
			var goID, trans string
			for _, x := range f {
				if v, ok := strings.CutPrefix(x, "GoID="); ok {
					goID = v
				}
				if strings.Contains(x, "->") {
					trans = x
				}
			}
			switch {
			case goID == "" && trans == "Idle->Running":
				procStarts++
			case trans == "Running->Waiting":
				cur = goID
				blockedAt[goID] = "?"
			case trans == "Running->Syscall":
				syscalls++
			case trans == "Waiting->Runnable":
				wakes[blockedAt[goID]]++
			}
		case line == "TransitionStack=":
			inStack = cur != ""
		case line == "Stack=" || line == "":
			inStack = false
		case inStack && strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, "\t\t"):
			fn := strings.Fields(line)[0]
			if !stdFrame(fn) {
				blockedAt[cur] = fn
				inStack = false
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("go tool trace %s: %w", file, err)
	}
	total := 0
	type kv struct {
		k string
		n int
	}
	var ws []kv
	for k, n := range wakes {
		ws = append(ws, kv{k, n})
		total += n
	}
	slices.SortFunc(ws, func(a, b kv) int { return b.n - a.n })
	fmt.Fprintf(w, "%s: %d goroutine wake-ups, %d Ps started from idle, %d system calls\n", file, total, procStarts, syscalls)
	for _, x := range ws[:min(len(ws), 10)] {
		fmt.Fprintf(w, "  %8d  blocked in %s\n", x.n, x.k)
	}
	return nil
}

func stdFrame(fn string) bool {
	for _, p := range []string{"runtime.", "internal/", "sync.", "os.", "net.", "syscall.", "golang.org/x/sys/", "time.", "io.", "bufio."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}
