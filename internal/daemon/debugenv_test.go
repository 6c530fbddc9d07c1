package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
)

func env(v string) func(string) string {
	return func(k string) string {
		if k == EnvDebugIdleAfter {
			return v
		}
		return ""
	}
}

// TestDebugIdleAfter: the test-only override parses a positive duration up
// to 24h, ignores an empty value and refuses anything else with an error
// naming the variable.
func TestDebugIdleAfter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"", 0, ""},
		{"5s", 5 * time.Second, ""},
		{"1500ms", 1500 * time.Millisecond, ""},
		{"24h", 24 * time.Hour, ""},
		{"5", 0, "not a duration"},
		{"five seconds", 0, "not a duration"},
		{"0s", 0, "must be positive"},
		{"-5s", 0, "must be positive"},
		{"25h", 0, "at most 24h"},
	} {
		got, err := debugIdleAfter(env(c.in))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), EnvDebugIdleAfter)):
			t.Errorf("%q: error %v, want one naming %s and saying %q", c.in, err, EnvDebugIdleAfter, c.err)
		case got != c.want:
			t.Errorf("%q: %s, want %s", c.in, got, c.want)
		}
	}
}

// TestApplyDebugIdleAfter: with lazy peers the override replaces
// peers.idle_after and warns that it is for tests (and below reject-after);
// without them it changes nothing; a bad value fails the start.
func TestApplyDebugIdleAfter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))

	cfg := config.Config{Peers: config.Peers{Lazy: true, IdleAfter: 5 * time.Minute}}
	if err := applyDebugIdleAfter(&cfg, env("6s"), log); err != nil {
		t.Fatal(err)
	}
	if cfg.Peers.IdleAfter != 6*time.Second {
		t.Errorf("idle_after %s, want 6s", cfg.Peers.IdleAfter)
	}
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "for tests only") || !strings.Contains(out, "reject-after") {
		t.Errorf("no warning that the override is for tests and below reject-after:\n%s", out)
	}

	buf.Reset()
	cfg = config.Config{Peers: config.Peers{Lazy: true, IdleAfter: 5 * time.Minute}}
	if err := applyDebugIdleAfter(&cfg, env(""), log); err != nil || cfg.Peers.IdleAfter != 5*time.Minute || buf.Len() != 0 {
		t.Errorf("unset: %v, idle_after %s, logged %q", err, cfg.Peers.IdleAfter, buf.String())
	}

	cfg = config.Config{Peers: config.Peers{IdleAfter: 5 * time.Minute}}
	if err := applyDebugIdleAfter(&cfg, env("6s"), log); err != nil || cfg.Peers.IdleAfter != 5*time.Minute || !strings.Contains(buf.String(), "ignored") {
		t.Errorf("lazy off: %v, idle_after %s, logged %q", err, cfg.Peers.IdleAfter, buf.String())
	}

	if err := applyDebugIdleAfter(&cfg, env("soon"), log); err == nil {
		t.Error("a bad value was accepted")
	}
}
