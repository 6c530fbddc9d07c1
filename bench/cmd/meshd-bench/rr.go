package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// Request/response: many small exchanges, each waiting for its answer, where
// per-packet latency matters more than bulk throughput. Servers run on b,
// load generators on a, against addr.
const (
	memcachedPort = 11211
	sockperfPort  = 11111
	// memcslapThreads is the fixed concurrency of the memcached load:
	// each thread does one get at a time, so it is also the number of
	// requests in flight.
	memcslapThreads = 4
	// sockperfReplyEvery is how many under-load messages go by per one the
	// server answers; the answers count what arrived.
	sockperfReplyEvery = 100
)

// requestResponse measures memcached gets (memcslap, which reports no
// latency: that comes from sockperf) and sockperf's 64-byte ping-pong
// latency and messages/s under load, UDP then TCP, for up to 3 s each:
// make bench runs it in every round of several configurations.
func requestResponse(tb *testbed.Testbed, name string, a, b *testbed.Host, addr string, secs int, logDir string) ([]Measurement, error) {
	secs = min(secs, 3)
	ms, err := memcachedGets(tb, name, a, b, addr, secs, logDir)
	if err != nil {
		return ms, err
	}
	for _, proto := range []string{"udp", "tcp"} {
		more, err := sockperfRuns(tb, name, a, b, addr, proto, secs, logDir)
		ms = append(ms, more...)
		if err != nil {
			return ms, err
		}
	}
	return ms, nil
}

// memcachedGets runs memcslap's get test against a fresh memcached: it
// first sets its keys, then memcslapThreads threads get them all, each
// thread n keys, and it reports the time the gets took. memcslap stops
// after a count, not a time: n = 1000 a second of secs makes about secs
// seconds of gets over the overlays here (3-5k gets/s: its values are
// about 2.8 KiB, two or three packets each through a 1420-byte MTU).
func memcachedGets(tb *testbed.Testbed, name string, a, b *testbed.Host, addr string, secs int, logDir string) ([]Measurement, error) {
	port := strconv.Itoa(memcachedPort)
	// As root memcached wants a user to drop to; UDP off (-U 0), as since
	// 1.5.6 by default; 128 MiB so no key is evicted before it is read.
	srv, err := startServer(tb, b, logDir, "tcp", memcachedPort, "memcached", "-u", "nobody", "-l", addr, "-p", port, "-U", "0", "-m", "128")
	if err != nil {
		return nil, err
	}
	defer srv.Stop(2 * time.Second)
	n := 1000 * secs
	out, err := runClient(a, 2*time.Minute, "memcslap", "--servers", addr+":"+port, "--concurrency", strconv.Itoa(memcslapThreads),
		"--execute-number", strconv.Itoa(n), "--test", "get")
	if err != nil {
		return nil, err
	}
	rate, err := parseMemcslap(out, memcslapThreads*n)
	if err != nil {
		return nil, err
	}
	return []Measurement{{Config: name, Metric: "memcached_gets", Value: rate / 1e3, Unit: "kops/s"}}, nil
}

// sockperfRuns measures one protocol against a fresh sockperf server:
// ping-pong (one 64-byte message in flight, the round trip of each; its
// 50th, 99th and 99.9th percentiles), then under-load at the highest rate
// the client can send (--mps=max), whose figure is the messages that
// arrived per second.
func sockperfRuns(tb *testbed.Testbed, name string, a, b *testbed.Host, addr, proto string, secs int, logDir string) ([]Measurement, error) {
	common := []string{"-i", addr, "-p", strconv.Itoa(sockperfPort)}
	if proto == "tcp" {
		common = append(common, "--tcp")
	}
	srv, err := startServer(tb, b, logDir, proto, sockperfPort, "sockperf", append([]string{"server"}, common...)...)
	if err != nil {
		return nil, err
	}
	defer srv.Stop(2 * time.Second)
	// sockperf adds about 2 s of its own (warm-up, wind-down) to -t.
	limit := time.Duration(secs)*time.Second + time.Minute
	load := slices.Concat(common, []string{"-t", strconv.Itoa(secs), "-m", "64"})
	out, err := runClient(a, limit, "sockperf", slices.Concat([]string{"ping-pong", "--full-rtt"}, load)...)
	if err != nil {
		return nil, err
	}
	pp, err := parseSockperf(out)
	if err != nil {
		return nil, err
	}
	var ms []Measurement
	for _, p := range []string{"50", "99", "99.9"} {
		v, ok := pp.percentile[p]
		if !ok {
			return ms, fmt.Errorf("sockperf ping-pong %s: no %s percentile in its output:\n%s", proto, p, tail(out))
		}
		ms = append(ms, Measurement{Config: name, Metric: "sockperf_" + proto + "_p" + p, Value: v, Unit: "us"})
	}
	out, err = runClient(a, limit, "sockperf", slices.Concat([]string{"under-load", "--mps=max", "--reply-every", strconv.Itoa(sockperfReplyEvery)}, load)...)
	if err != nil {
		return ms, err
	}
	ul, err := parseSockperf(out)
	if err != nil {
		return ms, err
	}
	// UDP loses what the path cannot carry, so what was sent overstates
	// it; the answers to every sockperfReplyEvery-th message count what
	// arrived (for TCP the two agree).
	rate := ul.received * sockperfReplyEvery / ul.seconds
	return append(ms, Measurement{Config: name, Metric: "sockperf_" + proto + "_under_load", Value: rate / 1e3, Unit: "kmsg/s"}), nil
}

// runClient runs a load generator in h's namespace, stopped after limit;
// its error names the command and carries the end of its output.
func runClient(h *testbed.Host, limit time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v:\n%s", name, strings.Join(args, " "), h.Name, err, tail(string(out)))
	}
	return string(out), nil
}

// memcslapGets is memcslap's (libmemcached-tools 1.1) line for the get
// phase: "Time to get  20000 keys by  4 threads:  1.079 seconds."
var memcslapGets = regexp.MustCompile(`Time to get\s+(\d+) keys by\s+\d+ threads:\s+([0-9.]+) seconds`)

// parseMemcslap is gets per second from memcslap's output. It counts only
// the keys it got back; fewer than 90% of the want asked for means the
// server failed (memcslap then prints an error per key and carries on), not
// a figure.
func parseMemcslap(out string, want int) (float64, error) {
	m := memcslapGets.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("memcslap: no \"Time to get\" line in its output:\n%s", tail(out))
	}
	keys, _ := strconv.ParseFloat(m[1], 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	if secs <= 0 || keys < 0.9*float64(want) {
		return 0, fmt.Errorf("memcslap: got %s of %d keys in %s s:\n%s", m[1], want, m[2], tail(out))
	}
	return keys / secs, nil
}

// sockperfResult is what the bench reads from a sockperf client: the
// "[Valid Duration]" line (the run less its warm-up) and the percentiles,
// in µs, by their name as printed less trailing zeros ("99.9").
type sockperfResult struct {
	seconds, sent, received float64
	percentile              map[string]float64
}

var (
	ansiEscape    = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	sockperfValid = regexp.MustCompile(`\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)`)
	sockperfPct   = regexp.MustCompile(`percentile\s+([0-9.]+)\s*=\s*([0-9.]+)`)
)

// parseSockperf reads sockperf 3.7's client summary. sockperf exits 0 even
// when no answer came back, so a run without answers is an error here.
func parseSockperf(out string) (sockperfResult, error) {
	clean := ansiEscape.ReplaceAllString(out, "")
	m := sockperfValid.FindStringSubmatch(clean)
	if m == nil {
		return sockperfResult{}, fmt.Errorf("sockperf: no \"[Valid Duration]\" line in its output:\n%s", tail(clean))
	}
	r := sockperfResult{percentile: map[string]float64{}}
	r.seconds, _ = strconv.ParseFloat(m[1], 64)
	r.sent, _ = strconv.ParseFloat(m[2], 64)
	r.received, _ = strconv.ParseFloat(m[3], 64)
	if r.seconds <= 0 || r.received == 0 {
		return r, fmt.Errorf("sockperf: no answers in %s s:\n%s", m[1], tail(clean))
	}
	for _, p := range sockperfPct.FindAllStringSubmatch(clean, -1) {
		name := strings.TrimRight(strings.TrimRight(p[1], "0"), ".")
		r.percentile[name], _ = strconv.ParseFloat(p[2], 64)
	}
	return r, nil
}

// tail is the end of a tool's output, enough to see why it failed without
// pages of per-key errors.
func tail(out string) string {
	const keep = 2000
	if len(out) <= keep {
		return out
	}
	return "..." + out[len(out)-keep:]
}
