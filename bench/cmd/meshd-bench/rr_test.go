package main

import (
	"math"
	"strings"
	"testing"
)

// sockperf 3.7's ping-pong summary as it prints it, colour escapes included.
const sockperfPingPong = "sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m\n" +
	`sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 198.18.2.12     PORT = 11111 # UDP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=63812; ReceivedMessages=63811
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=50830; ReceivedMessages=50830
` + "sockperf: \x1b[2;35m====> avg-rtt=30.442 (std-dev=67.918)\x1b[0m\n" +
	`sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Round trip is 30.442 usec
` + "sockperf: \x1b[2;35mTotal 50830 observations\x1b[0m; each percentile contains 508.30 observations\n" +
	`sockperf: ---> <MAX> observation = 13088.088
sockperf: ---> percentile 99.999 = 4047.465
sockperf: ---> percentile 99.990 = 1766.616
sockperf: ---> percentile 99.900 =  354.563
sockperf: ---> percentile 99.000 =   70.662
sockperf: ---> percentile 90.000 =   33.602
sockperf: ---> percentile 75.000 =   28.563
sockperf: ---> percentile 50.000 =   26.779
sockperf: ---> percentile 25.000 =   25.688
sockperf: ---> <MIN> observation =   20.368
`

func TestParseSockperf(t *testing.T) {
	r, err := parseSockperf(sockperfPingPong)
	if err != nil {
		t.Fatal(err)
	}
	if r.seconds != 1.55 || r.received != 50830 {
		t.Errorf("valid duration = %v s, %v answers; want 1.55 s, 50830", r.seconds, r.received)
	}
	for p, want := range map[string]float64{"50": 26.779, "99": 70.662, "99.9": 354.563, "99.99": 1766.616} {
		if r.percentile[p] != want {
			t.Errorf("percentile %s = %v, want %v", p, r.percentile[p], want)
		}
	}
}

// sockperf exits 0 when the server never answered; that must not become a
// zero-latency figure.
func TestParseSockperfNoAnswers(t *testing.T) {
	out := "sockperf: Test ended\nsockperf: No messages were received from the server. Is the server down?\n"
	if _, err := parseSockperf(out); err == nil || !strings.Contains(err.Error(), "Is the server down?") {
		t.Errorf("err = %v, want one carrying sockperf's output", err)
	}
	zero := "sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=36101; ReceivedMessages=0\n"
	if _, err := parseSockperf(zero); err == nil {
		t.Error("a run with no answers parsed")
	}
}

const memcslapOut = `Time to generate       5000 test keys:                0.019 seconds.
Time to set            5000 keys:                     0.347 seconds.
Time to start             4 threads:                  0.000 seconds.
--------------------------------------------------------------------
Time to get           20000 keys by    4 threads:     1.079 seconds.
--------------------------------------------------------------------
Time total:                                           1.445 seconds.
`

func TestParseMemcslap(t *testing.T) {
	rate, err := parseMemcslap(memcslapOut, 20000)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rate-20000/1.079) > 0.01 {
		t.Errorf("rate = %v, want %v", rate, 20000/1.079)
	}
	// A server that failed mid-run: memcslap prints an error per key and
	// reports the keys it got.
	failed := strings.Repeat("Fatal error for key 'x': SERVER HAS FAILED AND IS DISABLED UNTIL TIMED RETRY\n", 100) +
		strings.Replace(memcslapOut, "20000 keys", "0 keys", 1)
	if _, err := parseMemcslap(failed, 20000); err == nil || !strings.Contains(err.Error(), "got 0 of 20000") {
		t.Errorf("err = %v, want got 0 of 20000 keys", err)
	}
	if _, err := parseMemcslap("Died with exception: boom\n", 20000); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("err = %v, want one carrying memcslap's output", err)
	}
}
