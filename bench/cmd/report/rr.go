package main

import (
	"fmt"
	"strings"
)

// requestResponseSection reports memcached and sockperf per configuration
// (rows: raw underlay, bare wireguard-go, meshd, then Nebula if measured)
// and judges the targets on ratios of meshd's figures within the run.
func requestResponseSection(b *strings.Builder, fs figures, rows []string, meshd, bare, nebula string) {
	fmt.Fprintf(b, "## Request/response\n\n")
	if fs.get(meshd, "memcached_gets") == 0 {
		fmt.Fprintf(b, "Not measured in this run.\n\n")
		return
	}
	fmt.Fprintf(b, "Many small exchanges, each waiting for its answer, from host a to host b, after\neach configuration's throughput runs in the same rounds (raw underlay: once,\nbefore the rounds, for reference). memcached: Debian's memcached 1.6 on b,\n`memcslap --concurrency 4 --execute-number N --test get` on a (N = 1 000 a\nsecond of run, 3 000 in make bench): it sets N keys of about 2.8 KiB, then four\nthreads, one get in flight each, get them all; it reports gets per second and no\nlatency. sockperf 3.7, 64-byte messages over UDP and TCP: `ping-pong --full-rtt`\n(one message in flight; percentiles of its round trips), then `under-load\n--mps=max` (the client sends as fast as it can; messages/s is what arrived,\ncounted from the server's answer to every 100th). Each sockperf run is `-t 3` in\nmake bench (the first 0.45 s its warm-up). TCP carries several messages per\nsegment when the sender is ahead of the path, so its messages/s is not a packet\nrate and can exceed the raw underlay's: a slower path queues more messages into\neach segment.\n\n")
	fmt.Fprintf(b, "| configuration | memcached gets | UDP under load | TCP under load |\n|---|---|---|---|\n")
	for _, c := range rows {
		fmt.Fprintf(b, "| %s | %.1f k/s | %.1f k msg/s | %.1f k msg/s |\n", c,
			fs.get(c, "memcached_gets"), fs.get(c, "sockperf_udp_under_load"), fs.get(c, "sockperf_tcp_under_load"))
	}
	fmt.Fprintf(b, "\n| configuration | UDP p50 | UDP p99 | UDP p99.9 | TCP p50 | TCP p99 | TCP p99.9 |\n|---|---|---|---|---|---|---|\n")
	for _, c := range rows {
		fmt.Fprintf(b, "| %s", c)
		for _, m := range []string{"udp_p50", "udp_p99", "udp_p99.9", "tcp_p50", "tcp_p99", "tcp_p99.9"} {
			fmt.Fprintf(b, " | %.0f µs", fs.get(c, "sockperf_"+m))
		}
		fmt.Fprintf(b, " |\n")
	}
	fmt.Fprintf(b, "\n| ratio | memcached gets | UDP p99 | TCP p99 |\n|---|---|---|---|\n")
	against := []string{bare}
	if nebula != "" {
		against = append(against, nebula)
	}
	for _, o := range against {
		fmt.Fprintf(b, "| meshd / %s | %s | %s | %s |\n", o, fs.both(meshd, o, "memcached_gets"),
			fs.both(meshd, o, "sockperf_udp_p99"), fs.both(meshd, o, "sockperf_tcp_p99"))
	}
	fmt.Fprintf(b, "\nTargets (ratios of the medians):\n\n")
	fmt.Fprintf(b, "- memcached gets/s, meshd >= 1.0x %s: %s\n", bare, verdict(fs, meshd, bare, "memcached_gets", true))
	if nebula == "" {
		fmt.Fprintf(b, "- memcached gets/s, meshd >= Nebula; sockperf p99, meshd <= Nebula: Nebula not measured in this run\n\n")
		return
	}
	fmt.Fprintf(b, "- memcached gets/s, meshd >= %s: %s\n", nebula, verdict(fs, meshd, nebula, "memcached_gets", true))
	fmt.Fprintf(b, "- sockperf UDP p99, meshd <= %s: %s\n", nebula, verdict(fs, meshd, nebula, "sockperf_udp_p99", false))
	fmt.Fprintf(b, "- sockperf TCP p99, meshd <= %s: %s\n\n", nebula, verdict(fs, meshd, nebula, "sockperf_tcp_p99", false))
	fmt.Fprint(b, rrWhy)
}

// rrWhy is why a lone packet's round trip through wireguard-go takes about
// twice Nebula's, from bench/PROFILES.md (bench/cmd/rr-profile, 2026-12-02);
// fixed text, not recomputed by the run.
const rrWhy = `Why (bench/PROFILES.md, "Why a round trip through wireguard-go takes twice
Nebula's", from bench/cmd/rr-profile): the whole gap is inside the two daemons,
between the wake-up that a packet is ready and the system call that passes it
on: about 120 µs a round trip in each meshd against 38 µs in each Nebula (p50,
perf running), which adds up to the difference in sockperf's round trip.
wireguard-go hands every packet across three goroutines each way (the reader
on the socket or TUN, parked in the Go netpoller; an encryption or decryption
worker; the peer's sequential sender or receiver, which writes it), 6 goroutine
wake-ups per round trip in each daemon, and on each hand-off the Go runtime
wakes another thread to run the woken goroutine (4.4 idle Ps started a round
trip): each meshd makes 2.8 wake-ups of its own threads a round trip (Nebula
0.9), 18 system calls (Nebula 7) and runs 215 µs of CPU (Nebula 100), on a
2-core machine that the two daemons share with sockperf. Nebula reads, decrypts
and writes a packet on one thread that blocks in recvmmsg or read. With
GOMAXPROCS=1 (no idle P to wake) meshd's p50 falls by about 50 µs (255 to 207
µs; Nebula 150) and its in-process wake-ups to Nebula's; the rest is the three
goroutine switches and the netpoller's detour (epoll_pwait, and a read that
returns EAGAIN before each park). Neither meshd's Bind nor its firewall accounts
for the gap. Closing it takes wireguard-go handling a lone packet inline: the
goroutine that read it encrypts or decrypts it and sends or writes it when the
peer's queues are empty, instead of queueing it to the workers.

`

// verdict judges meshd's figure against other's: at least as high (a
// rate) when higher, else at most as high (a latency); a miss says by
// how much.
func verdict(fs figures, meshd, other, metric string, higher bool) string {
	x, y := fs.get(meshd, metric), fs.get(other, metric)
	if x == 0 || y == 0 {
		return "not measured"
	}
	r := x / y
	switch {
	case higher && r >= 1, !higher && r <= 1:
		return fmt.Sprintf("met (%.2fx)", r)
	case higher:
		return fmt.Sprintf("**missed by %.0f%%** (%.2fx)", (1-r)*100, r)
	default:
		return fmt.Sprintf("**missed by %.0f%%** (%.2fx: meshd's is higher)", (r-1)*100, r)
	}
}
