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
// again with setWatches2, which in the same request sets a child watch on
// every bucket relative to seenZxid, the last zxid this host is known to
// have had every event of (each read of a record tells it: its reply's
// zxid, when it came on the connection the watch was added on). The
// server fires at once the child watches of the buckets changed since, and
// only those are listed again. A reconnect of a whole fleet costs ZooKeeper
// one request per host, as go-zookeeper's own setWatches did for the
// bucket watches; reading every bucket's stat instead (a multiRead of 256)
// made 2.5 M reads of a 10 000-host fleet's reconnect, and sessions
// expired behind them. The child watches left set fire once at their
// bucket's next change and are ignored.

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
	ops    []childOp
	relist bool // list again: the bucket node was deleted, events were dropped, or some were missed
	spread bool // ... after a random wait (a reconnect: the fleet does not list in step)
}

// hostEvents queues the watch's events by bucket. add runs as the
// client's event callback, in its receive loop: it never blocks.
type hostEvents struct {
	mu     sync.Mutex
	on     bool   // the watch was asked for: its events are queued
	prefix string // the hosts node's path and "/"
	// catchUp: a setWatches2 is in flight, and a bucket's child watch
	// firing says it changed while the watch was not there.
	catchUp bool
	// conn counts the session's state changes, in the order the client
	// saw them among replies: a reply came on the connection a request
	// was sent on if conn did not move between them.
	conn atomic.Uint64
	b    [Buckets]bucketEvents
	poke [Buckets]chan struct{} // one deep: bucket b has news
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
		q.conn.Add(1)
		if ev.State == zk.StateHasSession {
			select {
			case q.connected <- struct{}{}:
			default:
			}
		}
		return
	}
	if ev.Type == zk.EventNodeChildrenChanged {
		q.caughtUp(ev.Path)
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
		e.ops, e.relist = nil, true
	default:
		op := childOp{name: name, created: ev.Type == zk.EventNodeCreated}
		if !op.created {
			op.epoch = q.armed.Load()
		}
		e.ops = append(e.ops, op)
	}
	q.mu.Unlock()
	q.pokeBucket(b)
}

// caughtUp has bucket p listed again if its child watch fired while a
// setWatches2 was in flight: it changed after the zxid the request named.
// Outside one, a child watch firing is one that request left set, and
// the persistent watch has told the change already.
func (q *hostEvents) caughtUp(p string) {
	rest, ok := strings.CutPrefix(p, q.prefix)
	if !ok {
		return
	}
	b, ok := parseBucket(rest)
	if !ok {
		return
	}
	q.mu.Lock()
	fire := q.on && q.catchUp
	q.mu.Unlock()
	if fire {
		q.missed(b)
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

// missed marks bucket b to be listed again after a random wait.
func (q *hostEvents) missed(b int) {
	q.mu.Lock()
	q.b[b].relist, q.b[b].spread = true, true
	q.mu.Unlock()
	q.pokeBucket(b)
}

// pokeBucket tells bucket b's goroutine it has news, without blocking:
// one poke waiting is enough, it takes all there is.
func (q *hostEvents) pokeBucket(b int) {
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
		conn := r.follow.conn.Load()
		r.follow.mu.Lock()
		r.follow.on = true // before the request: its first events may beat the reply
		r.follow.catchUp = decided
		r.follow.mu.Unlock()
		r.stats.Requests.Add(1)
		var zxid int64
		var err error
		if !decided {
			// The first listings follow: nothing to catch up on.
			zxid, err = zkext.AddRecursiveWatch(r.conn, r.hostsPath())
		} else {
			zxid, err = zkext.SetWatches(r.conn, r.seenZxid.Load(), r.bucketPaths[:], []string{r.hostsPath()})
		}
		r.follow.mu.Lock()
		r.follow.catchUp = false
		r.follow.mu.Unlock()
		switch {
		case err == nil:
			if r.follow.conn.Load() == conn {
				// Every change up to the reply is told: by an event, or
				// by a bucket to list.
				r.watchConn.Store(conn)
				r.sawUpTo(zxid)
			}
			if !decided {
				decide(true) // the buckets' first listings follow
			}
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
			// Refused after it was granted once (an ACL changed): what
			// changed meanwhile is unknown, so every bucket is listed,
			// and the next connection tries again.
			r.log.Warn("add hosts watch", "err", err)
			for b := range Buckets {
				r.follow.missed(b)
			}
		}
	}
}

// sawUpTo raises seenZxid to z.
func (r *Registry) sawUpTo(z int64) {
	for {
		cur := r.seenZxid.Load()
		if z <= cur || r.seenZxid.CompareAndSwap(cur, z) {
			return
		}
	}
}

// getRecord reads a record node. Following the tree, the reply's zxid
// raises seenZxid when it came on the connection the watch was added on:
// every change up to it was told by the watch before the reply.
func (r *Registry) getRecord(p string) ([]byte, *zk.Stat, error) {
	if !r.following.Load() {
		return r.conn.Get(p)
	}
	conn := r.follow.conn.Load()
	data, st, zxid, err := zkext.Get(r.conn, p)
	if err != nil {
		return nil, nil, err
	}
	if conn == r.watchConn.Load() && conn == r.follow.conn.Load() {
		r.sawUpTo(zxid)
	}
	return data, &st, nil
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
				if !r.listFailed(p, err, &backoff) {
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
