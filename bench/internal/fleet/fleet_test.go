package fleet

import (
	"os"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 30; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 15 * time.Millisecond}, {0.99, 30 * time.Millisecond}, {1, 30 * time.Millisecond}, {0.01, time.Millisecond}} {
		if got := Quantile(d, c.q); got != c.want {
			t.Errorf("Quantile(1..30 ms, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if d[0] != 30*time.Millisecond {
		t.Error("Quantile sorted its input in place")
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("Quantile of nothing is not 0")
	}
}

func TestReadUsageOfSelf(t *testing.T) {
	before, err := ReadUsage(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(t.TempDir()+"/x", make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := ReadUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.RSS <= 0 || after.HWM < after.RSS {
		t.Errorf("RSS %d, peak %d", after.RSS, after.HWM)
	}
	if d := after.Sub(before); d.IO < 1<<20 || d.CPU < 0 {
		t.Errorf("1 MiB written, I/O counted %d bytes, CPU %v", d.IO, d.CPU)
	}
}
