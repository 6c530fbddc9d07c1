package daemon

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/mesh"
)

// EnvDebugIdleAfter, when set to a duration such as 5s, replaces
// peers.idle_after, without the config's 3m floor: the end-to-end tests of
// lazy peers see peers reaped in seconds, not minutes. It is for tests
// only. Below WireGuard's reject-after time a peer can leave one side's
// device while the other still holds a live session to it, and what that
// side sends is lost until it handshakes again (up to about 15 s).
const EnvDebugIdleAfter = "MESHD_DEBUG_IDLE_AFTER"

// debugIdleAfter is EnvDebugIdleAfter's value as getenv reads it: 0 when
// unset or empty, an error naming the variable when it is not a positive
// duration of at most 24h (the config's ceiling).
func debugIdleAfter(getenv func(string) string) (time.Duration, error) {
	v := getenv(EnvDebugIdleAfter)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("environment %s=%q: not a duration (want e.g. 5s): %w", EnvDebugIdleAfter, v, err)
	}
	if d <= 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("environment %s=%q: must be positive and at most 24h", EnvDebugIdleAfter, v)
	}
	return d, nil
}

// applyDebugIdleAfter puts EnvDebugIdleAfter's value, if any, into
// cfg.Peers.IdleAfter, loudly: status then reports the idle time in force.
func applyDebugIdleAfter(cfg *config.Config, getenv func(string) string, log *slog.Logger) error {
	d, err := debugIdleAfter(getenv)
	if err != nil || d == 0 {
		return err
	}
	if !cfg.Peers.Lazy {
		log.Warn(EnvDebugIdleAfter+" is set but peers.lazy is off: ignored", "value", d)
		return nil
	}
	msg := EnvDebugIdleAfter + " overrides peers.idle_after; for tests only"
	if d <= mesh.RejectAfter {
		msg += ": it is not over WireGuard's reject-after time (3m), so a reaped peer's session can outlive it on the other side and lose traffic until it handshakes again"
	}
	log.Warn(msg, "idle_after", d, "configured", cfg.Peers.IdleAfter)
	cfg.Peers.IdleAfter = d
	return nil
}
