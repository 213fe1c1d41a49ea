package ratelog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// lines decodes the JSON log lines written to buf.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	buf.Reset()
	return out
}

// TestDropsAndCounts: within an interval one line per kind is written and the others are
// counted; the first line after the interval carries the count; kinds do not share a budget.
func TestDropsAndCounts(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewJSONHandler(&buf, nil)), time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	for i := range 5 {
		l.Info("upgrade", "upgrade refused", "status", 401, "i", i)
	}
	l.Info("slow", "slow consumer")
	got := lines(t, &buf)
	if len(got) != 2 || got[0]["msg"] != "upgrade refused" || got[0]["i"] != 0.0 || got[1]["msg"] != "slow consumer" {
		t.Fatalf("first interval wrote %v, want the first line of each kind", got)
	}
	if _, ok := got[0]["suppressed"]; ok {
		t.Fatalf("first line says suppressed: %v", got[0])
	}

	now = now.Add(999 * time.Millisecond)
	if l.Info("upgrade", "upgrade refused", "i", 5) {
		t.Fatal("a line within the interval was written")
	}
	now = now.Add(time.Millisecond)
	if !l.Info("upgrade", "upgrade refused", "i", 6) {
		t.Fatal("the first line after the interval was left out")
	}
	got = lines(t, &buf)
	if len(got) != 1 || got[0]["i"] != 6.0 || got[0]["suppressed"] != 5.0 {
		t.Fatalf("after the interval wrote %v, want i=6 with suppressed=5", got)
	}
	now = now.Add(time.Second)
	l.Info("upgrade", "upgrade refused", "i", 7)
	if got = lines(t, &buf); len(got) != 1 || got[0]["suppressed"] != nil {
		t.Fatalf("a line after a quiet interval: %v, want no suppressed count", got)
	}
}

// TestBelowInfo: a logger whose level is above info writes nothing and counts nothing.
func TestBelowInfo(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), time.Second)
	if l.Info("k", "m") || buf.Len() != 0 {
		t.Fatalf("wrote %q at warn level", buf.String())
	}
	if New(nil, time.Second).Info("k", "m") {
		t.Fatal("a nil logger wrote")
	}
}
