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
	pings := pingAcross(t, 20*time.Second, ip, [2]*testbed.Meshd{ms[0], ms[1]}, [2]*testbed.Meshd{ms[2], ms[0]})
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
	pings := pingAcross(t, 24*time.Second, ip, [2]*testbed.Meshd{ms[0], ms[1]}, [2]*testbed.Meshd{ms[2], ms[0]})
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
	hold(lostAt, 16*time.Second)
	for _, s := range servers[:2] {
		if err := s.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("quorum lost for %s", time.Since(lostAt).Round(time.Second))
	checkPings(t, "the quorum loss", pings)
	noChurn(t, ms)
}

// TestMinorityPartitionNoLoss: one server of three is cut off from the other
// two, so it loses quorum and stops serving, and the host given only that
// server loses the registry: its session expires on the majority side and
// its record vanishes. Pings flow across for longer than session timeout +
// hold-down + handshake timeout: 0 lost, since every host keeps its data
// plane; a new host still joins the majority side. Once the partition heals
// the cut-off host re-registers with the same address and the fleet
// converges without a single removal.
func TestMinorityPartitionNoLoss(t *testing.T) {
	tb := stableEnsemble(t)
	leader, err := tb.Ensemble().Leader()
	if err != nil {
		t.Fatal(err)
	}
	// The minority is a follower, so the majority keeps its leader and
	// everything that changes is the minority's loss.
	var minority int
	var majority []string
	for i, s := range tb.Ensemble().Servers {
		if s != leader && minority == 0 {
			minority = i + 1
		} else {
			majority = append(majority, s.Addr())
		}
	}
	alone := tb.Ensemble().Servers[minority-1]
	ms, ip := meshOn(t, tb, map[string][]string{"vpc": majority, "dc": majority, "classic": {alone.Addr()}})
	connected, cut := ms[:2], ms[2]
	pings := pingAcross(t, 32*time.Second, ip, [2]*testbed.Meshd{connected[0], cut}, [2]*testbed.Meshd{cut, connected[1]})
	if err := tb.BlockQuorum(minority); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	healed := false
	heal := func() {
		if !healed {
			healed = true
			if err := tb.UnblockQuorum(minority); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(heal)
	d := waitFor(t, 20*time.Second, "the minority server stops serving", func() error {
		if st, err := alone.FourLetter("srvr"); err == nil && strings.Contains(st, "Mode:") {
			return fmt.Errorf("%s still serves: %s", alone.Addr(), grepLines(st, "Mode:"))
		}
		return nil
	})
	t.Logf("%s lost quorum %s after the partition", alone.Addr(), d.Round(100*time.Millisecond))
	waitKeptAlive(t, 20*time.Second, connected, []*testbed.Meshd{cut})
	t.Logf("%s's record gone on the majority, kept alive by both peers, %s after the partition", cut.Host.Name, time.Since(cutAt).Round(100*time.Millisecond))
	waitSessionExpired(t, cut)
	if p, err := peerOf(cut, connected[0].Host.Name); err != nil || p.State != "stale" {
		t.Errorf("cut-off %s -> %s: %+v %v", cut.Host.Name, connected[0].Host.Name, p, err)
	}

	// A new host joins the majority side meanwhile.
	joined := startOn(t, tb, "vpc", testbed.MeshdOptions{ZooKeeper: majority})
	ip[joined] = overlayIPs([]*testbed.Meshd{joined})[joined]
	waitMeshUp(t, []*testbed.Meshd{joined, connected[0]}, ip)

	// Hold the partition past 20 s (6 s session + 2 s hold-down + 3 s
	// handshake timeout and more), then heal it.
	hold(cutAt, 20*time.Second)
	heal()
	healedAt := time.Now()
	t.Logf("minority partition held for %s", time.Since(cutAt).Round(time.Second))
	checkPings(t, "the minority partition", pings)
	waitReRegistered(t, 60*time.Second, ip, []*testbed.Meshd{connected[0], connected[1], joined}, []*testbed.Meshd{cut})
	t.Logf("re-registered as %s within %s of the heal", ip[cut], time.Since(healedAt).Round(100*time.Millisecond))
	noChurn(t, []*testbed.Meshd{connected[0], connected[1], cut, joined})
}
