package main

import (
	"fmt"
	"math"
)

// figures are one run's measurements, looked up by configuration and
// metric; a figure not measured reads as zero.
type figures []measurement

func (fs figures) find(config, metric string) measurement {
	for _, m := range fs {
		if m.Config == config && m.Metric == metric {
			return m
		}
	}
	return measurement{}
}

func (fs figures) get(config, metric string) float64 { return fs.find(config, metric).Value }

// ratio is a's figure over b's, "-" when b has none.
func (fs figures) ratio(a, b, metric string) string {
	x, y := fs.get(a, metric), fs.get(b, metric)
	if y == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x/y)
}

// perRound is the range of the ratio taken within each round.
func (fs figures) perRound(a, b, metric string) string {
	x, y := fs.find(a, metric).Runs, fs.find(b, metric).Runs
	if len(x) < 2 || len(x) != len(y) {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range x {
		if y[i] > 0 {
			lo, hi = min(lo, x[i]/y[i]), max(hi, x[i]/y[i])
		}
	}
	return fmt.Sprintf(" (per round %.2f–%.2f)", lo, hi)
}

// both is the ratio of the medians and, when the two were measured in the
// same rounds, its range per round.
func (fs figures) both(a, b, metric string) string {
	if a == b {
		return fs.ratio(a, b, metric)
	}
	return fs.ratio(a, b, metric) + fs.perRound(a, b, metric)
}
