package gateway

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/IBM/sarama"
	goredis "github.com/redis/go-redis/v9"
)

// SetLibraryLogger routes the logs of the broker libraries that log through process-global
// loggers of their own, go-redis (redis.SetLogger) and sarama (sarama.Logger), to log, at debug
// level: the node reports broker trouble itself, once (see awaitBroker), so their per-attempt
// lines are detail. Those loggers are process-global: cmd/gateway calls this once, before
// building a node; a program embedding several nodes calls it once, or not at all (go-redis then
// writes to stderr and sarama discards). nats.go and Watermill log through the *slog.Logger
// given to WithLogger and need nothing here.
func SetLibraryLogger(log *slog.Logger) {
	goredis.SetLogger(redisLogger{log.With("library", "go-redis")})
	sarama.Logger = slog.NewLogLogger(log.With("library", "sarama").Handler(), slog.LevelDebug)
}

// redisLogger is go-redis's logging interface on slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
