package main

import (
	"time"

	"github.com/meshd/meshd/bench/internal/fleet"
)

// zkProc is the ZooKeeper servers' processes, read around each change:
// one standalone server, or each member of an ensemble. pids is asked
// each time, as a restarted server is a new process.
type zkProc struct{ pids func() []int }

// usage sums the servers' accounting. A server that is not running (a
// killed leader) reads zero: the figure is the live servers', the run
// goes on.
func (z *zkProc) usage() fleet.Usage {
	var sum fleet.Usage
	for _, u := range z.each() {
		sum.RSS += u.RSS
		sum.HWM += u.HWM
		sum.CPU += u.CPU
		sum.IO += u.IO
	}
	return sum
}

// each reads every running server, by pid.
func (z *zkProc) each() map[int]fleet.Usage {
	out := map[int]fleet.Usage{}
	for _, pid := range z.pids() {
		if u, err := fleet.ReadUsage(pid); err == nil {
			out[pid] = u
		}
	}
	return out
}

// cpuSince is the CPU the servers running now used since then: a server
// started since counts from its start, one gone since is left out (its
// last moments cannot be read once it exited).
func cpuSince(then, now map[int]fleet.Usage) time.Duration {
	var d time.Duration
	for pid, u := range now {
		d += u.CPU - then[pid].CPU
	}
	return d
}

// windows add up one side's changes, each from its start until all N
// have it and a settling pause has passed: the tail of a change (a
// second listing after an update's delete) counts, the pauses between
// changes and any resync the writer does between them do not.
type windows struct {
	zk       *zkProc
	counters func() (req, bytes int64) // summed over the N sessions
	lat      []time.Duration
	first    []time.Duration
	commits  []time.Duration // the writer's part, where known (committed)
	kinds    []string
	req, by  int64
	used     fleet.Usage
	last     fleet.Usage
	sim      time.Duration // this process's CPU: the clients'

	u0     fleet.Usage
	s0     time.Duration
	r0, b0 int64
}

func (w *windows) begin() {
	w.u0 = w.zk.usage()
	w.s0 = selfCPU()
	w.r0, w.b0 = w.counters()
}

func (w *windows) end(c *change) {
	u := w.zk.usage()
	r, b := w.counters()
	d := u.Sub(w.u0)
	w.lat = append(w.lat, c.took)
	w.first = append(w.first, time.Duration(c.first.Load()))
	w.kinds = append(w.kinds, c.kind.String())
	w.commits = append(w.commits, 0)
	w.req, w.by = w.req+r-w.r0, w.by+b-w.b0
	w.used.CPU += d.CPU
	w.used.IO += d.IO
	w.sim += selfCPU() - w.s0
	w.last = u
}

// commit records when the last change's record was made.
func (w *windows) commit(d time.Duration) {
	if n := len(w.commits); n > 0 {
		w.commits[n-1] = d
	}
}

func (w *windows) fanout() Fanout {
	n := len(w.lat)
	if n == 0 {
		return Fanout{}
	}
	per := func(v int64) float64 { return float64(v) / float64(n) }
	spread := make([]time.Duration, n)
	each := make([]Timing, n)
	for i := range w.lat {
		spread[i] = w.lat[i] - w.first[i]
		each[i] = Timing{Kind: w.kinds[i], FirstMs: fleet.Ms(w.first[i]), AllMs: fleet.Ms(w.lat[i])}
		if i < len(w.commits) {
			each[i].CommitMs = fleet.Ms(w.commits[i])
		}
	}
	return Fanout{Changes: n, Each: each,
		FirstP50ms: fleet.Ms(fleet.Quantile(w.first, 0.5)), SpreadP99ms: fleet.Ms(fleet.Quantile(spread, 0.99)),
		P50ms: fleet.Ms(fleet.Quantile(w.lat, 0.5)), P99ms: fleet.Ms(fleet.Quantile(w.lat, 0.99)), MaxMs: fleet.Ms(fleet.Quantile(w.lat, 1)),
		RequestsPerChange: per(w.req), PayloadBytesPerChange: per(w.by),
		ZKIOBytesPerChange: per(w.used.IO), ZKCPUmsPerChange: fleet.Ms(w.used.CPU) / float64(n), SimCPUmsPerChange: fleet.Ms(w.sim) / float64(n), ZKRSSMiB: fleet.MiB(w.last.RSS)}
}

// selfCPU is this process's CPU time so far (zero if unreadable).
func selfCPU() time.Duration {
	u, _ := fleet.ReadUsage(0)
	return u.CPU
}
