package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// One inbound packet through a daemon (pid 10, TUN fd 6, socket fd 11):
// the kernel wakes thread 12, it receives, hands off to thread 13 (an
// in-process wake-up), which writes the TUN; the analysis times both spans
// and counts the hand-off.
func TestAnalyzeInbound(t *testing.T) {
	dir := t.TempDir()
	daemons := "daemon b 10\nfd 10 6 /dev/net/tun\nfd 10 11 socket:[1]\n"
	script := strings.Join([]string{
		"    0/0     [000] 100.000100:     sched:sched_wakeup: comm=meshd pid=12 prio=120 target_cpu=000",
		"    0/0     [000] 100.000105:     sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=meshd next_pid=12 next_prio=120",
		"   10/12    [000] 100.000110: raw_syscalls:sys_enter: NR 299 (b, c000, 40, 0, 0, 0)",
		"   10/12    [000] 100.000112:  raw_syscalls:sys_exit: NR 299 = 1",
		"   10/12    [000] 100.000115:     sched:sched_wakeup: comm=meshd pid=13 prio=120 target_cpu=001",
		"   10/13    [001] 100.000130: raw_syscalls:sys_enter: NR 1 (6, c000, 66, 0, 0, 0)",
		"   10/13    [001] 100.000140:  raw_syscalls:sys_exit: NR 1 = 102",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "daemons.txt"), []byte(daemons), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "script.txt"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := analyzeDir(dir, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 TUN writes",
		"2.00 wake-ups of its threads (1.00 by its own threads, 1.00 from outside)",
		"socket receive -> TUN write:   p50 18.0",
		"in-process wake-ups on the way p50 1.0",
		"wake on arrival -> TUN write:  p50 30.0",
		"wake-up to running p50 5.0",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("analysis lacks %q:\n%s", want, out.String())
		}
	}
}
