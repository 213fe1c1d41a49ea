package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

// The hardening of the hooks (issue #14): each test fails without its fix.

// TestPresenceNeedsSubscribeHook: on a channel the subscribe hook covers, presence and
// presence_stats need a subscription the hook allowed; a token listing the channel is not
// enough (the hook is the authority there).
func TestPresenceNeedsSubscribeHook(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if req.Channel == "room:secret" {
			return deny("not_member", "")
		}
		return nil
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*",
		"GATEWAY_PRESENCE_CHANNELS=room:*,open:*")...))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice")) // the token lists every channel
	for _, typ := range []string{"presence", "presence_stats"} {
		c.Send(map[string]any{"type": typ, "id": typ, "channel": "room:secret"})
		if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
			t.Errorf("%s of a hooked channel not subscribed: %v, want forbidden", typ, e)
		}
	}
	c.Subscribe("room:1")
	c.Send(`{"type":"presence","id":"p1","channel":"room:1"}`)
	c.Expect("presence")
	c.Send(`{"type":"presence_stats","id":"p2","channel":"open:1"}`) // not hooked: the token decides
	c.Expect("presence_stats")
}

// TestHookCallsRateLimited: rpc and refresh frames take a token of limits.rpc_rate, and a publish
// to a hooked channel one of limits.publish_rate, before the hook is called; over it the frame
// is rate_limited (a strike) and the backend is not asked.
func TestHookCallsRateLimited(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if req.Hook == protocol.HookRefresh {
			return &protocol.HookReply{Expires: time.Now().Add(time.Hour).Unix()}
		}
		return &protocol.HookReply{Data: json.RawMessage(`"ok"`)}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "rpc", "refresh", "publish"),
		"GATEWAY_LIMITS_RPC_RATE=0.001", "GATEWAY_LIMITS_RPC_BURST=3",
		"GATEWAY_LIMITS_PUBLISH_RATE=0.001", "GATEWAY_LIMITS_PUBLISH_BURST=2",
		"GATEWAY_LIMITS_RATE_LIMITED_DISCONNECT=1", "GATEWAY_LIMITS_RATE_LIMITED_WINDOW=1h")...))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	for i := range 2 {
		c.Send(map[string]any{"type": "rpc", "id": fmt.Sprint("r", i), "method": "m"})
		c.Expect("rpc_result")
	}
	c.Send(`{"type":"refresh","id":"f"}`)
	c.Expect("refreshed")
	c.Send(`{"type":"rpc","id":"over","method":"m"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeRateLimited || e.Str("id") != "over" {
		t.Fatalf("rpc over the rate: %v, want rate_limited", e)
	}
	if got := len(b.requests(protocol.HookRPC)) + len(b.requests(protocol.HookRefresh)); got != 3 {
		t.Errorf("%d rpc and refresh calls, want 3: the frame over the rate reached the backend", got)
	}

	p, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	for i := range 2 {
		p.Publish("chat", map[string]int{"n": i}, "")
	}
	p.Send(`{"type":"publish","id":"over","channel":"chat","data":1}`)
	if e := p.Expect("error"); e.Str("code") != protocol.CodeRateLimited {
		t.Fatalf("publish over the rate: %v, want rate_limited", e)
	}
	if got := len(b.requests(protocol.HookPublish)); got != 2 {
		t.Errorf("%d publish hook calls, want 2: the publish over the rate reached the backend", got)
	}
	// The strikes: rate_limited_disconnect is 1, and a second refusal finds none left.
	p.Send(`{"type":"publish","id":"over2","channel":"chat","data":1}`)
	p.Expect("error")
	if f := p.Expect("disconnect"); f.Str("code") != protocol.DisconnectCodeRateLimited {
		t.Errorf("after the strikes: %v, want a rate_limited disconnect", f)
	}
}

// TestConnectHookAfterCheapChecks: the connect hook is not asked for an upgrade the origin
// check, the handshake or the connection limits refuse; the limit of a user the hook sets is
// applied to that user.
func TestConnectHookAfterCheapChecks(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if strings.HasPrefix(req.User, "alias-") {
			return &protocol.HookReply{User: "bob"}
		}
		return nil
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "connect"), "GATEWAY_LIMITS_CONNECTIONS_PER_USER=1")...))
	calls := func() int { return len(b.requests(protocol.HookConnect)) }

	_, resp, err := wstest.TryDial(t, n.URL, allowAll(t, "alice"), http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %+v, want 403", err, resp)
	}
	plain, err := http.Get(n.URL + "/ws?token=" + allowAll(t, "alice")) // not a WebSocket handshake
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET /ws: %d, want 400", plain.StatusCode)
	}
	if got := calls(); got != 0 {
		t.Fatalf("%d connect hook calls for upgrades refused by the origin or the handshake, want 0", got)
	}

	wstest.Dial(t, n.URL, allowAll(t, "alice"))
	_, resp, err = wstest.TryDial(t, n.URL, allowAll(t, "alice"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice's second connection: %v %+v, want 429", err, resp)
	}
	if got := calls(); got != 1 {
		t.Errorf("%d connect hook calls, want 1: the connection over alice's limit was asked", got)
	}

	// Two tokens the hook maps to bob: the second is over bob's limit.
	if _, w := wstest.Dial(t, n.URL, allowAll(t, "alias-1")); w.Str("user") != "bob" {
		t.Fatalf("welcome %v, want user bob", w)
	}
	_, resp, err = wstest.TryDial(t, n.URL, allowAll(t, "alias-2"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("bob's second connection through the hook: %v %+v, want 429", err, resp)
	}
}

// TestRefreshTokenKeepsHookDecisions: with a connect hook that sets the user and an expiry, a
// refresh token of the user the connection was opened with is accepted, and the expiry stays
// at most the hook's.
func TestRefreshTokenKeepsHookDecisions(t *testing.T) {
	capAt := time.Now().Add(time.Hour).Unix()
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		return &protocol.HookReply{User: "user-" + req.User, Expires: capAt}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "connect"), "GATEWAY_REQUIRE_EXP=false")...))
	c, w := wstest.Dial(t, n.URL, token(t, "alice", 2*time.Hour, []string{"*"}, nil))
	if w.Str("user") != "user-alice" {
		t.Fatalf("welcome %v", w)
	}
	c.Send(map[string]any{"type": "refresh", "id": "1", "token": token(t, "alice", 3*time.Hour, []string{"*"}, nil)})
	if r := c.Expect("refreshed"); int64(r["expires"].(float64)) != capAt {
		t.Errorf("refreshed %v: want the hook's expires %d (sooner than the token's)", r, capAt)
	}
	c.Send(map[string]any{"type": "refresh", "id": "2", "token": token(t, "alice", 0, []string{"*"}, nil)}) // no exp
	if r := c.Expect("refreshed"); r["expires"] == nil || int64(r["expires"].(float64)) != capAt {
		t.Errorf("refreshed %v: a token without exp must not clear the hook's expires %d", r, capAt)
	}
	c.Send(map[string]any{"type": "refresh", "id": "3", "token": token(t, "user-alice", time.Hour, []string{"*"}, nil)})
	if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
		t.Errorf("a token of the hook's user: %v, want forbidden (the token user is alice)", e)
	}
	soon := time.Now().Add(90 * time.Minute)
	c.Send(map[string]any{"type": "refresh", "id": "4", "token": token(t, "alice", 30*time.Minute, []string{"*"}, nil)})
	if r := c.Expect("refreshed"); int64(r["expires"].(float64)) >= soon.Unix() {
		t.Errorf("refreshed %v: want the token's exp, sooner than the hook's", r)
	}
}

// TestRefreshHookSlowerThanLead: the node asks the refresh hook shortly before the expiry; a
// hook that has not answered by the expiry does not keep the connection open past it.
func TestRefreshHookSlowerThanLead(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		<-release
		return &protocol.HookReply{Expires: time.Now().Add(time.Hour).Unix()}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "refresh"), "GATEWAY_HOOKS_REFRESH_TIMEOUT=1m")...))
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", 2*time.Second, []string{"*"}, nil))
	if f := c.Expect("disconnect"); f.Str("code") != protocol.DisconnectCodeTokenExpired {
		t.Errorf("%v, want token_expired while the hook has not answered", f)
	}
	if got := len(b.requests(protocol.HookRefresh)); got != 1 {
		t.Errorf("%d refresh hook calls, want 1 (asked before the expiry)", got)
	}
}

// deafCaller is a hook caller that ignores its context: each call returns once the test
// releases it.
type deafCaller struct {
	release chan struct{}
	calls   atomic.Int32
}

func (d *deafCaller) Call(context.Context, protocol.HookRequest) (protocol.HookReply, error) {
	d.calls.Add(1)
	<-d.release
	return protocol.HookReply{}, errors.New("answered after the timeout")
}

// TestRPCSlotHeldByDeafCaller: a hook caller that outlives the timeout keeps its rpc slot until
// it returns, so the bound of calls in flight holds for calls too.
func TestRPCSlotHeldByDeafCaller(t *testing.T) {
	deaf := &deafCaller{release: make(chan struct{})}
	var once sync.Once
	free := func() { once.Do(func() { close(deaf.release) }) }
	defer free()
	n := startNode(t, testConfig(t, "GATEWAY_HOOKS_RPC_VIA=broker", "GATEWAY_HOOKS_RPC_TIMEOUT=50ms"),
		gateway.WithHookBroker(deaf))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	for i := range handlers.MaxCallsInFlight {
		c.Send(map[string]any{"type": "rpc", "id": fmt.Sprint(i), "method": "m"})
	}
	for range handlers.MaxCallsInFlight {
		if e := c.Expect("error"); e.Str("code") != protocol.CodeUnavailable {
			t.Fatalf("%v, want unavailable at the timeout", e)
		}
	}
	c.Send(`{"type":"rpc","id":"more","method":"m"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeRateLimited || e.Str("id") != "more" {
		t.Fatalf("rpc while %d calls still run: %v, want rate_limited", handlers.MaxCallsInFlight, e)
	}
	if got := deaf.calls.Load(); got != int32(handlers.MaxCallsInFlight) {
		t.Errorf("%d calls running, want %d", got, handlers.MaxCallsInFlight)
	}
	free() // the calls return: their slots come back
	wstest.WaitFor(t, func() error {
		c.Send(`{"type":"rpc","id":"again","method":"m"}`)
		if e := c.Expect("error"); e.Str("code") != protocol.CodeUnavailable {
			return fmt.Errorf("%v", e)
		}
		return nil
	})
}

// TestSubscribeCheapChecksFirst: a subscribe that is refused as already subscribed or over the
// subscriptions limit does not ask the subscribe hook.
func TestSubscribeCheapChecksFirst(t *testing.T) {
	b := newHookBackend(t, func(protocol.HookRequest) *protocol.HookReply { return nil })
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "subscribe"), "GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=1",
		"GATEWAY_LIMITS_SUBSCRIBE_BURST=10")...))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("room:1")
	c.Send(`{"type":"subscribe","id":"again","channel":"room:1"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeBadRequest {
		t.Errorf("already subscribed: %v", e)
	}
	c.Send(`{"type":"subscribe","id":"over","channel":"room:2"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeLimitExceeded {
		t.Errorf("over the limit: %v", e)
	}
	if got := len(b.requests(protocol.HookSubscribe)); got != 1 {
		t.Errorf("%d subscribe hook calls, want 1: refused subscribes asked the hook", got)
	}
}
