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

// DedupeConfig is what Dedupe needs.
type DedupeConfig struct {
	// Store remembers the keys; shared by the nodes, it deduplicates across them.
	Store DedupeStore
	// Window is how long the key of an accepted message is kept: a message with the same key
	// within it is a duplicate.
	Window time.Duration
	// Hold is how long an attempt holds its key at most, should it never commit nor abort (a
	// node that died mid-attempt).
	Hold time.Duration
	// KeyOf gives a message's key; "" means it has none and is never deduplicated.
	KeyOf func(*message.Message) string
}

// Dedupe drops messages whose key was accepted within the window: they are acked without
// running the rest of the chain. A message whose key is held by an attempt still running is
// refused with `unavailable`, so the client retries later.
func Dedupe(cfg DedupeConfig) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			key := cfg.KeyOf(msg)
			if key == "" {
				return h(msg)
			}
			ctx := msg.Context()
			claim, err := cfg.Store.Begin(ctx, key, cfg.Hold)
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
				_ = cfg.Store.Abort(context.WithoutCancel(ctx), key)
				return out, err
			}
			if err := cfg.Store.Commit(context.WithoutCancel(ctx), key, cfg.Window); err != nil {
				return out, nil // accepted; only a later duplicate could slip through
			}
			return out, nil
		}
	}
}
