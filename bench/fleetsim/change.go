package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/registry"
)

// change is one change being timed: each of the N sessions reports it
// once, and the last to do so stops the clock.
type change struct {
	kind     registry.EventKind
	id       string
	publicIP netip.Addr // for an update: the new endpoint
	node     string     // raw side: the node created

	start time.Time
	left  atomic.Int64
	done  chan struct{}
	took  time.Duration // written by the last reporter, before done closes
	first atomic.Int64  // nanoseconds from start until the first reporter
}

func newChange(n int) *change {
	c := &change{done: make(chan struct{})}
	c.left.Store(int64(n))
	return c
}

// matches tells whether a registry event is this change.
func (c *change) matches(ev registry.Event) bool {
	if ev.Kind != c.kind || ev.Host.InstanceID != c.id {
		return false
	}
	return c.kind != registry.Updated || ev.Host.PublicIP == c.publicIP
}

func (c *change) seen() {
	c.first.CompareAndSwap(0, int64(time.Since(c.start)))
	if c.left.Add(-1) == 0 {
		c.took = time.Since(c.start)
		close(c.done)
	}
}

// wait returns once all N have the change, or says how many have not.
func (c *change) wait(ctx context.Context, limit time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("%v of %s: %d sessions without it after %s", c.kind, c.id, c.left.Load(), limit)
	case <-ctx.Done():
		return ctx.Err()
	}
}
