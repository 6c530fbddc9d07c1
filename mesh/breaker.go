package mesh

import (
	"log/slog"
	"time"
)

// BreakerConfig bounds how many peers may be removed within a window before
// the breaker holds further removals for an operator to release.
type BreakerConfig struct {
	// MaxRemovals within Window; 0 means 10% of the peers, at least 5.
	MaxRemovals int
	Window      time.Duration
}

// breaker is the mass-removal circuit breaker. When many records vanish at
// once it is far likelier that ZooKeeper or the network is broken than that
// half the fleet was decommissioned; removing those peers would cut traffic
// the registry has no business cutting. It counts removals, not the net
// change of the fleet, so "remove 50, add 50" trips it too.
//
// It knows which hosts it holds, not only how many: a held host whose record
// returns, or that is decommissioned, leaves the set at once, and when the
// set is empty the breaker closes by itself. A count taken at the last check
// would go stale the moment one of them came back.
type breaker struct {
	cfg       BreakerConfig
	recent    []time.Time // removals let through within the window
	tripped   bool
	held      map[string]bool // instance ids whose removal is held
	releasing bool
}

func newBreaker(cfg BreakerConfig) *breaker {
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	return &breaker{cfg: cfg, held: map[string]bool{}}
}

func (b *breaker) limit(peers int) int {
	if b.cfg.MaxRemovals > 0 {
		return b.cfg.MaxRemovals
	}
	return max(5, peers/10)
}

// admit returns the removals that may proceed now; the rest stay held.
// due is every peer whose hold-down is over, held ones included.
func (b *breaker) admit(due []string, peers int, now time.Time, log *slog.Logger) []string {
	keep := b.recent[:0]
	for _, t := range b.recent {
		if now.Sub(t) < b.cfg.Window {
			keep = append(keep, t)
		}
	}
	b.recent = keep
	if b.releasing {
		b.releasing, b.tripped, b.recent = false, false, nil
		clear(b.held)
		log.Warn("breaker released by operator: removing held peers", "count", len(due))
		return due
	}
	if !b.tripped && len(due) > 0 && len(b.recent)+len(due) > b.limit(peers) {
		b.tripped = true
		log.Error("mass-removal breaker tripped: holding removals; release with `meshctl breaker release`",
			"due", len(due), "removed_recently", len(b.recent), "limit", b.limit(peers), "window", b.cfg.Window)
	}
	if b.tripped {
		for _, id := range due {
			b.held[id] = true
		}
		return nil
	}
	for range due {
		b.recent = append(b.recent, now)
	}
	return due
}

// forget drops a host from the held set: its record came back, or it was
// decommissioned and goes regardless. The breaker closes when the last held
// host is accounted for.
func (b *breaker) forget(id string, log *slog.Logger) {
	if !b.held[id] {
		return
	}
	delete(b.held, id)
	if b.tripped && len(b.held) == 0 {
		b.tripped, b.releasing = false, false
		log.Info("mass-removal breaker closed: every held host is back or retired")
	}
}

// release lets the held removals through at the next check; it returns how
// many were held.
func (b *breaker) release() int {
	if !b.tripped {
		return 0
	}
	b.releasing = true
	return len(b.held)
}

// BreakerState is the breaker as the admin API shows it.
type BreakerState struct {
	Tripped bool `json:"tripped"`
	Held    int  `json:"held"`
	Limit   int  `json:"limit"`
}
