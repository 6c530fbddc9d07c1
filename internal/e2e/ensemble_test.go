package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testbed"
	"github.com/meshd/meshd/internal/zkserver"
)

// stableEnsemble builds a testbed with a 3-server ensemble and returns once
// one leader has held for 5 s and every server serves.
func stableEnsemble(t *testing.T) *testbed.Testbed {
	tb := testbed.NewForTest(t, testbed.Options{ZooKeeper: true, Ensemble: 3})
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range tb.Ensemble().Servers {
				t.Logf("--- ZooKeeper %s:\n%s", s.Addr(), s.LogTail(25))
			}
		}
	})
	// A freshly formed ensemble on a loaded machine may re-elect within its
	// first seconds, and a meshd that cannot lease within 5 s at its first
	// start exits (systemd restarts it). Start hosts once one leader has
	// held for 5 s and every server serves.
	var leader *zkserver.Server
	var since time.Time
	waitFor(t, 90*time.Second, "ensemble stable: one leader for 5s", func() error {
		l, err := tb.Ensemble().Leader()
		if err != nil {
			leader = nil
			return err
		}
		for _, s := range tb.Ensemble().Servers {
			if st, err := s.FourLetter("srvr"); err != nil || !strings.Contains(st, "Mode:") {
				leader = nil
				return fmt.Errorf("%s not serving: %v", s.Addr(), err)
			}
		}
		if l != leader {
			leader, since = l, time.Now()
		}
		if time.Since(since) < 5*time.Second {
			return fmt.Errorf("leader %s for %s", l.Addr(), time.Since(since).Round(time.Second))
		}
		return nil
	})
	return tb
}

// ensembleFleet starts a 3-server ensemble and three meshd hosts (vpc, dc,
// classic) on it, each given every server, and waits until they reach each
// other.
func ensembleFleet(t *testing.T) (*testbed.Testbed, []*testbed.Meshd, map[*testbed.Meshd]string) {
	tb := stableEnsemble(t)
	ms, ip := meshOn(t, tb, nil)
	return tb, ms, ip
}

// noChurn: every host is connected again, knows every other as a peer,
// none stale, and none was ever removed.
func noChurn(t *testing.T, ms []*testbed.Meshd) {
	t.Helper()
	waitFor(t, 60*time.Second, "every host connected again, every peer known and not stale", func() error {
		for _, m := range ms {
			s, err := m.Status()
			if err != nil {
				return err
			}
			if s.Registry != "connected" {
				return fmt.Errorf("%s: registry %s", m.Host.Name, s.Registry)
			}
			ps, _ := m.Peers()
			if len(ps) != len(ms)-1 {
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
			t.Errorf("%s removed a peer", m.Host.Name)
		}
	}
}

func checkPings(t *testing.T, what string, pings []func() (string, bool)) {
	t.Helper()
	for _, w := range pings {
		if summary, ok := w(); !ok {
			t.Errorf("traffic across %s: %s", what, summary)
		} else {
			t.Logf("across %s: %s", what, summary)
		}
	}
}

// TestLeaderKilledNoLoss: three meshd hosts on a 3-server ensemble, pings
// flowing; the leader is killed. The other two elect a new one, sessions
// move to them, and nothing happens to the data plane: 0 lost, no peer
// removed, nobody stale at the end.
func TestLeaderKilledNoLoss(t *testing.T) {
	tb, ms, ip := ensembleFleet(t)
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
	checkPings(t, "the leader loss", pings)
	noChurn(t, ms)
}

// TestQuorumLostNoLoss: two of three servers die, so the one left has no
// quorum and serves nobody, for longer than session timeout + hold-down +
// handshake timeout. Every host fails static: 0 lost. When the two return
// the fleet converges without a single removal.
func TestQuorumLostNoLoss(t *testing.T) {
	tb, ms, ip := ensembleFleet(t)
	pings := []func() (string, bool){
		steadyPing(t, ms[0].Host, ip[ms[1]], 24*time.Second),
		steadyPing(t, ms[2].Host, ip[ms[0]], 24*time.Second),
	}
	time.Sleep(2 * time.Second) // pings flow before the fault; ping has no readiness signal
	servers := tb.Ensemble().Servers
	servers[0].Halt()
	servers[1].Halt()
	lostAt := time.Now()
	waitFor(t, 30*time.Second, "every host sees the registry gone", func() error {
		for _, m := range ms {
			if s, _ := m.Status(); s.Registry == "connected" {
				return fmt.Errorf("%s still connected", m.Host.Name)
			}
		}
		return nil
	})
	if d := 16*time.Second - time.Since(lostAt); d > 0 {
		time.Sleep(d) // the fault's duration is the point: past session timeout + hold-down + handshake timeout
	}
	for _, s := range servers[:2] {
		if err := s.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("quorum lost for %s", time.Since(lostAt).Round(time.Second))
	checkPings(t, "the quorum loss", pings)
	noChurn(t, ms)
}
