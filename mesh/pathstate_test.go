package mesh

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var timers = PathTimers{Handshake: 5 * time.Second, FirstRetry: 30 * time.Second, MaxRetry: 120 * time.Second}

func twoCands() []Candidate {
	c, _ := Candidates(loc("vpc", "198.18.2.11", "198.19.2.11"), loc("vpc", "198.18.2.12", "198.19.2.12"), nil)
	return c
}

// sim drives a pathState with a fake clock and a fake peer whose reachable
// endpoints the test decides: a handshake completes one second after an
// attempt on a reachable endpoint.
type sim struct {
	t         *testing.T
	now       time.Time
	s         *pathState
	up        map[netip.AddrPort]bool
	obs       Observation
	attempted time.Time
	endpoints []Path // endpoint set by each setEndpoint action, in order
	probes    int
}

func newSim(t *testing.T, up ...netip.AddrPort) *sim {
	m := &sim{t: t, now: time.Unix(1_000_000, 0), up: map[netip.AddrPort]bool{}}
	for _, u := range up {
		m.up[u] = true
	}
	m.s = newPathState(twoCands(), m.now, timers)
	m.configure(action{setEndpoint: true, handshake: true})
	return m
}

func (m *sim) configure(a action) {
	if a.probe {
		c0 := m.s.cands[0].Endpoint
		m.probes++
		a = m.s.probed(m.up[c0], m.now, timers)
	}
	if a.setEndpoint {
		c, _ := m.s.current()
		m.obs.Endpoint = c.Endpoint
		m.endpoints = append(m.endpoints, c.Path)
	}
	if a.handshake {
		m.attempted = m.now
	}
}

// run advances the clock second by second.
func (m *sim) run(d time.Duration) {
	for end := m.now.Add(d); m.now.Before(end); {
		m.now = m.now.Add(time.Second)
		if !m.attempted.IsZero() && m.now.Sub(m.attempted) >= time.Second && m.up[m.obs.Endpoint] {
			m.obs.LastHandshake = m.now
			m.attempted = time.Time{}
		}
		m.configure(m.s.step(m.obs, m.now, timers))
	}
}

func (m *sim) path() Path { c, _ := m.s.current(); return c.Path }

func TestPathPrivateWhenUp(t *testing.T) {
	c := twoCands()
	m := newSim(t, c[0].Endpoint, c[1].Endpoint)
	m.run(time.Minute)
	if m.path() != PathPrivate || m.s.reason() != "same network vpc" || m.s.trying {
		t.Fatalf("path %s (%q), trying %v", m.path(), m.s.reason(), m.s.trying)
	}
	if len(m.endpoints) != 1 {
		t.Errorf("endpoint set %d times, want once: %v", len(m.endpoints), m.endpoints)
	}
}

func TestPathFallsBackWithinBoundAndReturnsAfterHysteresis(t *testing.T) {
	c := twoCands()
	m := newSim(t, c[1].Endpoint) // private blocked from the start
	m.run(7 * time.Second)
	if m.path() != PathPublic {
		t.Fatalf("after 7s on a dead private path: %s", m.path())
	}
	if r := m.s.reason(); !strings.HasPrefix(r, "fell back: no handshake on private for 5s") {
		t.Errorf("reason = %q", r)
	}
	// While private stays down, trials back off: 30s, 60s, 120s, 120s ...
	m.run(10 * time.Minute)
	if m.path() != PathPublic {
		t.Fatalf("private still down, path %s", m.path())
	}
	// Probes find private still dead: traffic is never moved onto it.
	if trials := strings.Count(pathsString(m.endpoints), "private"); trials != 1 {
		t.Errorf("traffic moved to the dead private path %d times after the first attempt (%v)", trials-1, m.endpoints)
	}
	if m.probes < 3 || m.probes > 8 {
		t.Errorf("%d probes in 10 minutes: want a few, backing off", m.probes)
	}
	// Unblock: back on private after the next trial, and then it stays.
	m.up[c[0].Endpoint] = true
	m.run(3 * time.Minute)
	if m.path() != PathPrivate || m.s.reason() != "same network vpc" {
		t.Fatalf("private back up, path %s (%q)", m.path(), m.s.reason())
	}
	before := len(m.endpoints)
	m.run(time.Minute)
	if len(m.endpoints) != before {
		t.Errorf("flapping: endpoint changed %d times in a minute", len(m.endpoints)-before)
	}
}

func TestPathDetectsDeadPathFromSilence(t *testing.T) {
	c := twoCands()
	m := newSim(t, c[0].Endpoint, c[1].Endpoint)
	m.run(10 * time.Second)
	// The private path dies while traffic flows: tx grows, rx does not.
	delete(m.up, c[0].Endpoint)
	for i := 0; i < 20 && m.path() == PathPrivate; i++ {
		m.obs.TxBytes += 1000
		m.run(time.Second)
	}
	if m.path() != PathPublic {
		t.Fatalf("dead private path not left within 20s: %s", m.path())
	}
}

func TestPathAdoptsBetterEndpointThePeerProved(t *testing.T) {
	c := twoCands()
	m := newSim(t, c[1].Endpoint)
	m.run(7 * time.Second) // fallen back to public
	// The peer handshakes from its private address; WireGuard roams us.
	m.run(2 * time.Second)
	m.obs.Endpoint, m.obs.LastHandshake = c[0].Endpoint, m.now
	m.run(time.Second)
	if m.path() != PathPrivate {
		t.Fatalf("did not adopt the proven private path: %s", m.path())
	}
}

func TestPathResetKeepsProvenEndpoint(t *testing.T) {
	c := twoCands()
	m := newSim(t, c[0].Endpoint)
	m.run(5 * time.Second)
	if a := m.s.reset(twoCands(), m.obs, m.now, timers); a.setEndpoint {
		t.Errorf("unchanged candidates moved the endpoint")
	}
	moved, _ := Candidates(loc("vpc", "198.18.2.11", ""), loc("classic", "198.18.1.40", "198.19.1.40"), nil)
	if a := m.s.reset(moved, m.obs, m.now, timers); !a.setEndpoint || !a.handshake {
		t.Errorf("moved peer: want new endpoint and handshake, got %+v", a)
	}
	if cur, _ := m.s.current(); cur.Endpoint.String() != "198.19.1.40:51820" {
		t.Errorf("endpoint after move = %s", cur.Endpoint)
	}
}

func TestPathAllCandidatesDown(t *testing.T) {
	m := newSim(t)
	m.run(12 * time.Second)
	if !m.s.exhausted {
		t.Errorf("no candidate up for 12s, want exhausted")
	}
}

func pathsString(p []Path) string {
	var b strings.Builder
	for _, x := range p {
		b.WriteString(string(x) + " ")
	}
	return b.String()
}
