package handshake

import "time"

// bucket is a token bucket: up to burst tokens, refilled at rate a second.
// Not safe for concurrent use (the worker owns it).
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate float64, burst int) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take spends a token if there is one at now. A clock that goes back
// adds nothing, then or later.
func (b *bucket) take(now time.Time) bool {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
