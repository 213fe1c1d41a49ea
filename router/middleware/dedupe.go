package middleware

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/protocol"
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

// MemoryDedupe is a DedupeStore in process memory: it deduplicates within one node (or the
// nodes of one process). Expired keys are swept as new ones arrive.
type MemoryDedupe struct {
	mu    sync.Mutex
	keys  map[string]memKey
	now   func() time.Time
	sweep int
}

type memKey struct {
	done    bool
	expires time.Time
}

// NewMemoryDedupe makes an empty store.
func NewMemoryDedupe() *MemoryDedupe {
	return &MemoryDedupe{keys: map[string]memKey{}, now: time.Now}
}

// Begin implements DedupeStore.
func (s *MemoryDedupe) Begin(_ context.Context, key string, hold time.Duration) (Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.sweep++; s.sweep >= 1024 {
		s.sweep = 0
		for k, v := range s.keys {
			if now.After(v.expires) {
				delete(s.keys, k)
			}
		}
	}
	if k, ok := s.keys[key]; ok && now.Before(k.expires) {
		if k.done {
			return Done, nil
		}
		return InFlight, nil
	}
	s.keys[key] = memKey{expires: now.Add(hold)}
	return Claimed, nil
}

// Commit implements DedupeStore.
func (s *MemoryDedupe) Commit(_ context.Context, key string, window time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[key] = memKey{done: true, expires: s.now().Add(window)}
	return nil
}

// Abort implements DedupeStore.
func (s *MemoryDedupe) Abort(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, key)
	return nil
}
