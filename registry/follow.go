package registry

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meshd/meshd/registry/zkext"
)

// Following the hosts tree. Against ZooKeeper 3.6 or later a registry
// keeps one persistent recursive watch on hosts/ instead of a child watch
// per bucket. Every record node created or deleted arrives as an event
// with its path, so a host mirrors each bucket's names without listing it
// again: a join or an update costs a watching host one read of the new
// record, a leave nothing, whatever the fleet's size (a child watch fired
// a listing of the whole bucket, N/256 names, on every change, which made
// the fleet's bytes per change grow as N^2). The mirror feeds the same
// syncBucket as a listing, so checks, refusals and events are the same.
//
// A persistent watch is the connection's: after a reconnect it is added
// again, and what changed while it was not there is found from the
// buckets' stats, all 256 in one multiRead: a bucket's cversion counts its
// creates and deletes, so a bucket whose cversion is its listed one plus
// the creates and deletes received since missed nothing, and only the
// others are listed again. A reconnect of a whole fleet costs ZooKeeper a
// request per host, not every bucket's names.

// maxPendingOps bounds the events a bucket keeps for its goroutine. A
// bucket that falls this far behind is listed again instead: memory stays
// bounded whatever a ZooKeeper writer churns.
const maxPendingOps = 4096

// childOp is a record node created or deleted in a bucket.
type childOp struct {
	name    string
	created bool
	// epoch is, for a delete, the decommission watch's generation armed
	// when the event came (decommissions.go): if it is still unfired when
	// the delete is synced, no decommission came between, and a
	// decommission's multi moves the counter before it deletes records,
	// so its counter event comes first. The delete is then a leave.
	epoch uint64
}

// bucketEvents is what the watch said of one bucket since its goroutine
// last looked.
type bucketEvents struct {
	ops []childOp
	// received counts the bucket's child creates and deletes, ever;
	// listedCversion and receivedAtList are the bucket's cversion at its
	// last listing and received then: the cversion ZooKeeper should have
	// now is listedCversion + received - receivedAtList.
	received       uint64
	listedCversion int32
	receivedAtList uint64
	listed         bool // a listing set listedCversion
	relist         bool // list again: the bucket node changed, events were dropped, or some were missed
	spread         bool // ... after a random wait (a reconnect: the fleet does not list in step)
}

// hostEvents queues the watch's events by bucket. add runs as the
// client's event callback, in its receive loop: it never blocks.
type hostEvents struct {
	mu     sync.Mutex
	on     bool   // the watch was asked for: its events are queued
	prefix string // the hosts node's path and "/"
	b      [Buckets]bucketEvents
	poke   [Buckets]chan struct{} // one deep: bucket b has news
	// connected is poked by each new connection with a session: the
	// watch is added again.
	connected chan struct{}
	bytesIn   *atomic.Int64 // event paths received count as bytes in (Stats)
	armed     *atomic.Uint64
}

func (q *hostEvents) init(hostsPath string, bytesIn *atomic.Int64, armed *atomic.Uint64) {
	q.prefix, q.bytesIn, q.armed = hostsPath+"/", bytesIn, armed
	q.connected = make(chan struct{}, 1)
	for b := range q.poke {
		q.poke[b] = make(chan struct{}, 1)
	}
}

func (q *hostEvents) add(ev zk.Event) {
	if ev.Type == zk.EventSession {
		if ev.State == zk.StateHasSession {
			select {
			case q.connected <- struct{}{}:
			default:
			}
		}
		return
	}
	if ev.Type != zk.EventNodeCreated && ev.Type != zk.EventNodeDeleted {
		return // a record's data is never set by meshd; a bucket's neither
	}
	rest, ok := strings.CutPrefix(ev.Path, q.prefix)
	if !ok {
		return
	}
	bucket, name, child := strings.Cut(rest, "/")
	b, ok := parseBucket(bucket)
	if !ok || strings.Contains(name, "/") {
		return // not meshd's layout: nothing a listing would show either
	}
	q.mu.Lock()
	if !q.on {
		q.mu.Unlock()
		return
	}
	q.bytesIn.Add(int64(len(ev.Path)))
	e := &q.b[b]
	switch {
	case !child && ev.Type == zk.EventNodeCreated:
		// A bucket made: empty, and nothing to list. Every registry makes
		// the buckets it finds missing, so a new fleet makes each once.
		q.mu.Unlock()
		return
	case !child:
		// A bucket deleted: if it is made again, its sequence numbers
		// start again, and only a listing tells its new stamp.
		e.relist = true
	case len(e.ops) >= maxPendingOps:
		e.received++
		e.ops, e.relist = nil, true
	default:
		e.received++
		op := childOp{name: name, created: ev.Type == zk.EventNodeCreated}
		if !op.created {
			op.epoch = q.armed.Load()
		}
		e.ops = append(e.ops, op)
	}
	q.mu.Unlock()
	select {
	case q.poke[b] <- struct{}{}:
	default:
	}
}

// parseBucket reads a bucket node's name, two lower-case hex digits.
func parseBucket(s string) (int, bool) {
	if len(s) != 2 || strings.ToLower(s) != s {
		return 0, false
	}
	b, err := strconv.ParseUint(s, 16, 8)
	return int(b), err == nil
}

// take hands bucket b's events to its goroutine: the ops in order, and
// whether to list the bucket again after them (spread: after a random wait).
func (q *hostEvents) take(b int) (ops []childOp, relist, spread bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := &q.b[b]
	ops, relist, spread = e.ops, e.relist, e.spread
	e.ops, e.relist, e.spread = nil, false, false
	return ops, relist, spread
}

// listedAt records a listing's cversion. Events received before its reply
// are counted in received already (the client runs the callback for them
// before it hands over the reply); some after it may be too, which can
// only make a later check list the bucket once more than needed.
func (q *hostEvents) listedAt(b int, cversion int32) {
	q.mu.Lock()
	e := &q.b[b]
	e.listedCversion, e.receivedAtList, e.listed = cversion, e.received, true
	q.mu.Unlock()
}

// missed marks bucket b to be listed again after a random wait.
func (q *hostEvents) missed(b int) {
	q.mu.Lock()
	q.b[b].relist, q.b[b].spread = true, true
	q.mu.Unlock()
	select {
	case q.poke[b] <- struct{}{}:
	default:
	}
}

// watchHosts adds the persistent watch on every new connection. The first
// success decides the registry follows the tree; a server that does not
// know addWatch (before 3.6) decides it watches each bucket instead.
func (r *Registry) watchHosts() {
	defer r.wg.Done()
	decided := false
	decide := func(follow bool) {
		r.following.Store(follow)
		close(r.modeDecided)
		decided = true
	}
	if r.o.ChildWatches {
		decide(false)
		return
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.follow.connected:
		}
		r.follow.mu.Lock()
		r.follow.on = true // before the request: its first events may beat the reply
		r.follow.mu.Unlock()
		r.stats.Requests.Add(1)
		err := zkext.AddRecursiveWatch(r.conn, r.hostsPath())
		switch {
		case err == nil && !decided:
			decide(true) // the buckets' first listings follow
		case err == nil:
			r.checkBuckets()
		case transient(err):
			r.log.Debug("add hosts watch", "err", err) // the next connection tries again
		case !decided:
			r.follow.mu.Lock()
			r.follow.on = false
			r.follow.mu.Unlock()
			r.log.Info("ZooKeeper has no persistent watches (3.6 or later has them); watching each bucket", "err", err)
			decide(false)
			return
		default:
			// Refused after it was granted once (an ACL changed): the
			// tree is not followed now, so every bucket is listed, and
			// the next connection tries again.
			r.log.Warn("add hosts watch", "err", err)
			for b := range Buckets {
				r.follow.missed(b)
			}
		}
	}
}

// checkBuckets finds the buckets that changed while the watch was not
// there, from one multiRead of their stats, and has them listed again.
func (r *Registry) checkBuckets() {
	r.stats.Requests.Add(1)
	stats, errs, err := zkext.Stats(r.conn, r.bucketPaths[:])
	if err != nil {
		r.log.Debug("read bucket stats", "err", err)
		if transient(err) {
			return // the next connection checks again
		}
		stats = nil
	}
	r.mu.Lock()
	stamps := r.stamps
	r.mu.Unlock()
	missed := 0
	r.follow.mu.Lock()
	for b := range Buckets {
		e := &r.follow.b[b]
		if !e.listed {
			continue // its first listing is still to come
		}
		want := e.listedCversion + int32(e.received-e.receivedAtList)
		if stats != nil && errs[b] == nil && stats[b].Cversion == want && stampOf(&stats[b]) == stamps[b] {
			continue
		}
		e.relist, e.spread = true, true
		missed++
		select {
		case r.follow.poke[b] <- struct{}{}:
		default:
		}
	}
	r.follow.mu.Unlock()
	if missed > 0 {
		r.log.Debug("buckets changed while disconnected", "buckets", missed)
	}
}

// followBucket keeps bucket b's records in the view from the watch's
// events: a listing first (and after a miss), then the mirror of its
// names, changed by each event and synced like a listing.
func (r *Registry) followBucket(b int) {
	p := r.bucketPath(b)
	backoff := 100 * time.Millisecond
	listedOnce := false
	mirror := map[string]bool{}
	var stamp bucketStamp
	needList := true
	names := make([]string, 0)
	listedNow := false // the next sync's removals may be a listing's, older than any event
	for r.ctx.Err() == nil {
		if needList {
			if !r.takeSlot() {
				return
			}
			children, stat, _, err := r.list(p, false)
			<-r.slots
			if err != nil {
				if r.ctx.Err() != nil {
					return
				}
				r.log.Debug("list bucket", "bucket", p, "err", err)
				if !r.backOff(&backoff) {
					return
				}
				continue
			}
			backoff = 100 * time.Millisecond
			clear(mirror)
			for _, c := range children {
				mirror[c] = true
			}
			stamp = stampOf(stat)
			r.follow.listedAt(b, stat.Cversion)
			needList = false
			listedNow = true
		}
		// The events before a relist are synced first: a delete seen by
		// the watch can be told a leave, one a listing finds cannot.
		ops, relist, spread := r.follow.take(b)
		for _, op := range ops {
			// Replayed ops the listing already holds change nothing: a
			// sequential name is created once and deleted once.
			if op.created {
				mirror[op.name] = true
			} else {
				delete(mirror, op.name)
			}
		}
		var leaves uint64
		if !listedNow {
			leaves = leavesSeenIn(ops)
		}
		names = names[:0]
		for n := range mirror {
			names = append(names, n)
		}
		complete := r.syncBucket(b, names, stamp, 0, leaves)
		listedNow = false
		if complete && !listedOnce {
			listedOnce = true
			r.listed.Add(1)
		}
		if relist {
			needList = true
			if spread && !r.sleep(rand.N(resyncSpread)) {
				return
			}
			continue
		}
		if !complete {
			// A read failed with the connection: sync the mirror again
			// once the client is back.
			if !r.sleep(jitter(time.Second)) {
				return
			}
			continue
		}
		select {
		case <-r.ctx.Done():
			return
		case <-r.follow.poke[b]:
		case <-r.resync[b]:
		}
	}
}

// leavesSeenIn is the decommission generation all of ops' deletes were
// seen in, or 0 if they were seen in different ones or there are none.
func leavesSeenIn(ops []childOp) uint64 {
	var gen uint64
	seen := false
	for _, op := range ops {
		if op.created {
			continue
		}
		if !seen {
			gen, seen = op.epoch, true
		} else if op.epoch != gen {
			return 0
		}
	}
	return gen
}

// takeSlot waits for a free listing slot; false once the registry closes.
func (r *Registry) takeSlot() bool {
	select {
	case r.slots <- struct{}{}: // a free slot, the common case: no select below
		return true
	default:
	}
	select {
	case r.slots <- struct{}{}:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// sleep waits d; false once the registry closes.
func (r *Registry) sleep(d time.Duration) bool {
	select {
	case <-r.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
