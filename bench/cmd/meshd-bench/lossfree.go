package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/meshd/meshd/internal/testbed"
)

// The 64-byte figure of the rounds is a flood: iperf3 offers 10-15 times
// what wireguard-go carries, and every datagram that is dropped at a full
// queue has paid the sender's output hooks and the receiver's input hooks
// first, so the firewall's fixed per-packet price is multiplied by the
// overload. The loss-free rate (RFC 2544's throughput: the highest offered
// rate the path carries without loss) is what an application that is not
// flooding gets, and is reported beside it.

// lossFreeLimit is the loss a trial may show and still count as loss-free:
// on this shared 2-core machine a scheduler stall drops a few datagrams at
// any rate, so zero would measure the stalls. 0.1% is the usual tolerance
// of a no-drop-rate search.
const lossFreeLimit = 0.001

// lossFreeTrials and lossFreeSecs bound the search: each step halves the
// interval, so 7 steps of 3 s (6 s for a rate that fails) find the rate
// to within 1% of the ceiling.
const (
	lossFreeTrials = 7
	lossFreeSecs   = 3
)

// lossFreeRate searches, from a to addr, for the highest rate of 64-byte
// UDP datagrams (kpps) with at most lossFreeLimit lost (searchLossFree).
func lossFreeRate(tb *testbed.Testbed, a, b *testbed.Host, addr string, ceilingKpps float64, logDir, name string) (Measurement, error) {
	m := Measurement{Config: name, Metric: "udp_64b_lossfree", Unit: "kpps"}
	if ceilingKpps <= 0 {
		return m, fmt.Errorf("loss-free rate of %s: no flood rate to search below", name)
	}
	srv, err := serve(tb, b, addr, logDir)
	if err != nil {
		return m, err
	}
	defer srv.Stop(2 * time.Second)
	m.Value, err = searchLossFree(ceilingKpps, func(kpps float64) (float64, error) {
		// iperf3 -b counts payload bits: 64 bytes are 512 of them.
		bps := strconv.FormatFloat(kpps*1e3*512, 'f', 0, 64)
		r, err := client(a, addr, lossFreeSecs, "-u", "-l", "64", "-b", bps)
		if err != nil {
			return 0, err
		}
		if r.End.Sum.Packets == 0 {
			return 1, nil // nothing arrived: all of it lost
		}
		loss := r.End.Sum.LostPackets / r.End.Sum.Packets
		fmt.Fprintf(os.Stderr, "   %s: %.1f kpps offered, %.3f%% lost\n", name, kpps, 100*loss)
		return loss, nil
	})
	return m, err
}

// searchLossFree bisects between 0 and 1.25 times ceiling (the flood's
// delivered rate: an overloaded path can deliver less than it carries
// when it is not overloaded) for the highest rate at which trial loses
// at most lossFreeLimit, in lossFreeTrials steps.
func searchLossFree(ceiling float64, trial func(kpps float64) (loss float64, err error)) (float64, error) {
	lo, hi := 0.0, 1.25*ceiling
	for range lossFreeTrials {
		mid := (lo + hi) / 2
		// A rate fails only when two trials at it lose too much: a stall
		// of this shared machine costs a trial at any rate, and one stall
		// would otherwise cap the search below the path's rate for good.
		passed := false
		for try := 0; try < 2 && !passed; try++ {
			loss, err := trial(mid)
			if err != nil {
				return lo, err
			}
			passed = loss <= lossFreeLimit
		}
		if passed {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}
