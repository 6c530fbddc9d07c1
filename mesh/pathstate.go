package mesh

import (
	"fmt"
	"net/netip"
	"time"
)

// Observation is what the device reports about one peer.
type Observation struct {
	Endpoint      netip.AddrPort
	LastHandshake time.Time
	RxBytes       uint64
	TxBytes       uint64
}

// PathTimers are the bounds of path selection.
type PathTimers struct {
	// Handshake is how long a candidate may try before it is given up.
	Handshake time.Duration
	// FirstRetry is how long a fallen-back peer waits before it tries the
	// better path again; each failed trial doubles it up to MaxRetry.
	FirstRetry, MaxRetry time.Duration
}

// DefaultPathTimers are used where the config does not say otherwise.
var DefaultPathTimers = PathTimers{Handshake: 5 * time.Second, FirstRetry: 30 * time.Second, MaxRetry: 5 * time.Minute}

// pathState chooses one peer's endpoint among its candidates. It is driven
// by observations of the device and the clock only, so it is tested without
// a device.
type pathState struct {
	cands []Candidate
	cur   int // index of the candidate in use

	trying   bool      // a handshake on cands[cur] is awaited
	tryStart time.Time // when the attempt started
	probing  bool      // the attempt is a trial of a better candidate
	fallback int       // where to return when the trial fails

	fellBack  string    // reason words when cur is not the best candidate
	nextTrial time.Time // when a fallen-back peer next tries cands[0]
	backoff   time.Duration

	exhausted bool      // every candidate failed since the last success
	restUntil time.Time // an exhausted peer is left alone until then
	probing1  bool      // an out-of-band probe of cands[0] is in flight

	lastTx, lastRx uint64
	silentSince    time.Time // tx growing, rx not, since
	changedAt      time.Time // when the endpoint was last set by us
}

// action is what the reconciler must do to the device after a step.
type action struct {
	setEndpoint bool // configure cands[cur] as the peer's endpoint
	handshake   bool // initiate a handshake now
	probe       bool // probe cands[0] out of band, then call probed
	// once makes that handshake a single initiation: the peer has not
	// answered on any path, and a normal handshake would restart
	// WireGuard's own 90 s chain of retries.
	once bool
	// dropQueued drops what is queued for the peer before the endpoint is
	// set: WireGuard restarts its retries whenever a queued packet meets a
	// configuration change, which would keep a resting peer busy forever.
	dropQueued bool
}

func newPathState(cands []Candidate, now time.Time, t PathTimers) *pathState {
	s := &pathState{cands: cands, backoff: t.FirstRetry}
	s.begin(0, now)
	return s
}

// begin starts an attempt on candidate i.
func (s *pathState) begin(i int, now time.Time) {
	s.cur, s.trying, s.tryStart, s.changedAt = i, true, now, now
	s.silentSince = time.Time{}
}

// current is the candidate in use, if any.
func (s *pathState) current() (Candidate, bool) {
	if s == nil || len(s.cands) == 0 {
		return Candidate{}, false
	}
	return s.cands[s.cur], true
}

// reason says why the current candidate is in use.
func (s *pathState) reason() string {
	if s.resting() {
		return fmt.Sprintf("no handshake on any path; next try at %s", s.restUntil.UTC().Format(time.TimeOnly))
	}
	if s.fellBack != "" && s.cur > 0 && !s.probing {
		return s.fellBack
	}
	c, _ := s.current()
	return c.Reason
}

// reset replaces the candidates (the peer moved, or links changed). The
// attempt restarts on the best candidate, unless the endpoint in use is
// still a candidate and proven: then nothing moves.
func (s *pathState) reset(cands []Candidate, obs Observation, now time.Time, t PathTimers) action {
	prev, had := s.current()
	*s = pathState{cands: cands, backoff: t.FirstRetry, lastTx: obs.TxBytes, lastRx: obs.RxBytes}
	if len(cands) == 0 {
		return action{}
	}
	if had && prev == cands[0] {
		s.changedAt = now
		return action{}
	}
	s.begin(0, now)
	return action{setEndpoint: true, handshake: true}
}

// step advances the state machine with one observation of the device.
func (s *pathState) step(obs Observation, now time.Time, t PathTimers) action {
	if len(s.cands) == 0 {
		return action{}
	}
	defer func() { s.lastTx, s.lastRx = obs.TxBytes, obs.RxBytes }()

	if s.resting() {
		return s.rest(obs, now, t)
	}

	// The peer may prove a better candidate up by handshaking from it:
	// WireGuard roams our endpoint to where its packets came from.
	if !s.trying || s.probing {
		for i := 0; i < s.cur || (s.probing && i < s.fallback); i++ {
			if obs.Endpoint == s.cands[i].Endpoint && obs.LastHandshake.After(s.changedAt) {
				s.adopt(i, now, t)
				return action{}
			}
		}
	}

	if s.trying {
		if obs.LastHandshake.After(s.tryStart) {
			back := s.exhausted
			s.trying, s.exhausted = false, false
			if s.probing || s.cur == 0 {
				s.adopt(s.cur, now, t)
			}
			// A peer back from the dead gets its keepalive again.
			return action{setEndpoint: back}
		}
		if now.Sub(s.tryStart) < t.Handshake {
			return action{}
		}
		failed := s.cands[s.cur]
		if s.probing {
			// The better path is still down: back to the one that works,
			// and wait longer before the next trial.
			s.probing = false
			s.begin(s.fallback, now)
			s.trying = false
			s.backoff = min(2*s.backoff, t.MaxRetry)
			s.nextTrial = now.Add(s.backoff)
			return action{setEndpoint: true, handshake: true}
		}
		next := (s.cur + 1) % len(s.cands)
		s.fellBack = fmt.Sprintf("fell back: no handshake on %s for %s", failed.Path, t.Handshake.Round(time.Second))
		s.begin(next, now)
		if next == 0 {
			// Every candidate failed: the peer is down or blocks us. Rest
			// on the best candidate and try again after a pause that grows
			// to MaxRetry: retrying every few seconds, 5 000 such peers
			// took a seventh of a core and 60 KiB each in queued packets.
			s.fellBack, s.exhausted, s.trying = "", true, false
			s.restUntil = now.Add(s.backoff)
			s.backoff = min(2*s.backoff, t.MaxRetry)
			return action{setEndpoint: true, dropQueued: true}
		}
		s.nextTrial = now.Add(s.backoff)
		return action{setEndpoint: true, handshake: true, once: s.exhausted}
	}

	// Liveness: we keep sending and hear nothing back. WireGuard itself
	// would only notice at the next rekey, minutes later; try a handshake
	// now and fall back if it does not complete.
	if obs.TxBytes > s.lastTx && obs.RxBytes == s.lastRx {
		if s.silentSince.IsZero() {
			s.silentSince = now
		}
		if now.Sub(s.silentSince) >= t.Handshake {
			s.trying, s.tryStart = true, now
			s.silentSince = time.Time{}
			return action{handshake: true}
		}
	} else if obs.RxBytes != s.lastRx {
		s.silentSince = time.Time{}
	}

	if s.cur > 0 && !s.nextTrial.IsZero() && !now.Before(s.nextTrial) && !s.probing1 {
		// Moving traffic to a path that is still dead would blackhole it
		// for the handshake timeout: probe it out of band first.
		s.probing1 = true
		return action{probe: true}
	}
	return action{}
}

// state is the peer's state word (CONTRACTS.md). A peer nobody is talking
// to is idle, not connecting: WireGuard drops an unused session after three
// minutes, and that is no fault. connecting means a handshake is owed: an
// attempt on a path is running, or packets go out and nothing comes back;
// down means no path answered. Those two are what an alert fires on.
func (s *pathState) state(obs Observation, now time.Time) string {
	switch {
	case !obs.LastHandshake.IsZero() && now.Sub(obs.LastHandshake) < upWindow:
		return StateUp
	case s.exhausted:
		return StateDown
	case s.trying || !s.silentSince.IsZero():
		return StateConnecting
	}
	return StateIdle
}

// resting: every candidate failed and the peer is left alone for a while.
func (s *pathState) resting() bool { return s.exhausted && !s.trying }

// rest steps a resting peer. Its own handshake (or one WireGuard started for
// our traffic) ends the rest at once, on whichever candidate it came from;
// otherwise the candidates are tried again, quietly, when the rest is over.
func (s *pathState) rest(obs Observation, now time.Time, t PathTimers) action {
	if obs.LastHandshake.After(s.changedAt) {
		i := s.cur
		for j, c := range s.cands {
			if c.Endpoint == obs.Endpoint {
				i = j
			}
		}
		s.adopt(i, now, t)
		if i > 0 {
			s.fellBack = fmt.Sprintf("fell back: the peer answered on %s only", s.cands[i].Path)
			s.nextTrial = now.Add(s.backoff)
		}
		return action{setEndpoint: true} // with its keepalive again
	}
	if now.Before(s.restUntil) {
		return action{}
	}
	s.begin(0, now)
	return action{setEndpoint: true, handshake: true, once: true}
}

// probed takes the result of an out-of-band probe of the best candidate:
// reachable starts a trial there; unreachable waits longer.
func (s *pathState) probed(reachable bool, now time.Time, t PathTimers) action {
	if !s.probing1 {
		return action{}
	}
	s.probing1 = false
	if s.cur == 0 || s.trying {
		return action{} // things moved on meanwhile
	}
	if !reachable {
		s.backoff = min(2*s.backoff, t.MaxRetry)
		s.nextTrial = now.Add(s.backoff)
		return action{}
	}
	s.fallback = s.cur
	s.probing = true
	s.begin(0, now)
	return action{setEndpoint: true, handshake: true}
}

// adopt settles on candidate i as proven.
func (s *pathState) adopt(i int, now time.Time, t PathTimers) {
	s.cur, s.trying, s.probing, s.exhausted = i, false, false, false
	s.changedAt = now
	if i == 0 {
		s.fellBack, s.nextTrial, s.backoff = "", time.Time{}, t.FirstRetry
	}
}
