package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// fakeCaller answers every call with reply (or err), counting the calls; block makes it wait
// for its context to end, ignoring it when deaf.
type fakeCaller struct {
	calls atomic.Int32
	reply protocol.HookReply
	err   error
	block bool
	deaf  chan struct{} // with block: the caller ignores its context and returns when this closes
	mu    sync.Mutex
	last  protocol.HookRequest
}

func (f *fakeCaller) Call(ctx context.Context, req protocol.HookRequest) (protocol.HookReply, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.last = req
	f.mu.Unlock()
	if f.block {
		if f.deaf != nil {
			<-f.deaf // a caller that does not return with its context: Decide must not wait for it
			return protocol.HookReply{}, errors.New("too late")
		}
		<-ctx.Done()
		return protocol.HookReply{}, ctx.Err()
	}
	return f.reply, f.err
}

func newTestHooks(hooks map[string]Hook) *Hooks {
	return NewHooks(HooksConfig{NodeID: "node-t", Hooks: hooks, CacheSize: 100, Metrics: metrics.New()})
}

func TestHooksCovers(t *testing.T) {
	f := &fakeCaller{}
	h := newTestHooks(map[string]Hook{
		protocol.HookSubscribe: {Caller: f, Patterns: []string{"room:*"}, Timeout: time.Second},
		protocol.HookRPC:       {Caller: f, Timeout: time.Second},
	})
	for _, tt := range []struct {
		hook, name string
		want       bool
	}{
		{protocol.HookSubscribe, "room:1", true}, {protocol.HookSubscribe, "news", false},
		{protocol.HookRPC, "anything", true}, {protocol.HookPublish, "room:1", false},
	} {
		if got := h.Covers(tt.hook, tt.name); got != tt.want {
			t.Errorf("Covers(%s, %s) = %v", tt.hook, tt.name, got)
		}
	}
	if (*Hooks)(nil).Covers(protocol.HookRPC, "x") || (*Hooks)(nil).On(protocol.HookConnect) {
		t.Error("a nil *Hooks covers something")
	}
	reply, err := h.Decide(context.Background(), protocol.HookRequest{Hook: protocol.HookSubscribe, User: "u", Channel: "news"})
	if reply != nil || err != nil || f.calls.Load() != 0 {
		t.Errorf("uncovered channel: %v %v, %d calls", reply, err, f.calls.Load())
	}
	if _, err := h.Decide(context.Background(), protocol.HookRequest{Hook: protocol.HookSubscribe, User: "u", Channel: "room:1"}); err != nil {
		t.Fatal(err)
	}
	if f.last.Node != "node-t" || f.last.ID == "" || f.last.Transport != "websocket" {
		t.Errorf("request %+v: want node, id and transport set", f.last)
	}
}

// TestHooksCache: a decision (a deny too) is asked once per (user, channel) within the cache
// time; another user or channel asks again; a publish answer that replaces the data is not kept.
func TestHooksCache(t *testing.T) {
	ctx := context.Background()
	deny := &fakeCaller{reply: protocol.HookReply{Deny: &protocol.HookDeny{Code: "banned"}}}
	h := newTestHooks(map[string]Hook{protocol.HookSubscribe: {Caller: deny, Timeout: time.Second, Cache: time.Hour}})
	for range 3 {
		r, err := h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, User: "alice", Channel: "room:1"})
		if err != nil || r == nil || r.Err() == nil || r.Err().Code != "banned" {
			t.Fatalf("reply %+v, %v: want the deny", r, err)
		}
	}
	if n := deny.calls.Load(); n != 1 {
		t.Errorf("%d calls for one (user, channel), want 1 (a cached deny)", n)
	}
	_, _ = h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, User: "bob", Channel: "room:1"})
	_, _ = h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, User: "alice", Channel: "room:2"})
	if n := deny.calls.Load(); n != 3 {
		t.Errorf("%d calls, want 3: another user and another channel are asked", n)
	}

	replace := &fakeCaller{reply: protocol.HookReply{Data: json.RawMessage(`{"clean":true}`)}}
	plain := &fakeCaller{}
	h = newTestHooks(map[string]Hook{
		protocol.HookPublish:   {Caller: replace, Timeout: time.Second, Cache: time.Hour},
		protocol.HookSubscribe: {Caller: plain, Timeout: time.Second}, // no cache
	})
	for range 2 {
		r, err := h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookPublish, User: "alice", Channel: "c"})
		if err != nil || string(r.Data) != `{"clean":true}` {
			t.Fatalf("publish: %+v %v", r, err)
		}
		_, _ = h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, User: "alice", Channel: "c"})
	}
	if replace.calls.Load() != 2 || plain.calls.Load() != 2 {
		t.Errorf("calls: publish with data %d, subscribe without cache %d; want 2 and 2", replace.calls.Load(), plain.calls.Load())
	}
}

// TestHooksFailModes: a call that fails (error, timeout, a caller that never returns, a reply
// that is not valid) gives unavailable with fail closed, and no decision with fail open.
func TestHooksFailModes(t *testing.T) {
	ctx := context.Background()
	deaf := make(chan struct{})
	defer close(deaf)
	for name, f := range map[string]*fakeCaller{
		"error":    {err: errors.New("backend down")},
		"timeout":  {block: true},
		"deaf":     {block: true, deaf: deaf},
		"bad deny": {reply: protocol.HookReply{Deny: &protocol.HookDeny{Code: "Not A Code"}}},
	} {
		for _, open := range []bool{false, true} {
			h := newTestHooks(map[string]Hook{protocol.HookRPC: {Caller: f, Timeout: 50 * time.Millisecond, FailOpen: open}})
			r, err := h.Decide(ctx, protocol.HookRequest{Hook: protocol.HookRPC, Method: "m"})
			if open {
				if r != nil || err != nil {
					t.Errorf("%s, fail open: %v %v, want no decision", name, r, err)
				}
				continue
			}
			var pe *protocol.Error
			if r != nil || !errors.As(err, &pe) || pe.Code != protocol.CodeUnavailable {
				t.Errorf("%s, fail closed: %v %v, want unavailable", name, r, err)
			}
		}
	}
}

// hookServer is an HTTP hook backend: each request is checked (POST, JSON, signed) and
// answered by answer, in order of arrival.
func hookServer(t *testing.T, secret []byte, answer func(n int, req protocol.HookRequest) (int, string)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(hits.Add(1))
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if err := protocol.VerifyWebhook(secret, r.Header.Get(protocol.WebhookSignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		var req protocol.HookRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		status, reply := answer(n, req)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, reply)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

var hooksSecret = []byte("hooks-secret-0123456789")

// TestHTTPHookRetries: a 5xx is tried again (within the retries), a 4xx is not.
func TestHTTPHookRetries(t *testing.T) {
	srv, hits := hookServer(t, hooksSecret, func(n int, req protocol.HookRequest) (int, string) {
		if req.Method == "bad" {
			return 400, "no"
		}
		if n < 3 {
			return 503, "busy"
		}
		return 200, `{"data":{"ok":` + `true}}`
	})
	c := NewHTTPHookCaller(HTTPHookConfig{URL: srv.URL, Secret: hooksSecret, Retries: 2, BreakerFailures: 5, BreakerOpenFor: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "1", Method: "m"})
	if err != nil || string(reply.Data) != `{"ok":true}` || hits.Load() != 3 {
		t.Fatalf("reply %+v, %v after %d POSTs; want the third POST's reply", reply, err, hits.Load())
	}
	hits.Store(10)
	if _, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "2", Method: "bad"}); err == nil || hits.Load() != 11 {
		t.Errorf("400: %v after %d POSTs; want an error after one", err, hits.Load()-10)
	}
	c = NewHTTPHookCaller(HTTPHookConfig{URL: srv.URL, Secret: hooksSecret, Retries: 0, BreakerFailures: 5, BreakerOpenFor: time.Minute})
	hits.Store(0)
	if _, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "3", Method: "m"}); err == nil || hits.Load() != 1 {
		t.Errorf("no retries: %v after %d POSTs; want an error after one", err, hits.Load())
	}
}

// TestHTTPHookBreaker: after BreakerFailures failed calls in a row the breaker opens and calls
// fail without a POST.
func TestHTTPHookBreaker(t *testing.T) {
	srv, hits := hookServer(t, hooksSecret, func(int, protocol.HookRequest) (int, string) { return 500, "down" })
	c := NewHTTPHookCaller(HTTPHookConfig{URL: srv.URL, Secret: hooksSecret, Retries: 0, BreakerFailures: 3, BreakerOpenFor: time.Hour})
	ctx := context.Background()
	for range 3 {
		if _, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "x"}); err == nil {
			t.Fatal("a 500 answered without an error")
		}
	}
	_, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "y"})
	if !errors.Is(err, gobreaker.ErrOpenState) || hits.Load() != 3 {
		t.Errorf("4th call: %v after %d POSTs; want the breaker open after 3", err, hits.Load())
	}
}

// TestHTTPHookBadReplies: a 2xx whose body is not a valid HookReply is an error; an empty 2xx allows.
func TestHTTPHookBadReplies(t *testing.T) {
	bodies := map[string]string{"m1": "not json", "m2": `{"deny":{"code":"Bad Code"}}`, "m3": `{"data":"x"`, "ok": ""}
	srv, _ := hookServer(t, hooksSecret, func(_ int, req protocol.HookRequest) (int, string) { return 200, bodies[req.Method] })
	c := NewHTTPHookCaller(HTTPHookConfig{URL: srv.URL, Secret: hooksSecret, BreakerFailures: 100, BreakerOpenFor: time.Minute})
	for m := range bodies {
		_, err := c.Call(context.Background(), protocol.HookRequest{Hook: protocol.HookRPC, ID: m, Method: m})
		if (m == "ok") != (err == nil) {
			t.Errorf("body %q: %v", bodies[m], err)
		}
	}
}
