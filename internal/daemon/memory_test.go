package daemon

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func heapFree() (free, live uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

var sink [][]byte

// A burst's garbage is handed back: after 64 MiB allocated and dropped, the
// heap's free pages held fall below trimMin once the trimmer has looked.
func TestTrimMemoryReturnsABurstsGarbage(t *testing.T) {
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	if free, live := heapFree(); free <= trimMin {
		t.Fatalf("setup: %d MiB free, %d MiB live: nothing to trim", free>>20, live>>20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trimMemory(ctx, 20*time.Millisecond, slog.New(slog.DiscardHandler))
	deadline := time.Now().Add(10 * time.Second)
	for {
		free, live := heapFree()
		if free < trimMin {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s still %d MiB free held (live %d MiB)", free>>20, live>>20)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	samples := slackSamples()
	if slack, live := heapSlack(samples); slack < 16<<20 {
		t.Fatalf("setup: %d MiB slack, %d MiB live: the garbage is not counted", slack>>20, live>>20)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trimMemory(ctx, 20*time.Millisecond, slog.New(slog.DiscardHandler))
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
