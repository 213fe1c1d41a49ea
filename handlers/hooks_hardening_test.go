package handlers

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
)

// TestHooksCacheStartsNothing: hooks with caches start no goroutine (each cache used to start
// one that never ended).
func TestHooksCacheStartsNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	var all []*Hooks
	for range 20 {
		all = append(all, newTestHooks(map[string]Hook{
			protocol.HookSubscribe: {Caller: &fakeCaller{}, Timeout: time.Second, Cache: time.Hour},
			protocol.HookPublish:   {Caller: &fakeCaller{}, Timeout: time.Second, Cache: time.Hour},
		}))
	}
	if grew := runtime.NumGoroutine() - before; grew >= 20 {
		t.Errorf("40 caches started %d goroutines, want none", grew)
	}
	for _, h := range all {
		h.Close()
		h.Close()
	}
}

// TestHooksCacheEnds: a cached decision is used until its cache time ends, then asked again;
// Close empties the cache.
func TestHooksCacheEnds(t *testing.T) {
	f := &fakeCaller{}
	h := newTestHooks(map[string]Hook{protocol.HookSubscribe: {Caller: f, Timeout: time.Second, Cache: time.Minute}})
	now := time.Now()
	h.now = func() time.Time { return now }
	ask := func() {
		t.Helper()
		if _, err := h.Decide(context.Background(), protocol.HookRequest{Hook: protocol.HookSubscribe, User: "u", Channel: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	ask()
	now = now.Add(59 * time.Second)
	ask()
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d calls within the cache time, want 1", n)
	}
	now = now.Add(2 * time.Second)
	ask()
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d calls once the cache time ended, want 2", n)
	}
	h.Close()
	ask()
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("%d calls after Close, want 3 (the cache emptied)", n)
	}
}

// TestDecideEndedWithCaller: decide's ended runs once the caller returned, not when decide
// returns at the timeout; and at once when no call is made.
func TestDecideEndedWithCaller(t *testing.T) {
	deaf := &fakeCaller{block: true, deaf: make(chan struct{})}
	h := newTestHooks(map[string]Hook{protocol.HookRPC: {Caller: deaf, Timeout: 20 * time.Millisecond, Patterns: []string{"m"}}})
	var ended atomic.Int32
	if _, err := h.decide(context.Background(), protocol.HookRequest{Hook: protocol.HookRPC, Method: "m"}, func() { ended.Add(1) }); err == nil {
		t.Fatal("a caller past its timeout: want unavailable")
	}
	if ended.Load() != 0 {
		t.Fatal("ended ran while the caller still runs")
	}
	close(deaf.deaf)
	poll.Until(t, 5*time.Second, func() error {
		if ended.Load() != 1 {
			return errors.New("ended did not run once the caller returned")
		}
		return nil
	})
	if _, err := h.decide(context.Background(), protocol.HookRequest{Hook: protocol.HookRPC, Method: "other"}, func() { ended.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if ended.Load() != 2 {
		t.Fatal("ended did not run for a method no hook covers")
	}
}

// TestHTTPHookCallerNoRedirect: a 3xx answer is an error; the signed request is not sent on to
// the place it points to.
func TestHTTPHookCallerNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer other.Close()
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/steal", status)
		}))
		c := NewHTTPHookCaller(HTTPHookConfig{URL: redirect.URL, Secret: []byte("s"), BreakerFailures: 100, BreakerOpenFor: time.Second,
			Client: &http.Client{}})
		_, err := c.Call(context.Background(), protocol.HookRequest{Hook: protocol.HookRPC, ID: "1"})
		redirect.Close()
		if err == nil {
			t.Errorf("HTTP %d: no error", status)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}
