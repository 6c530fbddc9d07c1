package main

import (
	"errors"
	"testing"
)

// A path that carries 37 kpps without loss: the search ends within 1% of
// the flood's ceiling below it, and never above.
func TestSearchLossFreeFindsTheRate(t *testing.T) {
	const carries = 37.0
	got, err := searchLossFree(35, func(kpps float64) (float64, error) {
		if kpps <= carries {
			return 0, nil
		}
		return 0.05, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got > carries || got < carries-0.01*35*1.25 {
		t.Fatalf("loss-free rate %.2f kpps, want just below %.0f", got, carries)
	}
}

// One stalled trial at a rate the path carries does not cap the search;
// a rate that loses twice fails.
func TestSearchLossFreeRetriesOnce(t *testing.T) {
	trials := map[float64]int{}
	got, err := searchLossFree(40, func(kpps float64) (float64, error) {
		trials[kpps]++
		if kpps <= 45 && trials[kpps] > 1 {
			return 0, nil
		}
		if kpps <= 45 {
			return 0.002, nil // a stall: above the limit once
		}
		return 0.2, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got < 44 || got > 45 {
		t.Fatalf("loss-free rate %.2f kpps, want 44-45: the stalls were taken for the path's limit", got)
	}
	for kpps, n := range trials {
		if n != 2 {
			t.Fatalf("%.2f kpps tried %d times, want 2 (each first trial stalled)", kpps, n)
		}
	}
}

// An iperf3 that fails ends the search with its error.
func TestSearchLossFreeStopsOnError(t *testing.T) {
	boom := errors.New("iperf3: unable to connect")
	if _, err := searchLossFree(40, func(float64) (float64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
}
