package main

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// newLogger writes human-readable lines to a terminal and JSON elsewhere
// (OpenVPN's log captures the hook's stderr), unless format says otherwise.
func newLogger(w io.Writer, format string, level zerolog.Level) zerolog.Logger {
	console := format == "console"
	if format == "auto" {
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				console = true
			}
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Str("app", "vpnfw-hook").Logger()
}
