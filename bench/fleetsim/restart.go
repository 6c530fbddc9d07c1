package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/bench/internal/fleet"
	"github.com/meshd/meshd/internal/zkserver"
	"github.com/meshd/meshd/registry"
)

// RestartResult is the phase after the churn: ZooKeeper restarted (a
// standalone server halted and started again on its data and port) or an
// ensemble's leader killed, with all N sessions connected and in step.
// Counts run from the halt or kill until the fleet is steady again and
// quiet has passed; times from the halt or kill.
type RestartResult struct {
	Kind string `json:"kind"` // "restart" or "leader kill"
	// Removed and Added events, summed over the N watchers. The target is
	// no removal: a ZooKeeper that blinks must not take hosts away.
	Removals            int64 `json:"removals"`
	WatchersWithRemoval int   `json:"watchers_with_removal"`
	Adds                int64 `json:"adds"`
	// Sessions holding ephemerals (ZooKeeper's dump) before, and how
	// many of them were gone after: expired, each a re-registration.
	SessionsBefore  int `json:"sessions_before"`
	SessionsExpired int `json:"sessions_expired"`
	// Until ZooKeeper served again (standalone: started and answering;
	// ensemble: every surviving server in a mode, i.e. a new leader).
	ServingS float64 `json:"zk_serving_s"`
	// Until half of the registries, and until every one, reported
	// connected after ZooKeeper served (polled every 50 ms).
	ConnectedP50S float64 `json:"connected_p50_s"`
	ConnectedS    float64 `json:"connected_s"`
	// With -light: until every light host had its session again, and the
	// light hosts' bucket listings after a watch fired, over the phase.
	LightConnectedS float64 `json:"light_connected_s,omitempty"`
	LightRelists    int64   `json:"light_relists,omitempty"`
	// Until steady: every registry connected and its view holding all
	// hosts; and the same from ZooKeeper serving again.
	SteadyS          float64 `json:"steady_s"`
	ServingToSteadyS float64 `json:"serving_to_steady_s"`
	// Watchers that listed a bucket after the halt or kill (lastSync
	// after it). A session that survives keeps its watches (the client
	// sets them again on reconnect): none needs to list.
	Relisted int `json:"relisted"`
	// The fleet's requests and payload bytes read (registry.Stats), and
	// ZooKeeper's CPU (the servers running at the end: a restarted
	// server's includes its JVM start; a killed leader's is not counted),
	// over the phase and from ZooKeeper serving again.
	Requests            int64   `json:"requests"`
	PayloadBytes        int64   `json:"payload_bytes"`
	ZKCPUms             float64 `json:"zk_cpu_ms"`
	ZKCPUAfterServingMs float64 `json:"zk_cpu_after_serving_ms"`
	// Connections the kernel dropped because a listen queue was full
	// (TcpExt ListenOverflows of this network namespace, anyone's): the
	// fleet reconnecting at once against ZooKeeper's accept backlog.
	ListenOverflows int64 `json:"listen_overflows"`
	// A change made once steady (the writer joins, or changes its
	// endpoint if it is in): until all N have it. Shows the watches work.
	ProbeMs float64 `json:"probe_ms"`
}

// quiet is how long after steady the phase keeps counting: a removal
// or expiry that comes late still counts.
const quiet = 2 * time.Second

// restart runs the phase on the fleet in step after the churn.
func (s *sim) restart(ctx context.Context, zs *zkServers) (RestartResult, error) {
	var res RestartResult
	all := append([]*watcher(nil), s.hosts...)
	if s.writer != nil {
		all = append(all, s.writer)
	}
	want := len(all) + s.light.count() // hosts in every view
	pctx, cancel := context.WithTimeout(ctx, s.cfg.steadyTimeout)
	defer cancel()
	// In step before: every registry connected, every view full.
	if err := s.inStep(pctx, func() []*watcher { return all }, want, "before"); err != nil {
		return res, err
	}
	if n := notConnected(all); n > 0 {
		return res, fmt.Errorf("%d registries not connected before the phase", n)
	}
	if n := s.light.notConnected(); n > 0 {
		return res, fmt.Errorf("%d light hosts not connected before the phase", n)
	}
	before, err := zs.sessions()
	if err != nil {
		return res, fmt.Errorf("sessions before: %w", err)
	}
	res.SessionsBefore = len(before)
	regs := make([]*registry.Registry, len(s.hosts))
	rem0 := make([]int64, len(s.hosts))
	var add0 int64
	for i, w := range s.hosts {
		regs[i] = w.reg
		rem0[i] = w.removed.Load()
		add0 += w.added.Load()
	}
	r0, b0 := fleet.Totals(regs)
	l0 := s.light.relisted()
	u0 := s.zk.each()
	lo0 := listenOverflows()

	type served struct {
		at  time.Time
		u   map[int]fleet.Usage
		err error
	}
	up := make(chan served, 1)
	start := time.Now()
	if zs.server != nil {
		res.Kind = "restart"
		go func() {
			err := zs.server.Restart(pctx) // halts, then starts and waits until it serves
			up <- served{time.Now(), s.zk.each(), err}
		}()
	} else {
		res.Kind = "leader kill"
		leader, err := zs.ensemble.Leader()
		if err != nil {
			return res, err
		}
		pid := leader.PID()
		start = time.Now()
		leader.Kill()
		progress("leader %s (pid %d) killed; waiting for the others to serve", leader.Addr(), pid)
		go func() {
			// A new leader first: a follower may not yet have seen the
			// old one go, and would still say it serves.
			err := newLeader(pctx, zs.ensemble, leader)
			for _, srv := range zs.ensemble.Servers {
				if srv != leader {
					err = errors.Join(err, srv.WaitReady(pctx, s.cfg.steadyTimeout))
				}
			}
			up <- served{time.Now(), s.zk.each(), err}
		}()
	}

	// Once the limit or an interrupt ends pctx, the restart gives up too:
	// waited for, so that no server starts after the run stopped them.
	sv := <-up
	if sv.err != nil {
		return res, fmt.Errorf("ZooKeeper not serving again: %w", sv.err)
	}
	res.ServingS = sv.at.Sub(start).Seconds()
	progress("%s: ZooKeeper serving after %.1f s", res.Kind, res.ServingS)

	// Steady: every session connected (the light hosts' too), every view full.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	var connectedAt, steadyAt, lightAt time.Time
	upAt := make([]time.Duration, len(all)) // per registry: connected again, from start
	for steadyAt.IsZero() {
		nc, short := 0, 0
		for i, w := range all {
			if st, _ := w.reg.State(); st != registry.Connected {
				nc++
			} else if upAt[i] == 0 {
				upAt[i] = time.Since(start)
			}
		}
		nl := s.light.notConnected()
		for _, w := range all {
			if w.known.Load() != int64(want) {
				short++
			}
		}
		now := time.Now()
		if nl > 0 {
			nc += nl
		} else if lightAt.IsZero() && s.light != nil {
			lightAt = now
		}
		if nc == 0 && connectedAt.IsZero() {
			connectedAt = now
		}
		if nc == 0 && short == 0 {
			steadyAt = now
			break
		}
		if time.Since(last) > 10*time.Second {
			lo, hi := int64(want), int64(want)
			for _, w := range all {
				lo, hi = min(lo, w.known.Load()), max(hi, w.known.Load())
			}
			progress("%s: %d of %d sessions not connected (%d of them light), %d views not holding all %d (views hold %d-%d)", res.Kind, nc, len(all)+s.light.count(), nl, short, want, lo, hi)
			last = time.Now()
		}
		select {
		case <-pctx.Done():
			return res, fmt.Errorf("not steady %s after the %s: %d of %d sessions not connected (%d of them light), %d views not holding all %d hosts",
				s.cfg.steadyTimeout, res.Kind, nc, len(all)+s.light.count(), nl, short, want)
		case <-tick.C:
		}
	}
	res.ConnectedS = connectedAt.Sub(start).Seconds()
	res.ConnectedP50S = fleet.Quantile(upAt, 0.5).Seconds()
	if !lightAt.IsZero() {
		res.LightConnectedS = lightAt.Sub(start).Seconds()
	}
	res.SteadyS = steadyAt.Sub(start).Seconds()
	res.ServingToSteadyS = steadyAt.Sub(sv.at).Seconds()
	progress("%s: steady after %.1f s; counting %s more", res.Kind, res.SteadyS, quiet)
	time.Sleep(quiet)

	u1 := s.zk.each()
	r1, b1 := fleet.Totals(regs)
	res.Requests, res.PayloadBytes = r1-r0, b1-b0
	res.LightRelists = s.light.relisted() - l0
	res.ListenOverflows = listenOverflows() - lo0
	res.ZKCPUms = fleet.Ms(cpuSince(u0, u1))
	res.ZKCPUAfterServingMs = fleet.Ms(cpuSince(sv.u, u1))
	for i, w := range s.hosts {
		if d := w.removed.Load() - rem0[i]; d > 0 {
			res.Removals += d
			res.WatchersWithRemoval++
		}
		res.Adds += w.added.Load()
	}
	res.Adds -= add0
	for _, w := range all {
		if _, ls := w.reg.State(); ls.After(start) {
			res.Relisted++
		}
	}
	after, err := zs.sessions()
	if err != nil {
		return res, fmt.Errorf("sessions after: %w", err)
	}
	for id := range before {
		if !after[id] {
			res.SessionsExpired++
		}
	}
	took, err := s.probe(ctx)
	if err != nil {
		return res, fmt.Errorf("probe: %w", err)
	}
	res.ProbeMs = fleet.Ms(took)
	return res, nil
}

// probe makes one change, timed until all N have it: a join, or with the
// writer in, an endpoint change.
func (s *sim) probe(ctx context.Context) (time.Duration, error) {
	n := len(s.hosts) + s.light.count()
	ch := newChange(n)
	var do func() error
	if s.writer == nil {
		if err := s.openWriter(ctx, len(s.hosts)); err != nil {
			return 0, err
		}
		host := s.writer.host
		ch.kind = registry.Added
		do = func() error { _, err := s.writer.reg.Register(ctx, host, 30*time.Second); return err }
	} else {
		host := s.writer.host
		host.PublicIP = netip.AddrFrom4([4]byte{198, 19, 255, 254})
		ch.kind, ch.publicIP = registry.Updated, host.PublicIP
		do = func() error { s.writer.reg.UpdateSelf(host); return nil }
	}
	ch.id = s.writer.host.InstanceID
	err := s.timed(ch, do)
	if err == nil {
		err = ch.wait(ctx, s.cfg.changeTimeout)
	}
	s.target.Store(nil)
	if err != nil {
		return 0, err
	}
	progress("probe (%v): all %d in %.1f ms", ch.kind, n, fleet.Ms(ch.took))
	return ch.took, nil
}

// newLeader waits until a server other than old reports itself leader.
func newLeader(ctx context.Context, e *zkserver.Ensemble, old *zkserver.Server) error {
	for {
		for _, srv := range e.Servers {
			if st, err := srv.FourLetter("srvr"); srv != old && err == nil && strings.Contains(st, "Mode: leader") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no new leader: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// listenOverflows reads TcpExt ListenOverflows from /proc/net/netstat
// (0 if unreadable).
func listenOverflows() int64 {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != "TcpExt:" {
			continue
		}
		for j, n := range names {
			if n == "ListenOverflows" {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	return 0
}

func notConnected(ws []*watcher) int {
	n := 0
	for _, w := range ws {
		if st, _ := w.reg.State(); st != registry.Connected {
			n++
		}
	}
	return n
}

// sessions lists the sessions that hold ephemerals, from the serving
// server's dump (standalone) or the leader's (ensemble).
func (z *zkServers) sessions() (map[string]bool, error) {
	var srv *zkserver.Server
	if z.server != nil {
		srv = z.server
	} else {
		var err error
		if srv, err = z.ensemble.Leader(); err != nil {
			return nil, err
		}
	}
	out, err := srv.FourLetter("dump")
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "0x") && strings.HasSuffix(l, ":") {
			ids[strings.TrimSuffix(l, ":")] = true
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("dump of %s lists no session:\n%s", srv.Addr(), out)
	}
	return ids, nil
}
