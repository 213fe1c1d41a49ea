package gateway

import (
	"log/slog"

	"github.com/wsgateway/gateway/internal/liblog"
)

// SetLibraryLogger routes the logs of the broker libraries that log through process-global
// loggers of their own, go-redis and sarama, to log, at debug level: the node reports broker
// trouble itself, once (see awaitBroker), so their per-attempt lines are detail. Those loggers
// are process-global and read without a lock: cmd/gateway calls this once, before building a
// node; a program embedding several nodes calls it once before the first, or not at all
// (go-redis then writes to stderr and sarama discards). nats.go and Watermill log through the
// *slog.Logger given to WithLogger and need nothing here.
func SetLibraryLogger(log *slog.Logger) { liblog.Set(log) }
