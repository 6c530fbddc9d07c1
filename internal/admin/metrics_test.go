package admin

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// trustSource reports a host with trust on that refused records and
// documents.
type trustSource struct{ Source }

func (trustSource) Status(context.Context) (Status, error) {
	return Status{Name: "h1", Registry: "connected", Trust: "ca", TrustMode: "permissive",
		Cert:             &Cert{Serial: "5F", NotAfter: "2099-01-01T00:00:00Z", Groups: []string{}},
		BadRecords:       map[string]int64{"replay": 2, "unknown_ca": 1},
		DocumentsRefused: map[string]int64{"unsigned": 3},
		UnsignedHosts:    []string{"old-1", "old-2"}}, nil
}

func (trustSource) Peers(context.Context) ([]Peer, error) { return nil, nil }

// Every refusal is counted on /metrics by reason, with the trust mode and
// the hosts not yet signing.
func TestMetricsCountTrustRefusals(t *testing.T) {
	m := NewMetrics(trustSource{}, "test")
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`meshd_registry_bad_records_total{reason="replay"} 2`,
		`meshd_registry_bad_records_total{reason="unknown_ca"} 1`,
		`meshd_trust_documents_refused_total{reason="unsigned"} 3`,
		`meshd_trust_enabled{mode="permissive"} 1`,
		`meshd_trust_unsigned_hosts 2`,
		`meshd_trust_cert_expiry_seconds`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

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
