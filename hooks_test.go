package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

const hooksSecret = "hooks-secret-0123456789"

// hookBackend is an HTTP hook backend: answer gives each request's reply (nil: an empty 200),
// and the requests it got are kept.
type hookBackend struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []protocol.HookRequest
}

func newHookBackend(t testing.TB, answer func(req protocol.HookRequest) *protocol.HookReply) *hookBackend {
	t.Helper()
	b := &hookBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := protocol.VerifyWebhook([]byte(hooksSecret), r.Header.Get(protocol.WebhookSignatureHeader), body, time.Now(), time.Minute); err != nil {
			t.Errorf("hook request signature: %v", err)
		}
		var req protocol.HookRequest
		if err := json.Unmarshal(body, &req); err != nil {
			t.Errorf("hook request %s: %v", body, err)
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, req)
		b.mu.Unlock()
		reply := answer(req)
		w.Header().Set("Content-Type", "application/json")
		if reply != nil {
			_ = json.NewEncoder(w).Encode(reply)
		}
	}))
	t.Cleanup(b.Close)
	return b
}

// requests are the requests of hook the backend got.
func (b *hookBackend) requests(hook string) []protocol.HookRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []protocol.HookRequest
	for _, r := range b.reqs {
		if r.Hook == hook {
			out = append(out, r)
		}
	}
	return out
}

// hookEnv turns on the hooks named, via http to url.
func hookEnv(url string, hooks ...string) []string {
	env := []string{"GATEWAY_HOOKS_SECRET=" + hooksSecret}
	for _, h := range hooks {
		up := strings.ToUpper(h)
		env = append(env, "GATEWAY_HOOKS_"+up+"_VIA=http", "GATEWAY_HOOKS_"+up+"_URL="+url+"/"+h)
	}
	return env
}

func deny(code, msg string) *protocol.HookReply {
	return &protocol.HookReply{Deny: &protocol.HookDeny{Code: code, Message: msg}}
}

func TestConnectHook(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if req.Headers["Cookie"] == "sid=bad" {
			return deny("banned", "you are banned")
		}
		if req.Headers["Cookie"] == "sid=bob" {
			return &protocol.HookReply{User: "bob", Info: json.RawMessage(`{"name":"Bob"}`), Data: json.RawMessage(`{"plan":"pro"}`)}
		}
		return nil
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "connect"), "GATEWAY_ALLOW_ANONYMOUS=true")...))

	_, resp, err := wstest.TryDial(t, n.URL, "", http.Header{"Cookie": {"sid=bad"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied connect: %v, %+v; want 403", err, resp)
	}
	var body struct{ Error protocol.Error }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body.Error.Code != "banned" || body.Error.Message != "you are banned" {
		t.Errorf("denied connect body %+v", body)
	}

	c, _, err := wstest.TryDial(t, n.URL, "", http.Header{"Cookie": {"sid=bob"}, "User-Agent": {"test-agent"}})
	if err != nil {
		t.Fatal(err)
	}
	w := c.Expect("welcome")
	if w.Str("user") != "bob" || w.Data() != `{"plan":"pro"}` {
		t.Errorf("welcome %v: want user bob and the hook's data", w)
	}
	reqs := b.requests(protocol.HookConnect)
	last := reqs[len(reqs)-1]
	if last.User != "" || last.Headers["User-Agent"] != "test-agent" || last.Session != "" || last.Node == "" {
		t.Errorf("connect request %+v", last)
	}
	// A token's user reaches the hook; no answer changes nothing.
	c2, w2 := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	if w2.Str("user") != "alice" || w2["data"] != nil {
		t.Errorf("welcome %v", w2)
	}
	c2.Send(`{"type":"ping","id":"p"}`)
	c2.Expect("pong")
}

func TestSubscribeHook(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		switch req.Channel {
		case "room:full":
			return deny("room_full", "the room is full")
		case "room:short":
			return &protocol.HookReply{Expires: time.Now().Add(time.Second).Unix()}
		}
		return &protocol.HookReply{Info: json.RawMessage(`{"role":"mod"}`), Data: json.RawMessage(`{"topic":"cats"}`)}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*",
		"GATEWAY_PRESENCE_CHANNELS=room:*")...))
	// The token lists no room: the hook is the authority for room:*.
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", time.Hour, []string{"own"}, nil))

	c.Send(`{"type":"subscribe","id":"1","channel":"room:full"}`)
	if e := c.Expect("error"); e.Str("id") != "1" || e.Str("code") != "room_full" {
		t.Errorf("denied subscribe: %v", e)
	}
	s := c.Subscribe("room:1")
	if s.Data() != `{"topic":"cats"}` {
		t.Errorf("subscribed %v: want the hook's data", s)
	}
	c.Send(`{"type":"presence","id":"p","channel":"room:1"}`)
	p := c.Expect("presence")
	if !strings.Contains(p.Str("type"), "presence") || !strings.Contains(mustJSON(p["members"]), `"info":{"role":"mod"}`) {
		t.Errorf("presence %v: want the member with the hook's info", p)
	}
	// Channels the hook does not cover follow the token.
	c.Send(`{"type":"subscribe","id":"2","channel":"other"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
		t.Errorf("uncovered channel: %v", e)
	}
	c.Subscribe("own")

	s = c.Subscribe("room:short")
	if s["expires"] == nil {
		t.Errorf("subscribed %v: want expires", s)
	}
	u := c.Expect("unsubscribed")
	if u.Str("channel") != "room:short" || u.Str("reason") != protocol.UnsubscribeExpired {
		t.Errorf("unsubscribed %v: want reason expired", u)
	}
	if reqs := b.requests(protocol.HookSubscribe); len(reqs) != 3 || reqs[0].User != "alice" || reqs[0].Session == "" {
		t.Errorf("subscribe requests %+v", reqs)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPublishHook(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if strings.Contains(string(req.Data), "spam") {
			return deny("spam", "")
		}
		return &protocol.HookReply{Data: json.RawMessage(`{"text":"cleaned"}`)}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "publish"), "GATEWAY_HOOKS_PUBLISH_CHANNELS=public:chat")...))
	sub, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	sub.Subscribe("public:chat")
	// alice's token allows no publish: the hook is the authority for public:chat.
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", time.Hour, nil, nil))
	c.Send(`{"type":"publish","id":"1","channel":"public:chat","data":{"text":"spam spam"}}`)
	if e := c.Expect("error"); e.Str("code") != "spam" {
		t.Errorf("denied publish: %v", e)
	}
	c.Publish("public:chat", map[string]string{"text": "hello"}, "")
	m := sub.Expect("message")
	if m.Data() != `{"text":"cleaned"}` {
		t.Errorf("message %v: want the hook's data", m)
	}
	c.Send(`{"type":"publish","id":"2","channel":"public:other","data":1}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
		t.Errorf("uncovered channel: %v", e)
	}
}

func TestRPCHook(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		switch req.Method {
		case "slow":
			<-release
			return nil
		case "forbidden":
			return deny("no_rights", "not yours")
		}
		return &protocol.HookReply{Data: json.RawMessage(`{"sum":3,"params":` + string(req.Data) + `}`)}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "rpc"), "GATEWAY_HOOKS_RPC_METHODS=sum,slow,forbidden",
		"GATEWAY_HOOKS_RPC_TIMEOUT=300ms")...))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"rpc","id":"1","method":"sum","data":[1,2]}`)
	r := c.Expect("rpc_result")
	if r.Str("id") != "1" || r.Data() != `{"params":[1,2],"sum":3}` {
		t.Errorf("rpc_result %v", r)
	}
	// A slow call does not hold the connection's next frames, and ends unavailable.
	c.Send(`{"type":"rpc","id":"2","method":"slow"}`)
	c.Send(`{"type":"ping","id":"3"}`)
	if p := c.Expect("pong"); p.Str("id") != "3" {
		t.Errorf("pong %v", p)
	}
	if e := c.Expect("error"); e.Str("id") != "2" || e.Str("code") != protocol.CodeUnavailable {
		t.Errorf("slow rpc: %v, want unavailable", e)
	}
	c.Send(`{"type":"rpc","id":"4","method":"forbidden"}`)
	if e := c.Expect("error"); e.Str("id") != "4" || e.Str("code") != "no_rights" {
		t.Errorf("denied rpc: %v", e)
	}
	c.Send(`{"type":"rpc","id":"5","method":"unknown"}`)
	if e := c.Expect("error"); e.Str("id") != "5" || e.Str("code") != protocol.CodeNotFound {
		t.Errorf("uncovered method: %v, want not_found", e)
	}
}

// TestRefreshWithToken: a refresh frame with a new token of the same user moves the expiry; a
// token of another user is refused; without a token and a refresh hook, bad_request.
func TestRefreshWithToken(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", 2*time.Second, []string{"*"}, nil))
	c.Send(map[string]any{"type": "refresh", "id": "1", "token": token(t, "mallory", time.Hour, nil, nil)})
	if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
		t.Errorf("another user's token: %v", e)
	}
	c.Send(`{"type":"refresh","id":"2"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeBadRequest {
		t.Errorf("no token, no hook: %v", e)
	}
	c.Send(map[string]any{"type": "refresh", "id": "3", "token": "not-a-token"})
	if e := c.Expect("error"); e.Str("code") != protocol.CodeUnauthorized {
		t.Errorf("bad token: %v", e)
	}
	fresh := time.Now().Add(time.Hour)
	c.Send(map[string]any{"type": "refresh", "id": "4", "token": token(t, "alice", time.Hour, []string{"*"}, nil)})
	r := c.Expect("refreshed")
	if exp, _ := r["expires"].(float64); r.Str("id") != "4" || int64(exp) < fresh.Unix()-5 {
		t.Errorf("refreshed %v: want the new token's expiry", r)
	}
	stillOpenAfter(t, c, 3*time.Second) // past the first token's expiry
}

// stillOpenAfter checks, once d has passed (an expiry that must not end the connection), that c
// answers a ping with nothing before it (a disconnect would come first).
func stillOpenAfter(t *testing.T, c *wstest.Client, d time.Duration) {
	t.Helper()
	<-time.After(d) // the time itself is what is tested: the old expiry passes
	c.Send(`{"type":"ping","id":"alive"}`)
	c.Expect("pong")
}

// TestRefreshHook: a refresh frame without a token asks the refresh hook; before the expiry
// the node asks it on its own and the connection outlives its token; when the hook denies, the
// connection ends at its expiry as without a hook.
func TestRefreshHook(t *testing.T) {
	later := time.Now().Add(time.Hour).Unix()
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if req.User == "carol" {
			return deny("session_over", "")
		}
		return &protocol.HookReply{Expires: later}
	})
	n := startNode(t, testConfig(t, hookEnv(b.URL, "refresh")...))

	c, _ := wstest.Dial(t, n.URL, token(t, "alice", time.Hour, []string{"*"}, nil))
	c.Send(`{"type":"refresh","id":"1"}`)
	if r := c.Expect("refreshed"); r.Str("id") != "1" || int64(r["expires"].(float64)) != later {
		t.Errorf("refreshed %v, want expires %d", r, later)
	}

	short, _ := wstest.Dial(t, n.URL, token(t, "bob", 2*time.Second, []string{"*"}, nil))
	stillOpenAfter(t, short, 3*time.Second) // the node asked the hook before the token's expiry
	var auto []protocol.HookRequest
	for _, r := range b.requests(protocol.HookRefresh) {
		if r.User == "bob" {
			auto = append(auto, r)
		}
	}
	if len(auto) != 1 || auto[0].Expires == 0 || auto[0].Session == "" {
		t.Errorf("refresh requests of bob %+v: want one, with the expiry", auto)
	}

	denied, _ := wstest.Dial(t, n.URL, token(t, "carol", 1500*time.Millisecond, []string{"*"}, nil))
	if f := denied.Expect("disconnect"); f.Str("code") != protocol.DisconnectCodeTokenExpired {
		t.Errorf("denied refresh: %v, want token_expired", f)
	}
}

// TestHooksBackendDown: with the backend down, a hook that fails closed answers unavailable (a
// connect: HTTP 503), one that fails open lets the token decide.
func TestHooksBackendDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there now
	env := append(hookEnv(down.URL, "connect", "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*",
		"GATEWAY_HOOKS_CONNECT_TIMEOUT=300ms", "GATEWAY_HOOKS_SUBSCRIBE_TIMEOUT=300ms")

	closed := startNode(t, testConfig(t, env...))
	_, resp, err := wstest.TryDial(t, closed.URL, allowAll(t, "alice"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connect, backend down, fail closed: %v %+v; want 503", err, resp)
	}

	open := startNode(t, testConfig(t, append(env, "GATEWAY_HOOKS_CONNECT_FAIL=open", "GATEWAY_HOOKS_SUBSCRIBE_FAIL=open")...))
	c, _ := wstest.Dial(t, open.URL, token(t, "alice", time.Hour, []string{"room:1"}, nil))
	c.Subscribe("room:1") // the token allows it
	c.Send(`{"type":"subscribe","id":"2","channel":"room:2"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeForbidden {
		t.Errorf("fail open, channel the token does not list: %v, want forbidden", e)
	}

	half := startNode(t, testConfig(t, append(env, "GATEWAY_HOOKS_CONNECT_FAIL=open")...))
	c, _ = wstest.Dial(t, half.URL, token(t, "alice", time.Hour, []string{"room:1"}, nil))
	c.Send(`{"type":"subscribe","id":"3","channel":"room:1"}`)
	if e := c.Expect("error"); e.Str("code") != protocol.CodeUnavailable {
		t.Errorf("fail closed subscribe: %v, want unavailable", e)
	}
	if got := metricSum(half.Gateway, "gateway_hook_calls_total"); got < 2 {
		t.Errorf("gateway_hook_calls_total = %v, want the failed calls counted", got)
	}
}

// brokerHooks is a fake of the hooks over the broker (transports/hookbus): it answers every
// call itself.
type brokerHooks struct {
	mu    sync.Mutex
	calls []protocol.HookRequest
}

func (b *brokerHooks) Call(_ context.Context, req protocol.HookRequest) (protocol.HookReply, error) {
	b.mu.Lock()
	b.calls = append(b.calls, req)
	b.mu.Unlock()
	return protocol.HookReply{Data: json.RawMessage(`"via broker"`)}, nil
}

// TestHooksViaBroker: a hook with via broker calls the caller given with WithHookBroker (without
// one, the node's own transports/hookbus caller: hooks_broker_test.go).
func TestHooksViaBroker(t *testing.T) {
	cfg := testConfig(t, "GATEWAY_HOOKS_RPC_VIA=broker")
	fake := &brokerHooks{}
	n := startNode(t, cfg, gateway.WithHookBroker(fake))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"rpc","id":"1","method":"anything","data":{"x":1}}`)
	if r := c.Expect("rpc_result"); r.Data() != `"via broker"` {
		t.Errorf("rpc_result %v", r)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.calls) != 1 || fake.calls[0].Method != "anything" || string(fake.calls[0].Data) != `{"x":1}` || fake.calls[0].User != "alice" {
		t.Errorf("calls %+v", fake.calls)
	}
}

// TestRPCInFlightBound: a connection has at most 16 rpc calls waiting; the 17th is answered
// rate_limited at once, and the 16 are answered once the backend answers.
func TestRPCInFlightBound(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		<-release
		return &protocol.HookReply{Data: json.RawMessage(`"done"`)}
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "rpc"), "GATEWAY_HOOKS_RPC_TIMEOUT=20s")...))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	for i := range handlers.MaxCallsInFlight + 1 {
		c.Send(map[string]any{"type": "rpc", "id": fmt.Sprint(i), "method": "wait"})
	}
	if e := c.Expect("error"); e.Str("code") != protocol.CodeRateLimited || e.Str("id") != fmt.Sprint(handlers.MaxCallsInFlight) {
		t.Fatalf("rpc beyond the bound: %v, want rate_limited", e)
	}
	free()
	seen := map[string]bool{}
	for range handlers.MaxCallsInFlight {
		r := c.Expect("rpc_result")
		seen[r.Str("id")] = true
	}
	if len(seen) != handlers.MaxCallsInFlight {
		t.Errorf("results for %d distinct calls, want %d", len(seen), handlers.MaxCallsInFlight)
	}
}
