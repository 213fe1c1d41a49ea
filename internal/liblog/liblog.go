// Package liblog routes the logs of the broker libraries that log through process-global
// loggers of their own, go-redis (redis.SetLogger) and sarama (sarama.Logger), to a slog logger.
package liblog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
	goredis "github.com/redis/go-redis/v9"
)

// Set sends go-redis's and sarama's log lines to log, at debug level. Those loggers are
// process-global and read without a lock by the libraries' goroutines: call Set before any
// client of theirs exists (cmd/gateway does, before it builds the node), not while one runs.
func Set(log *slog.Logger) {
	goredis.SetLogger(redisLogger{log.With("library", "go-redis")})
	sarama.Logger = slog.NewLogLogger(log.With("library", "sarama").Handler(), slog.LevelDebug)
}

// redisLogger is go-redis's logging interface on slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
