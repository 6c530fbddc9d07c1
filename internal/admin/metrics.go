package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are meshd's Prometheus metrics. Gauges are read from the daemon
// at scrape time (no copy to drift); labels are bounded sets (state, path,
// reason, rule), never per peer.
type Metrics struct {
	reg          *prometheus.Registry
	ApplyLatency prometheus.Histogram
	Applied      prometheus.Counter
}

// NewMetrics builds the registry; src is asked at every scrape.
func NewMetrics(src Source, version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ApplyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshd_apply_seconds", Help: "Time to apply one batch of peer changes to the device.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		Applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshd_peer_changes_applied_total", Help: "Peer changes applied to the device."}),
	}
	m.reg.MustRegister(m.ApplyLatency, m.Applied, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{src: src, version: version})
	return m
}

var (
	descPeers     = prometheus.NewDesc("meshd_peers", "Peers by state and path.", []string{"state", "path"}, nil)
	descRegistry  = prometheus.NewDesc("meshd_registry_state", "1 for the registry connection's current state.", []string{"state"}, nil)
	descSyncAge   = prometheus.NewDesc("meshd_registry_last_sync_age_seconds", "Seconds since the registry view was last in step.", nil, nil)
	descBad       = prometheus.NewDesc("meshd_registry_bad_records_total", "Host records skipped or refused (trust), by reason; meshctl status names the latest.", []string{"reason"}, nil)
	descRefused   = prometheus.NewDesc("meshd_registry_refused_records", "Host records refused now, by reason (meshctl status names them).", []string{"reason"}, nil)
	descFirewall  = prometheus.NewDesc("meshd_firewall_packets_total", "Packets matched by meshd's rules: drops, or would-drops in shadow mode.", []string{"rule"}, nil)
	descConntrack = prometheus.NewDesc("meshd_conntrack_entries", "Connection tracking entries in use.", nil, nil)
	descCTMax     = prometheus.NewDesc("meshd_conntrack_max", "Connection tracking table size.", nil, nil)
	descBreaker   = prometheus.NewDesc("meshd_breaker_held_removals", "Peer removals held by the mass-removal breaker.", nil, nil)
	descStale     = prometheus.NewDesc("meshd_peers_stale", "Peers whose registry record is gone while WireGuard still hears them (kept, stale), by their network: alert on a network cut off from the registry.", []string{"network"}, nil)
	descTripped   = prometheus.NewDesc("meshd_breaker_tripped", "1 while the mass-removal breaker holds removals.", nil, nil)
	descApplyFail = prometheus.NewDesc("meshd_device_apply_failures_total", "Device updates the WireGuard device refused (each is retried).", nil, nil)
	descPending   = prometheus.NewDesc("meshd_device_pending_changes", "Peer changes waiting for a retry: the device differs from the desired state while this is not 0.", nil, nil)
	descDrops     = prometheus.NewDesc("meshd_firewall_drops_total", "Packets meshd's firewall dropped (would drop, in shadow mode) by reason.", []string{"reason"}, nil)
	descSetUse    = prometheus.NewDesc("meshd_firewall_set_entries", "Entries in each of meshd's ipset sets.", []string{"set"}, nil)
	descSetCap    = prometheus.NewDesc("meshd_firewall_set_capacity", "maxelem of each of meshd's ipset sets.", []string{"set"}, nil)
	descSetFull   = prometheus.NewDesc("meshd_firewall_set_full", "1 when a set is full at its bound and members are left out.", []string{"set"}, nil)
	descBuild     = prometheus.NewDesc("meshd_build_info", "meshd's version.", []string{"version"}, nil)
	descTrust     = prometheus.NewDesc("meshd_trust_enabled", "1 when records are signed and verified (trust: ca), by mode.", []string{"mode"}, nil)
	descUnsigned  = prometheus.NewDesc("meshd_trust_unsigned_hosts", "Hosts in the view whose record is not signed (trust.mode permissive).", nil, nil)
	descDocs      = prometheus.NewDesc("meshd_trust_documents_refused_total", "Fleet documents (policy, links, revocations) ignored, by reason.", []string{"reason"}, nil)
	descCertLeft  = prometheus.NewDesc("meshd_trust_cert_expiry_seconds", "Seconds until this host's certificate expires.", nil, nil)
)

type collector struct {
	src     Source
	version string
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descRegistry, descSyncAge, descBad, descRefused, descFirewall, descDrops, descSetUse, descSetCap, descSetFull, descConntrack, descCTMax, descBreaker, descStale, descTripped, descApplyFail, descPending, descBuild, descTrust, descUnsigned, descCertLeft, descDocs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, c.version)
	st, err := c.src.Status(ctx)
	if err != nil {
		return
	}
	peers, _ := c.src.Peers(ctx)
	counts := map[[2]string]int{}
	for _, p := range peers {
		counts[[2]string{p.State, p.Path}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for _, s := range []string{"connected", "disconnected", "expired"} {
		v := 0.0
		if st.Registry == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRegistry, prometheus.GaugeValue, v, s)
	}
	if t, err := time.Parse(time.RFC3339, st.LastSync); err == nil {
		ch <- prometheus.MustNewConstMetric(descSyncAge, prometheus.GaugeValue, time.Since(t).Seconds())
	}
	for reason, n := range st.BadRecords {
		ch <- prometheus.MustNewConstMetric(descBad, prometheus.CounterValue, float64(n), reason)
	}
	refused := map[string]int{}
	for _, f := range st.RefusedRecords {
		refused[f.Reason]++
	}
	for reason, n := range refused {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.GaugeValue, float64(n), reason)
	}
	for rule, n := range st.FirewallCounters {
		ch <- prometheus.MustNewConstMetric(descFirewall, prometheus.CounterValue, float64(n), rule)
	}
	for reason, n := range st.FirewallDrops {
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(n), reason)
	}
	for name, u := range st.FirewallSets {
		full := 0.0
		if u.Full {
			full = 1
		}
		ch <- prometheus.MustNewConstMetric(descSetUse, prometheus.GaugeValue, float64(u.Entries), name)
		ch <- prometheus.MustNewConstMetric(descSetCap, prometheus.GaugeValue, float64(u.Capacity), name)
		ch <- prometheus.MustNewConstMetric(descSetFull, prometheus.GaugeValue, full, name)
	}
	ch <- prometheus.MustNewConstMetric(descConntrack, prometheus.GaugeValue, float64(st.Conntrack[0]))
	ch <- prometheus.MustNewConstMetric(descCTMax, prometheus.GaugeValue, float64(st.Conntrack[1]))
	ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(st.Breaker.Held))
	for network, n := range st.KeptAliveByNetwork {
		ch <- prometheus.MustNewConstMetric(descStale, prometheus.GaugeValue, float64(n), network)
	}
	ch <- prometheus.MustNewConstMetric(descTripped, prometheus.GaugeValue, b2f(st.Breaker.Tripped))
	ch <- prometheus.MustNewConstMetric(descApplyFail, prometheus.CounterValue, float64(st.Apply.Failures))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Apply.Pending))
	if st.Trust == "ca" {
		ch <- prometheus.MustNewConstMetric(descTrust, prometheus.GaugeValue, 1, st.TrustMode)
		ch <- prometheus.MustNewConstMetric(descUnsigned, prometheus.GaugeValue, float64(len(st.UnsignedHosts)))
		for reason, n := range st.DocumentsRefused {
			ch <- prometheus.MustNewConstMetric(descDocs, prometheus.CounterValue, float64(n), reason)
		}
		if st.Cert != nil {
			if t, err := time.Parse(time.RFC3339, st.Cert.NotAfter); err == nil {
				ch <- prometheus.MustNewConstMetric(descCertLeft, prometheus.GaugeValue, time.Until(t).Seconds())
			}
		}
	} else {
		ch <- prometheus.MustNewConstMetric(descTrust, prometheus.GaugeValue, 0, "none")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0

}

// ServeMetrics serves /metrics on listen until ctx ends.
func (m *Metrics) ServeMetrics(ctx context.Context, listen string) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
