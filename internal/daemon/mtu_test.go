package daemon

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/meshd/meshd/internal/device"
)

// TestAutoMTU: the automatic overlay MTU fits a 1500-byte path whatever
// the host's own interface carries. With everything on loopback (ZooKeeper
// too, as in a booted test container) it used to come out as 65456.
func TestAutoMTU(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name     string
		underlay netip.Addr
	}{
		{"underlay on loopback (MTU 65536)", netip.MustParseAddr("127.0.0.1")},
		{"underlay on no interface", netip.MustParseAddr("198.51.100.7")},
		{"no underlay address", netip.Addr{}},
	} {
		if got := autoMTU(c.underlay, log); got != device.DefaultMTU {
			t.Errorf("%s: automatic MTU %d, want %d", c.name, got, device.DefaultMTU)
		}
	}
}
