package mesh

import (
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/meshd/meshd/internal/device"
)

// Retry bounds for device updates that failed.
const (
	firstApplyRetry = time.Second
	maxApplyRetry   = 30 * time.Second
)

// pending holds the peer changes the device has not taken yet. The
// reconciler's bookkeeping (inDevice, paths) already moved on when a delta
// was built, so a failed update must not be dropped: it is kept, later
// deltas are merged into it (the newest change per key wins, so what is
// finally applied is the desired state, not a replay of history), and the
// whole of it is retried with backoff until the device takes it.
type pending struct {
	ops        map[wgtypes.Key]pendingOp
	order      []wgtypes.Key // first-seen order, for a stable delta
	handshakes map[wgtypes.Key]bool

	failures  uint64 // failed device updates since start
	lastErr   error
	lastErrAt time.Time
	retryAt   time.Time
	backoff   time.Duration
}

type pendingOp struct {
	remove bool
	peer   device.Peer
}

func newPending() *pending {
	return &pending{ops: map[wgtypes.Key]pendingOp{}, handshakes: map[wgtypes.Key]bool{}}
}

// merge adds a delta and the handshakes to start once it is applied. The
// device applies a delta's removals before its upserts; within one key the
// later call wins.
func (q *pending) merge(d device.Delta, handshakes []wgtypes.Key) {
	set := func(k wgtypes.Key, op pendingOp) {
		if _, ok := q.ops[k]; !ok {
			q.order = append(q.order, k)
		}
		q.ops[k] = op
	}
	for _, k := range d.Remove {
		set(k, pendingOp{remove: true})
	}
	for _, p := range d.Upsert {
		set(p.PublicKey, pendingOp{peer: p})
	}
	for _, k := range handshakes {
		q.handshakes[k] = true
	}
}

// delta renders what is pending as one device update.
func (q *pending) delta() device.Delta {
	var d device.Delta
	for _, k := range q.order {
		op := q.ops[k]
		if op.remove {
			d.Remove = append(d.Remove, k)
		} else {
			d.Upsert = append(d.Upsert, op.peer)
		}
	}
	return d
}

// changes is how many peer changes wait for the device.
func (q *pending) changes() int { return len(q.ops) }

// waiting reports whether an earlier failure's backoff is still running.
func (q *pending) waiting(now time.Time) bool {
	return len(q.ops) > 0 && now.Before(q.retryAt)
}

// failed records a failed update and schedules the retry.
func (q *pending) failed(err error, now time.Time) time.Duration {
	q.failures++
	q.lastErr, q.lastErrAt = err, now
	q.backoff = min(max(2*q.backoff, firstApplyRetry), maxApplyRetry)
	q.retryAt = now.Add(q.backoff)
	return q.backoff
}

// done empties the queue after a successful update and returns the
// handshakes to start.
func (q *pending) done() []wgtypes.Key {
	hs := make([]wgtypes.Key, 0, len(q.handshakes))
	for k := range q.handshakes {
		hs = append(hs, k)
	}
	clear(q.ops)
	clear(q.handshakes)
	q.order = q.order[:0]
	q.backoff, q.retryAt = 0, time.Time{}
	return hs
}

// ApplyState is the device updates' health as status and metrics show it.
type ApplyState struct {
	Failures    uint64    // failed device updates since start
	LastError   string    // the last failure, "" if none
	LastErrorAt time.Time // zero if none
	Pending     int       // peer changes waiting for a retry
	RetryAt     time.Time // when they are retried; zero if nothing waits
}
