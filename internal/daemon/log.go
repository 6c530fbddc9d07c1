package daemon

import (
	"io"
	"log/slog"
)

// NewLogger returns the daemon's structured logger at the given level
// (debug, info, warn, error). journald adds timestamps, so the text handler's
// own are kept for the testbed, where logs go to files.
func NewLogger(w io.Writer, level string) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(parseLevel(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), lv
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
