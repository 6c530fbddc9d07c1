package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// Measurement is one figure of one configuration.
type Measurement struct {
	Config string  `json:"config"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Runs are the rounds a median was taken over, when there were several.
	Runs []float64 `json:"runs,omitempty"`
}

type iperfResult struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum"`
	} `json:"end"`
	Intervals []iperfInterval `json:"intervals"`
	Error     string          `json:"error"`
	// ServerOutput is the receiving server's own report (client
	// --get-server-output, server -J): its intervals count bytes as they
	// arrived, where the sender's count bytes handed to its socket buffer.
	ServerOutput *iperfResult `json:"server_output_json"`
}

type iperfInterval struct {
	Sum struct {
		Start   float64 `json:"start"`
		Bytes   float64 `json:"bytes"`
		Seconds float64 `json:"seconds"`
	} `json:"sum"`
}

// longestPause is the longest run of consecutive intervals that carried
// no bytes.
func longestPause(ivs []iperfInterval) time.Duration {
	var longest, cur time.Duration
	for _, iv := range ivs {
		if iv.Sum.Bytes == 0 {
			cur += time.Duration(iv.Sum.Seconds * float64(time.Second))
			longest = max(longest, cur)
		} else {
			cur = 0
		}
	}
	return longest
}

// serve starts an iperf3 server on h bound to addr, with extra server
// arguments; it serves until stopped.
func serve(tb *testbed.Testbed, h *testbed.Host, addr string, logDir string, extra ...string) (*testbed.Process, error) {
	return startServer(tb, h, logDir, "tcp", 5201, "iperf3", append([]string{"-s", "-B", addr}, extra...)...)
}

// startServer runs a benchmark server (name with args) in h's namespace,
// logging to logDir/name-host.log, stopped by PID with the testbed's
// process helpers, and waits until it listens on port (proto "tcp" or
// "udp"): a client started sooner fails, or over UDP sends into nothing.
// A server that exits or does not listen within 5 s is an error naming
// its log.
func startServer(tb *testbed.Testbed, h *testbed.Host, logDir, proto string, port int, name string, args ...string) (*testbed.Process, error) {
	log := fmt.Sprintf("%s/%s-%s.log", logDir, name, h.Name)
	p, err := tb.StartProcess(h, log, name, args...)
	if err != nil {
		return nil, err
	}
	ssFlags := "-Hltn"
	if proto == "udp" {
		ssFlags = "-Hlun"
	}
	want := fmt.Sprintf(":%d", port)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.Exited():
			return nil, fmt.Errorf("%s on %s exited before listening on %s%s: %v (log %s)", name, h.Name, proto, want, p.Err(), log)
		default:
		}
		out, _ := h.Run(context.Background(), "ss", ssFlags, "sport = "+want)
		if strings.Contains(out, want) {
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Stop(2 * time.Second)
	return nil, fmt.Errorf("%s on %s not listening on %s%s after 5 s (log %s)", name, h.Name, proto, want, log)
}

// client runs iperf3 from h to addr with extra args, JSON output.
func client(h *testbed.Host, addr string, secs int, args ...string) (iperfResult, error) {
	a := append([]string{"-c", addr, "-t", strconv.Itoa(secs), "-J"}, args...)
	out, err := h.Command(context.Background(), "iperf3", a...).Output()
	var r iperfResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return r, fmt.Errorf("iperf3 %v: %v %v", a, err, jerr)
	}
	if r.Error != "" {
		return r, fmt.Errorf("iperf3 %v: %s", a, r.Error)
	}
	return r, nil
}

// dataPlane measures one path: TCP 1 stream, UDP 64-byte packet rate (the
// two every configuration gets, first and in this order, see tcpAndUDP),
// then TCP 4 streams, ping latency and the request/response figures, from
// a to b's address.
func dataPlane(tb *testbed.Testbed, name string, a, b *testbed.Host, addr string, secs int, logDir string) ([]Measurement, error) {
	srv, err := serve(tb, b, addr, logDir)
	if err != nil {
		return nil, err
	}
	defer srv.Stop(2 * time.Second)
	var ms []Measurement
	r, err := client(a, addr, secs)
	if err != nil {
		return nil, err
	}
	ms = append(ms, Measurement{Config: name, Metric: "tcp_1_stream", Value: r.End.SumReceived.BitsPerSecond / 1e9, Unit: "Gbit/s"})
	r, err = client(a, addr, secs, "-u", "-l", "64", "-b", "0")
	if err != nil {
		return nil, err
	}
	pps := (r.End.Sum.Packets - r.End.Sum.LostPackets) / max(r.End.Sum.Seconds, 0.001)
	ms = append(ms, Measurement{Config: name, Metric: "udp_64b_rate", Value: pps / 1e3, Unit: "kpps"})
	r, err = client(a, addr, secs, "-P", "4")
	if err != nil {
		return nil, err
	}
	ms = append(ms, Measurement{Config: name, Metric: "tcp_4_streams", Value: r.End.SumReceived.BitsPerSecond / 1e9, Unit: "Gbit/s"})
	out, err := a.Run(context.Background(), "ping", "-q", "-c", strconv.Itoa(secs*50), "-i", "0.02", addr)
	if err != nil {
		return nil, err
	}
	ms = append(ms, Measurement{Config: name, Metric: "ping_rtt", Value: rttAvg(out), Unit: "ms"})
	rr, err := requestResponse(tb, name, a, b, addr, secs, logDir)
	return append(ms, rr...), err
}

// rttAvg reads the average of ping's "rtt min/avg/max/mdev = a/b/c/d ms".
func rttAvg(out string) float64 {
	i := strings.Index(out, "= ")
	if i < 0 {
		return 0
	}
	parts := strings.Split(strings.Fields(out[i+2:])[0], "/")
	if len(parts) < 2 {
		return 0
	}
	v, _ := strconv.ParseFloat(parts[1], 64)
	return v
}
