package middleware

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// RedisDedupe is a DedupeStore in Redis, shared by every node that uses the same server and
// prefix: a key is SET NX as "pending" for the attempt, then "done" for the window, or deleted
// when the attempt failed.
type RedisDedupe struct {
	client goredis.UniversalClient
	prefix string
}

// NewRedisDedupe keeps keys under prefix + ":dedupe:".
func NewRedisDedupe(client goredis.UniversalClient, prefix string) *RedisDedupe {
	return &RedisDedupe{client: client, prefix: prefix + ":dedupe:"}
}

// Begin implements DedupeStore.
func (s *RedisDedupe) Begin(ctx context.Context, key string, hold time.Duration) (Claim, error) {
	ok, err := s.client.SetNX(ctx, s.prefix+key, "pending", hold).Result()
	if err != nil {
		return 0, err
	}
	if ok {
		return Claimed, nil
	}
	v, err := s.client.Get(ctx, s.prefix+key).Result()
	switch {
	case err == goredis.Nil: // expired meanwhile: try again once
		if ok, err = s.client.SetNX(ctx, s.prefix+key, "pending", hold).Result(); err == nil && ok {
			return Claimed, nil
		}
		return InFlight, err
	case err != nil:
		return 0, err
	case v == "done":
		return Done, nil
	}
	return InFlight, nil
}

// Commit implements DedupeStore.
func (s *RedisDedupe) Commit(ctx context.Context, key string, window time.Duration) error {
	return s.client.Set(ctx, s.prefix+key, "done", window).Err()
}

// Abort implements DedupeStore.
func (s *RedisDedupe) Abort(ctx context.Context, key string) error {
	return s.client.Del(ctx, s.prefix+key).Err()
}
