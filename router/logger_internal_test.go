package router

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
)

func TestQuietLoggerWritesWhatItsLevelAllows(t *testing.T) {
	for _, c := range []struct {
		level slog.Level
		want  []string // of "info", "debug", "trace"
	}{
		{slog.LevelInfo, nil},
		{slog.LevelDebug, []string{"info", "debug"}},
		{watermill.LevelTrace, []string{"info", "debug", "trace"}},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: c.level}))
		var l watermill.LoggerAdapter = quietLogger{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}), log}
		l = l.With(watermill.LogFields{"handler": "inbound"})
		fields := watermill.LogFields{"message_uuid": "u"}
		l.Info("info", fields)
		l.Debug("debug", fields)
		l.Trace("trace", fields)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			if !strings.Contains(line, "handler=inbound") || !strings.Contains(line, "message_uuid=u") {
				t.Fatalf("level %v: line %q lost its fields", c.level, line)
			}
			_, rest, _ := strings.Cut(line, "msg=")
			msg, _, _ := strings.Cut(rest, " ")
			got = append(got, msg)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Fatalf("level %v: wrote %v, want %v", c.level, got, c.want)
		}
	}
}
