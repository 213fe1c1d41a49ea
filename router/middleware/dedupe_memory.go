package middleware

import (
	"context"
	"sync"
	"time"
)

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
