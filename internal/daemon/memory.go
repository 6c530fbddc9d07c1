package daemon

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Go keeps freed heap pages for reuse until the heap could grow to twice
// its live size (GOGC=100), and its scavenger only returns what lies
// beyond that. A daemon whose heap is mostly long-lived pays for this after
// every burst: the first sync of 10 000 records allocates about six times
// the live heap in parsed JSON and signature checks, and the garbage stayed
// resident (30 MB of a lazy meshd's 112 MB at rest, 2 min after the sync).
// memoryTrimmer hands such garbage back to the system once the burst is
// over, at most once a trimEvery.
const (
	trimCheck = 10 * time.Second
	trimEvery = time.Minute
	// trimMin is the free heap that is left alone: below it, returning
	// pages only to fault them in again costs more than it saves.
	trimMin = 8 << 20
)

// trimMemory returns freed heap pages to the system after bursts, looking
// every check, until ctx ends.
func trimMemory(ctx context.Context, check time.Duration, log *slog.Logger) {
	t := time.NewTicker(check)
	defer t.Stop()
	var last time.Time
	// The heap's free pages still held (not yet returned), and the live
	// heap at the last collection (for the log).
	samples := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/live:bytes"}}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(last) < trimEvery {
				continue
			}
			metrics.Read(samples)
			free, live := samples[0].Value.Uint64(), samples[1].Value.Uint64()
			if free <= trimMin {
				continue
			}
			last = now
			debug.FreeOSMemory()
			log.Debug("returned free heap to the system", "free_mib", free>>20, "live_mib", live>>20)
		}
	}
}
