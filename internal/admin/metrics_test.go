package admin

import (
	"context"
	"testing"
)

// fullSetSource reports a member set that is full.
type fullSetSource struct{ Source }

func (fullSetSource) Status(context.Context) (Status, error) {
	return Status{Name: "h1", FirewallSets: map[string]FirewallSet{
		"meshd-peers":   {Entries: 65536, Capacity: 65536, Full: true},
		"meshd-members": {Entries: 10, Capacity: 65536},
	}, FirewallError: "set meshd-peers full at 65536 entries: members are left out"}, nil
}
func (fullSetSource) Peers(context.Context) ([]Peer, error) { return nil, nil }

// TestMetricsReportAFullSet: an operator's alert on a full member set has
// a metric to fire on.
func TestMetricsReportAFullSet(t *testing.T) {
	m := NewMetrics(fullSetSource{}, "test")
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "meshd_firewall_set_full" {
			continue
		}
		for _, mm := range f.GetMetric() {
			got[mm.GetLabel()[0].GetValue()] = mm.GetGauge().GetValue()
		}
	}
	if got["meshd-peers"] != 1 || got["meshd-members"] != 0 || len(got) != 2 {
		t.Errorf("meshd_firewall_set_full = %v, want meshd-peers 1, meshd-members 0", got)
	}
}
