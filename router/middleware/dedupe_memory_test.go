package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/wsgateway/gateway/router/middleware"
)

// testDedupeStore checks the contract every DedupeStore keeps (dedupe_redis_test.go runs it too).
func testDedupeStore(t *testing.T, s middleware.DedupeStore) {
	ctx := context.Background()
	claim := func(key string, want middleware.Claim) {
		t.Helper()
		got, err := s.Begin(ctx, key, time.Minute)
		if err != nil || got != want {
			t.Fatalf("Begin(%q) = %v, %v; want %v", key, got, err, want)
		}
	}
	claim("a", middleware.Claimed)
	claim("a", middleware.InFlight)
	claim("b", middleware.Claimed) // keys are independent
	if err := s.Abort(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	claim("a", middleware.Claimed) // an aborted key is free again
	if err := s.Commit(ctx, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	claim("a", middleware.Done)
	claim("a", middleware.Done) // kept for the window
}

func TestMemoryDedupeStore(t *testing.T) {
	testDedupeStore(t, middleware.NewMemoryDedupe())
}
