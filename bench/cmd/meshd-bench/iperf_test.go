package main

import (
	"encoding/json"
	"testing"
	"time"
)

// The pause is the longest run of empty receiver intervals, not their sum
// and not the last run.
func TestLongestPause(t *testing.T) {
	var r iperfResult
	// Receiver intervals as iperf3 -J reports them: 0.1 s each; a 0.3 s
	// pause, data, a 0.2 s pause.
	in := `{"server_output_json":{"intervals":[
		{"sum":{"start":0,"bytes":1000,"seconds":0.1}},
		{"sum":{"start":0.1,"bytes":0,"seconds":0.1}},
		{"sum":{"start":0.2,"bytes":0,"seconds":0.1}},
		{"sum":{"start":0.3,"bytes":0,"seconds":0.1}},
		{"sum":{"start":0.4,"bytes":500,"seconds":0.1}},
		{"sum":{"start":0.5,"bytes":0,"seconds":0.1}},
		{"sum":{"start":0.6,"bytes":0,"seconds":0.1}},
		{"sum":{"start":0.7,"bytes":800,"seconds":0.1}}]}}`
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	got := longestPause(r.ServerOutput.Intervals)
	if got < 290*time.Millisecond || got > 310*time.Millisecond {
		t.Errorf("longest pause = %v, want 300ms", got)
	}
}

func TestRestartMeasurements(t *testing.T) {
	ms := restartMeasurements("meshd restart", []time.Duration{300 * time.Millisecond, 100 * time.Millisecond, 1200 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond})
	if len(ms) != 2 || ms[0].Metric != "median_pause" || ms[0].Value != 0.2 || ms[1].Metric != "worst_pause" || ms[1].Value != 1.2 || len(ms[1].Runs) != 5 {
		t.Errorf("restart measurements = %+v, want median 0.2 s and worst 1.2 s over 5 runs", ms)
	}
}
