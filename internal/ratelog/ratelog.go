// Package ratelog writes log lines that can come in floods — refused upgrades, slow-consumer
// disconnects, rate-limited clients — at most once per interval per kind, and says how many
// lines it left out, so that a hostile or broken client cannot fill the log.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the interval the node's components use: at most one line per kind per
// second.
const DefaultInterval = time.Second

// Logger writes at most one line per kind per interval, at info level; a line written after
// some were left out carries "suppressed" with their count. Lines left out after the last line
// of a kind are only counted until the next one. Safe for concurrent use.
//
// A kind is remembered for the life of the Logger: use a small fixed set of constants, never a
// value a client chose.
type Logger struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time // time.Now; tests replace it

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last       time.Time // when the last line of the kind was written
	suppressed int       // lines left out since then
}

// New makes a Logger writing to log (nil: nowhere) at most once per interval per kind.
func New(log *slog.Logger, interval time.Duration) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Logger{log: log, interval: interval, now: time.Now, kinds: map[string]*kind{}}
}

// Info writes msg with args (slog key-value pairs) at info level, unless a line of the same
// kind was written less than the interval ago: then it only counts it. It reports whether the
// line was written.
func (l *Logger) Info(kindName, msg string, args ...any) bool {
	if !l.log.Enabled(context.Background(), slog.LevelInfo) {
		return false
	}
	suppressed, ok := l.take(kindName)
	if !ok {
		return false
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Info(msg, args...)
	return true
}

// take decides whether a line of kind may be written now; when it may, it returns how many
// were left out since the last one and starts a new interval.
func (l *Logger) take(kindName string) (suppressed int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[kindName]
	if k == nil {
		k = &kind{}
		l.kinds[kindName] = k
	} else if now.Sub(k.last) < l.interval {
		k.suppressed++
		return 0, false
	}
	suppressed, k.suppressed, k.last = k.suppressed, 0, now
	return suppressed, true
}
