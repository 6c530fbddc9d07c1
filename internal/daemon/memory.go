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
// beyond that. A daemon whose heap is mostly long-lived pays for this
// twice:
//
//   - after a burst: the first sync of 10 000 records allocates about six
//     times the live heap in parsed JSON and signature checks, and the
//     garbage stayed resident (30 MB of a lazy meshd's 112 MB at rest);
//   - at rest: reading the active peers' counters every second makes about
//     100 KB/s of garbage with a hundred peers in the device. Nothing
//     collects it before the runtime's forced collection every 2 min,
//     because wireguard-go's preallocated message buffers (28 MB, mostly
//     never touched, so not resident) count as live and push the next
//     collection out to twice their size. Up to 13 MB of garbage was
//     resident at any moment, so the same host read 61 or 70 MiB depending
//     on when it was sampled (bench/PROFILES.md, "Lazy peers").
//
// trimMemory collects and hands back the slack, garbage and free pages
// both, once it exceeds trimMin, at most once a trimEvery. A collection of
// a 10 000-host meshd's heap costs a few milliseconds of CPU; at most two a
// minute stay far inside the 1% of a core that a host at rest may use.
const (
	trimCheck = 10 * time.Second
	trimEvery = 30 * time.Second
	// trimMin is the slack that is left alone: below it, collecting early
	// and returning pages only to fault them in again costs more than it
	// saves.
	trimMin = 4 << 20
)

// heapSlack is the heap that is resident but holds nothing live: objects
// allocated since the last collection that may be garbage, and free pages
// not yet returned to the system. It also returns the live heap at the last
// collection, for the log.
func heapSlack(samples []metrics.Sample) (slack, live uint64) {
	metrics.Read(samples)
	objects, free, live := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
	if objects > live {
		slack = objects - live
	}
	return slack + free, live
}

// slackSamples are the metrics heapSlack reads, in its order.
func slackSamples() []metrics.Sample {
	return []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
}

// trimMemory collects and returns the heap's slack, looking every check,
// until ctx ends.
func trimMemory(ctx context.Context, check time.Duration, log *slog.Logger) {
	t := time.NewTicker(check)
	defer t.Stop()
	var last time.Time
	samples := slackSamples()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(last) < trimEvery {
				continue
			}
			slack, live := heapSlack(samples)
			if slack <= trimMin {
				continue
			}
			last = now
			debug.FreeOSMemory()
			log.Debug("returned the heap's slack to the system", "slack_mib", slack>>20, "live_mib", live>>20)
		}
	}
}
