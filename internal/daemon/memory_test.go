package daemon

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

var sink [][]byte

// waitTrimmed runs the trimmer, looking every 20 ms, until the heap's slack
// is below trimMin; it fails the test after 10 s.
func waitTrimmed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trimMemory(ctx, 20*time.Millisecond, slog.New(slog.DiscardHandler))
	samples := slackSamples()
	deadline := time.Now().Add(10 * time.Second)
	for {
		slack, live := heapSlack(samples)
		if slack < trimMin {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s still %d MiB of slack resident (live %d MiB)", slack>>20, live>>20)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A burst's garbage is handed back: after 64 MiB allocated, dropped and
// collected, the heap's free pages are returned once the trimmer has looked.
func TestTrimMemoryReturnsABurstsGarbage(t *testing.T) {
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	if slack, live := heapSlack(slackSamples()); slack < 16<<20 {
		t.Fatalf("setup: %d MiB slack, %d MiB live: nothing to trim", slack>>20, live>>20)
	}
	waitTrimmed(t)
}

// Garbage the runtime has not collected yet is slack too: with collections
// off (as at rest, where the next one is far away), 32 MiB allocated and
// dropped is collected and handed back once the trimmer has looked.
func TestTrimMemoryCollectsGarbageAtRest(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for range 32 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	if slack, live := heapSlack(slackSamples()); slack < 16<<20 {
		t.Fatalf("setup: %d MiB slack, %d MiB live: the garbage is not counted", slack>>20, live>>20)
	}
	waitTrimmed(t)
}
