package main

import "testing"

// A partial run replaces whole configurations and says where its figures
// came from; what it did not measure keeps the full run's figures.
func TestMerge(t *testing.T) {
	base := []measurement{
		{Config: "raw underlay", Metric: "tcp_1_stream", Value: 17},
		{Config: "meshd restart", Metric: "longest_pause", Value: 0.1},
	}
	fresh := []measurement{
		{Config: "meshd restart", Metric: "median_pause", Value: 0.4},
		{Config: "meshd restart", Metric: "worst_pause", Value: 0.9},
	}
	got := merge(base, fresh, "make bench-restart", "2026-12-01")
	if len(got) != 3 || got[0].Config != "raw underlay" || got[0].Command != "" {
		t.Fatalf("merge = %+v, want raw underlay kept unstamped and the old restart figure gone", got)
	}
	for _, m := range got[1:] {
		if m.Config != "meshd restart" || m.Command != "make bench-restart" || m.Date != "2026-12-01" {
			t.Errorf("fresh figure %+v not stamped with its command and date", m)
		}
	}
}
