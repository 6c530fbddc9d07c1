package testbed

import (
	"context"
	"os"
	"testing"
)

// NewForTest builds a testbed for t, skipping (SKIP-ROOT) without root and
// tearing it down when the test ends; logs are kept in t's temp dir.
func NewForTest(t testing.TB, o Options) *Testbed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP-ROOT: the namespace testbed needs root")
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	tb, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("testbed teardown: %v", err)
		}
	})
	return tb
}
