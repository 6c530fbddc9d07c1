package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// TestLeaderKilledNoLoss: three meshd hosts on a 3-server ensemble, pings
// flowing; the leader is killed. The other two elect a new one, sessions
// move to them, and nothing happens to the data plane: 0 lost, no peer
// removed, nobody stale at the end.
func TestLeaderKilledNoLoss(t *testing.T) {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true, Ensemble: 3})
	var ms []*testbed.Meshd
	for _, network := range []string{"vpc", "dc", "classic"} {
		h, err := tb.AddHost(network)
		if err != nil {
			t.Fatal(err)
		}
		m, err := tb.StartMeshd(h, testbed.MeshdOptions{Bin: bin(t), Links: [][]string{{"vpc", "dc"}}, Groups: []string{network}, Extra: partitionTuning})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range ms {
				t.Logf("--- log of %s:\n%s", m.Host.Name, m.LogTail(40))
			}
		}
	})
	ip := map[*testbed.Meshd]string{}
	for _, m := range ms {
		s, _ := m.Status()
		ip[m] = s.OverlayIP
	}
	waitFor(t, 30*time.Second, "mesh up", func() error {
		for _, x := range ms {
			for _, y := range ms {
				if x != y && !x.Host.Ping(mustAddr(ip[y])) {
					return fmt.Errorf("%s cannot reach %s", x.Host.Name, y.Host.Name)
				}
			}
		}
		return nil
	})
	pings := []func() (string, bool){
		steadyPing(t, ms[0].Host, ip[ms[1]], 20*time.Second),
		steadyPing(t, ms[2].Host, ip[ms[0]], 20*time.Second),
	}
	time.Sleep(2 * time.Second) // pings flow before the fault; ping has no readiness signal
	leader, err := tb.Ensemble().Leader()
	if err != nil {
		t.Fatal(err)
	}
	leader.Halt()
	killedAt := time.Now()
	waitFor(t, 60*time.Second, "a new leader", func() error {
		l, err := tb.Ensemble().Leader()
		if err != nil {
			return err
		}
		if l == leader {
			return fmt.Errorf("the killed server still leads")
		}
		return nil
	})
	t.Logf("new leader elected %s after the leader was killed", time.Since(killedAt).Round(100*time.Millisecond))
	for _, w := range pings {
		if summary, ok := w(); !ok {
			t.Errorf("traffic across the leader loss: %s", summary)
		} else {
			t.Logf("across the leader loss: %s", summary)
		}
	}
	waitFor(t, 30*time.Second, "every host connected again, every peer known and not stale", func() error {
		for _, m := range ms {
			s, err := m.Status()
			if err != nil {
				return err
			}
			if s.Registry != "connected" {
				return fmt.Errorf("%s: registry %s", m.Host.Name, s.Registry)
			}
			ps, _ := m.Peers()
			if len(ps) != 2 {
				return fmt.Errorf("%s has %d peers", m.Host.Name, len(ps))
			}
			for _, p := range ps {
				if p.State == "stale" || p.StaleReason != "" {
					return fmt.Errorf("%s -> %s: %s %q", m.Host.Name, p.Name, p.State, p.StaleReason)
				}
			}
		}
		return nil
	})
	for _, m := range ms {
		log, _ := os.ReadFile(m.Log)
		if strings.Contains(string(log), "peer removed") {
			t.Errorf("%s removed a peer during the leader loss", m.Host.Name)
		}
	}
}
