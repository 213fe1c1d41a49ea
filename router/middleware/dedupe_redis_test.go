package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/router/middleware"
)

func TestRedisDedupeStore(t *testing.T) {
	client := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379"})
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Skipf("no Redis on 127.0.0.1:6379: %v", err)
	}
	prefix := "mwtest-" + watermill.NewShortUUID()
	t.Cleanup(func() {
		keys, _ := client.Keys(context.Background(), prefix+":*").Result()
		if len(keys) > 0 {
			_ = client.Del(context.Background(), keys...).Err()
		}
	})
	testDedupeStore(t, middleware.NewRedisDedupe(client, prefix))
	// A second node on the same server and prefix sees the first one's keys.
	other := middleware.NewRedisDedupe(client, prefix)
	if got, err := other.Begin(context.Background(), "a", time.Minute); err != nil || got != middleware.Done {
		t.Fatalf("another node: Begin = %v, %v; want Done", got, err)
	}
}
