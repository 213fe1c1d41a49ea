package middleware

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// Claim is what a DedupeStore says of a key.
type Claim int

// Claims.
const (
	Claimed  Claim = iota // the key was free and is now held by the caller
	Done                  // a message with this key was accepted within the window
	InFlight              // another attempt holds the key right now
)

// DedupeStore remembers idempotency keys. Unlike Watermill's Deduplicator, a key is kept only
// once its message was accepted: Begin holds it while the attempt runs, Commit keeps it for the
// window, Abort frees it so that a retry of a failed attempt is not mistaken for a duplicate.
// Implementations are safe for concurrent use; a store shared by the nodes (Redis, JetStream KV)
// makes deduplication work across nodes.
type DedupeStore interface {
	Begin(ctx context.Context, key string, hold time.Duration) (Claim, error)
	Commit(ctx context.Context, key string, window time.Duration) error
	Abort(ctx context.Context, key string) error
}

// Dedupe drops messages whose key (from keyOf; "" means no key) was accepted within window:
// they are acked without running the rest of the chain. A message whose key is held by an
// attempt still running is refused with `unavailable`, so the client retries later.
func Dedupe(store DedupeStore, window, hold time.Duration, keyOf func(*message.Message) string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			key := keyOf(msg)
			if key == "" {
				return h(msg)
			}
			ctx := msg.Context()
			claim, err := store.Begin(ctx, key, hold)
			if err != nil {
				return nil, protocol.Errorf(protocol.CodeUnavailable, "dedupe store: %v", err)
			}
			switch claim {
			case Done:
				return nil, nil
			case InFlight:
				return nil, protocol.Errorf(protocol.CodeUnavailable, "a message with this msg_id is being accepted; retry")
			}
			out, err := h(msg)
			if err != nil {
				_ = store.Abort(context.WithoutCancel(ctx), key)
				return out, err
			}
			if err := store.Commit(context.WithoutCancel(ctx), key, window); err != nil {
				return out, nil // accepted; only a later duplicate could slip through
			}
			return out, nil
		}
	}
}
