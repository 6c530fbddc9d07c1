package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/admin"
	"github.com/meshd/meshd/internal/testbed"
	"github.com/meshd/meshd/registry"
)

// TestHostileRecordsRefused: a second ZooKeeper client writes records that
// decode and hold a valid lease but carry what no host may: 10 000 groups,
// the metadata address as underlay, an IPv4-mapped and a link-local IPv6
// underlay address, another host's public key, another
// host's key as next key. Every observer refuses each, counts it by
// reason and names it in status and /metrics; the legitimate hosts stay
// reachable, and the host whose key was copied comes back when the copy
// goes.
func TestHostileRecordsRefused(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true})
	var ms []*testbed.Meshd
	for _, n := range []string{"vpc", "dc", "classic"} {
		h, err := tb.AddHost(n)
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}}, Groups: []string{n},
			Metrics: "127.0.0.1:9474", Extra: "tuning:\n  hold_down: 1s\n"})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	a, b, c := ms[0], ms[1], ms[2]
	st := map[*testbed.Meshd]admin.Status{}
	for _, m := range ms {
		st[m], _ = m.Status()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range ms {
				t.Logf("--- log of %s:\n%s", m.Host.Name, m.LogTail(30))
			}
		}
	})
	pings := func(from, to *testbed.Meshd) error {
		_, err := from.Host.Run(context.Background(), "ping", "-c", "1", "-W", "1", st[to].OverlayIP)
		return err
	}
	waitFor(t, 30*time.Second, "mesh up", func() error {
		for _, p := range [][2]*testbed.Meshd{{a, b}, {a, c}, {b, c}} {
			if err := pings(p[0], p[1]); err != nil {
				return fmt.Errorf("%s -> %s: %v", p[0].Host.Name, p[1].Host.Name, err)
			}
		}
		return nil
	})

	key := func(s string) wgtypes.Key {
		k, err := wgtypes.ParseKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	stolen := key(st[b].PublicKey)
	groups := make([]string, 10000)
	for i := range groups {
		groups[i] = fmt.Sprintf("g%d", i)
	}
	hostile := map[string]func(h *registry.Host){
		"bigroups": func(h *registry.Host) { h.Groups = groups },
		"metadata": func(h *registry.Host) { h.PrivateIP = netip.MustParseAddr("169.254.169.254") },
		// IPv6 underlay addresses: IPv4-mapped, and link-local.
		"mapped6": func(h *registry.Host) { h.PrivateIP6 = netip.MustParseAddr("::ffff:198.18.2.250") },
		"link6":   func(h *registry.Host) { h.PublicIP6 = netip.MustParseAddr("fe80::1") },
		"dupkey":  func(h *registry.Host) { h.PublicKey = key(st[c].PublicKey) },
		"thief":   func(h *registry.Host) { h.NextPublicKey = &stolen },
	}
	root := "/meshd/" + tb.Prefix
	var cmds strings.Builder
	nodes := map[string]string{}
	i := 0
	for id, spoil := range hostile {
		i++
		k, _ := wgtypes.GenerateKey()
		h := registry.Host{Schema: registry.Schema, InstanceID: id, OverlayIP: netip.AddrFrom4([4]byte{100, 100, 250, byte(i)}),
			PublicKey: k, Network: "vpc", PrivateIP: netip.AddrFrom4([4]byte{198, 18, 2, byte(200 + i)}),
			ListenPort: 51820, Version: "evil", StartTime: time.Now().UTC()}
		spoil(&h)
		data, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		// A lease of its own, so that only what the record carries is wrong.
		nodes[id] = fmt.Sprintf("%s/hosts/%02x/%s#0000000001", root, registry.BucketOf(id), id)
		fmt.Fprintf(&cmds, "create %s/leases/%s %s\n", root, h.OverlayIP, id)
		fmt.Fprintf(&cmds, "create %s/hosts/%02x\ncreate %s %s\n", root, registry.BucketOf(id), nodes[id], data)
	}
	zkWrite(t, tb, cmds.String())

	// The observers refuse the copy of c's key and c's own record with it.
	want := map[string]string{"bigroups": "too_many_groups", "metadata": "underlay", "mapped6": "underlay", "link6": "underlay", "dupkey": "duplicate_key",
		"thief": "next_key", c.Host.Name: "duplicate_key"}
	for _, m := range []*testbed.Meshd{a, b} {
		waitFor(t, 20*time.Second, m.Host.Name+" refuses and names every hostile record", func() error {
			s, err := m.Status()
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, f := range s.RefusedRecords {
				got[f.Host] = f.Reason
			}
			for host, reason := range want {
				if got[host] != reason {
					return fmt.Errorf("refused %v, want %s refused for %s", got, host, reason)
				}
			}
			for reason, n := range map[string]int64{"too_many_groups": 1, "underlay": 3, "duplicate_key": 2, "next_key": 1} {
				if s.BadRecords[reason] < n {
					return fmt.Errorf("counted %v, want %s >= %d", s.BadRecords, reason, n)
				}
			}
			return nil
		})
		out, err := meshctl(t, m, "status")
		if err != nil {
			t.Fatal(err)
		}
		for host, reason := range want {
			if !strings.Contains(out, host+": "+reason) {
				t.Errorf("meshctl status on %s does not name %s (%s):\n%s", m.Host.Name, host, reason, out)
			}
		}
		refused := metricsByReason(t, m, "meshd_registry_refused_records")
		if refused["duplicate_key"] != 2 || refused["too_many_groups"] != 1 || refused["underlay"] != 3 || refused["next_key"] != 1 {
			t.Errorf("/metrics on %s: refused records %v", m.Host.Name, refused)
		}
		ps, _ := m.Peers()
		for _, p := range ps {
			if _, bad := hostile[p.Name]; bad {
				t.Errorf("%s took the hostile record of %s as a peer", m.Host.Name, p.Name)
			}
		}
	}
	// The legitimate hosts not involved stay reachable.
	if err := pings(a, b); err != nil {
		t.Errorf("a -> b with hostile records around: %v", err)
	}
	if err := pings(b, a); err != nil {
		t.Errorf("b -> a with hostile records around: %v", err)
	}
	for _, m := range ms {
		select {
		case <-m.Proc.Exited():
			t.Fatalf("%s's meshd exited", m.Host.Name)
		default:
		}
	}

	// The copy goes: c is accepted again and reachable.
	zkWrite(t, tb, fmt.Sprintf("delete %s\n", nodes["dupkey"]))
	waitFor(t, 20*time.Second, "c accepted again once its key is its own", func() error {
		s, _ := a.Status()
		for _, f := range s.RefusedRecords {
			if f.Host == c.Host.Name || f.Host == "dupkey" {
				return fmt.Errorf("still refused: %+v", f)
			}
		}
		return pings(a, c)
	})
}

// metricsByReason reads one gauge family of m's /metrics by reason.
func metricsByReason(t *testing.T, m *testbed.Meshd, family string) map[string]float64 {
	t.Helper()
	raw, err := m.Host.Run(context.Background(), "bash", "-c",
		"exec 3<>/dev/tcp/127.0.0.1/9474 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(raw, "\r\n\r\n")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for _, mm := range fams[family].GetMetric() {
		for _, l := range mm.GetLabel() {
			if l.GetName() == "reason" {
				out[l.GetValue()] = mm.GetGauge().GetValue()
			}
		}
	}
	return out
}
