package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

const (
	testSecret = "test-secret-0123456789abcdef"
	testAPIKey = "test-api-key-0123456789"
)

// node is a gateway served by an httptest server.
type node struct {
	*gateway.Gateway
	URL string
}

// testConfig is a valid configuration for tests; env adds GATEWAY_* settings.
func testConfig(t testing.TB, env ...string) *configs.Config {
	t.Helper()
	environ := append([]string{
		"GATEWAY_JWT_SECRET=" + testSecret,
		"GATEWAY_API_KEY=" + testAPIKey,
		"GATEWAY_DRAIN_PERIOD=200ms",
		"GATEWAY_PUBLIC_CHANNELS=public,public:*",
	}, env...)
	cfg, err := configs.Load("", environ)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startNode starts a node with cfg; opts may share a broker between nodes.
func startNode(t testing.TB, cfg *configs.Config, opts ...gateway.Option) *node {
	t.Helper()
	g, url := nodetest.InProcess(t, cfg, opts...)
	return &node{Gateway: g, URL: url}
}

func token(t testing.TB, sub string, ttl time.Duration, channels, publish []string) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), sub, ttl, channels, publish)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// allowAll is a token for user that may subscribe and publish anywhere, and send.
func allowAll(t testing.TB, user string) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func apiPublish(t testing.TB, base string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+"/api/publish", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func mustAPIPublish(t testing.TB, base string, body any) string {
	t.Helper()
	status, out := apiPublish(t, base, body)
	if status != 200 {
		t.Fatalf("api publish %v: status %d %v", body, status, out)
	}
	return out["id"].(string)
}

func TestWelcomePingAndHealth(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_NODE_ID=node-a"))
	c, w := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	if w.Str("node") != "node-a" || w.Str("user") != "alice" || w.Str("session") == "" {
		t.Fatalf("welcome %v", w)
	}
	c.Send(`{"type":"ping","id":"p1"}`)
	if f := c.Expect("pong"); f.Str("id") != "p1" {
		t.Fatalf("pong %v", f)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		resp, err := http.Get(n.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if path == "/metrics" {
			for _, name := range []string{"gateway_connections 1", "gateway_frames_in_total", "gateway_frames_out_total",
				"gateway_messages_published_total", "gateway_messages_delivered_total", "gateway_slow_consumer_disconnects_total",
				"gateway_broker_errors_total", "gateway_delivery_latency_seconds_bucket", "gateway_subscriptions"} {
				if !strings.Contains(string(body), name) {
					t.Errorf("/metrics lacks %s", name)
				}
			}
		}
	}
}

func TestPublishSubscribe(t *testing.T) {
	n := startNode(t, testConfig(t))
	alice, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	bob, bw := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	sub := alice.Subscribe("room:1")
	if sub.Str("channel") != "room:1" || sub.Str("id") != "sub-room:1" || sub.Str("position") == "" || sub.Bool("recovered") {
		t.Fatalf("subscribed %v", sub)
	}
	ack := bob.Publish("room:1", map[string]any{"text": "hi"}, "m-1")
	if ack.Str("msg_id") != "m-1" || ack.Str("id") != "pub" {
		t.Fatalf("ack %v", ack)
	}
	m := alice.Expect("message")
	from, _ := m["from"].(map[string]any)
	if m.Str("channel") != "room:1" || m.Data() != `{"text":"hi"}` || m.Str("id") == "" || m.Str("position") == "" ||
		from["user"] != "bob" || from["session"] != bw.Str("session") {
		t.Fatalf("message %v", m)
	}
	// Without msg_id the server makes one.
	bob.Send(`{"type":"publish","id":"x","channel":"room:1","data":"plain string"}`)
	if ack := bob.Expect("ack"); ack.Str("msg_id") == "" {
		t.Fatalf("ack without msg_id %v", ack)
	}
	if m := alice.Expect("message"); m.Data() != `"plain string"` {
		t.Fatalf("message %v", m)
	}
	// The sender gets its own message when subscribed.
	bob.Subscribe("room:1")
	bob.Send(`{"type":"publish","id":"own","channel":"room:1","data":1}`)
	bob.ExpectAll("ack", "message")
	alice.Expect("message")
	// Unsubscribe stops delivery.
	alice.Send(`{"type":"unsubscribe","id":"u","channel":"room:1"}`)
	if f := alice.Expect("unsubscribed"); f.Str("channel") != "room:1" || f.Str("id") != "u" {
		t.Fatalf("unsubscribed %v", f)
	}
	bob.Send(`{"type":"publish","id":"own2","channel":"room:1","data":2}`)
	bob.ExpectAll("ack", "message")
	alice.Send(`{"type":"ping","id":"after"}`)
	if f := alice.Expect("pong"); f.Str("id") != "after" {
		t.Fatalf("got %v after unsubscribe", f)
	}
	alice.Send(`{"type":"unsubscribe","id":"u2","channel":"room:1"}`)
	if f := alice.Expect("error"); f.Str("code") != "not_found" || f.Str("id") != "u2" {
		t.Fatalf("unsubscribe twice %v", f)
	}
}

func TestSendReachesServicesOnly(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 100})
	t.Cleanup(broker.Close)
	prefix := "send"
	n := startNode(t, testConfig(t), gateway.WithBroker(broker.Node(prefix)))
	service := broker.Node(prefix)
	defer service.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inbound, err := service.SubscribeGroup(ctx, protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	c, w := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"send","id":"s1","data":{"op":"hello"},"msg_id":"k1"}`)
	if ack := c.Expect("ack"); ack.Str("msg_id") != "k1" {
		t.Fatalf("ack %v", ack)
	}
	select {
	case m := <-inbound:
		m.Ack()
		md := m.Metadata
		if string(m.Payload) != `{"op":"hello"}` || md.Get("user") != "alice" || md.Get("session") != w.Str("session") ||
			md.Get("kind") != "send" || md.Get("msg_id") != "k1" || md.Get("node") == "" {
			t.Fatalf("service got %q %v", m.Payload, md)
		}
	case <-time.After(wstest.Timeout):
		t.Fatal("the service got nothing")
	}
}

func TestAPITargets(t *testing.T) {
	n := startNode(t, testConfig(t))
	a1, w1 := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	a2, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	bob, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	a1.Subscribe("$user")
	a2.Subscribe("$user")
	bob.Subscribe("$user")
	bob.Subscribe("news")

	id := mustAPIPublish(t, n.URL, map[string]any{"user": "alice", "data": map[string]any{"n": 1}})
	for _, c := range []*wstest.Client{a1, a2} {
		m := c.Expect("message")
		if m.Str("channel") != "$user" || m.Str("id") != id || m.Data() != `{"n":1}` || m["from"] != nil {
			t.Fatalf("user message %v", m)
		}
	}
	mustAPIPublish(t, n.URL, map[string]any{"session": w1.Str("session"), "data": "only-a1"})
	if m := a1.Expect("message"); m.Str("to") != "session" || m.Data() != `"only-a1"` {
		t.Fatalf("session message %v", m)
	}
	mustAPIPublish(t, n.URL, map[string]any{"channel": "news", "data": "n1"})
	if m := bob.Expect("message"); m.Str("channel") != "news" || m.Data() != `"n1"` {
		t.Fatalf("channel message %v", m)
	}
	mustAPIPublish(t, n.URL, map[string]any{"broadcast": true, "data": "all"})
	for _, c := range []*wstest.Client{a1, a2, bob} {
		if m := c.Expect("message"); m.Str("to") != "all" || m.Data() != `"all"` {
			t.Fatalf("broadcast %v", m)
		}
	}
	// a2 and bob got nothing else: the next frame each reads is its pong.
	for _, c := range []*wstest.Client{a2, bob} {
		c.Send(`{"type":"ping","id":"end"}`)
		c.Expect("pong")
	}

	// Bad requests.
	for _, body := range []string{`not json`, `{}`, `{"data":1}`, `{"data":1,"channel":"a","user":"b"}`,
		`{"channel":"bad channel!","data":1}`, `{"channel":"a"}`, `{"channel":"a","data":1,"unknown":2}`, `[1]`} {
		req, _ := http.NewRequest("POST", n.URL+"/api/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Error struct{ Code, Message string }
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != 400 || out.Error.Code != "bad_request" || out.Error.Message == "" {
			t.Errorf("body %s: status %d, error %+v", body, resp.StatusCode, out.Error)
		}
	}
	for _, key := range []string{"", "Bearer wrong-key-0123456789", "Basic " + testAPIKey} {
		req, _ := http.NewRequest("POST", n.URL+"/api/publish", strings.NewReader(`{"channel":"news","data":1}`))
		if key != "" {
			req.Header.Set("Authorization", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("key %q: status %d", key, resp.StatusCode)
		}
	}
}

func TestJWTRefusedBeforeUpgrade(t *testing.T) {
	n := startNode(t, testConfig(t))
	expired, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := auth.SignHS256([]byte("another-secret-0123456789"), "alice", time.Hour, nil, nil)
	none := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9."
	for name, tok := range map[string]string{"missing": "", "malformed": "not.a.jwt", "expired": expired, "wrong key": wrongKey, "alg none": none} {
		_, resp, err := wstest.TryDial(t, n.URL, tok, nil)
		if err == nil || resp == nil || resp.StatusCode != 401 {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Errorf("%s token: err %v, status %d, want 401", name, err, status)
		}
	}
	// The header form works too.
	h := http.Header{"Authorization": {"Bearer " + allowAll(t, "alice")}}
	c, _, err := wstest.TryDial(t, n.URL, "", h)
	if err != nil {
		t.Fatal(err)
	}
	c.Expect("welcome")
}

func TestTokenExpiryDisconnects(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", 1500*time.Millisecond, []string{"*"}, nil))
	f := c.Expect("disconnect")
	if f.Str("code") != "token_expired" || !f.Bool("reconnect") {
		t.Fatalf("disconnect %v", f)
	}
	c.Closed()
}

func TestAuthorization(t *testing.T) {
	n := startNode(t, testConfig(t))
	// No channels claim: public channels only; no publish claim: publish nowhere.
	plain, _ := wstest.Dial(t, n.URL, token(t, "carol", time.Hour, nil, nil))
	plain.Subscribe("public")
	plain.Subscribe("public:sports")
	plain.Subscribe("$user")
	plain.Send(`{"type":"subscribe","id":"s","channel":"private"}`)
	if f := plain.Expect("error"); f.Str("code") != "forbidden" || f.Str("id") != "s" {
		t.Fatalf("subscribe private %v", f)
	}
	plain.Send(`{"type":"publish","id":"p","channel":"public","data":1}`)
	if f := plain.Expect("error"); f.Str("code") != "forbidden" || f.Str("id") != "p" {
		t.Fatalf("publish without claim %v", f)
	}
	// Patterns in claims.
	rooms, _ := wstest.Dial(t, n.URL, token(t, "dave", time.Hour, []string{"room:*"}, []string{"room:1"}))
	rooms.Subscribe("room:2")
	rooms.Publish("room:1", "ok", "")
	rooms.Send(`{"type":"publish","id":"p2","channel":"room:2","data":1}`)
	if f := rooms.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("publish outside claim %v", f)
	}
	rooms.Send(`{"type":"subscribe","id":"s2","channel":"lobby"}`)
	if f := rooms.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("subscribe outside claim %v", f)
	}
	// Nobody publishes to $user, whatever the token says.
	all, _ := wstest.Dial(t, n.URL, allowAll(t, "eve"))
	all.Send(`{"type":"publish","id":"p3","channel":"$user","data":1}`)
	if f := all.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("publish to $user %v", f)
	}
	// Subscribing twice is refused, the first subscription stays.
	all.Subscribe("x")
	all.Send(`{"type":"subscribe","id":"again","channel":"x"}`)
	if f := all.Expect("error"); f.Str("code") != "bad_request" {
		t.Fatalf("second subscribe %v", f)
	}
}

func TestAnonymous(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_ALLOW_ANONYMOUS=true", "GATEWAY_ANONYMOUS_PUBLISH=public"))
	c, w := wstest.Dial(t, n.URL, "")
	if w.Str("user") != "" {
		t.Fatalf("welcome %v", w)
	}
	c.Subscribe("public")
	c.Send(`{"type":"publish","id":"p0","channel":"public","data":"hello"}`)
	c.ExpectAll("ack", "message")
	c.Send(`{"type":"subscribe","id":"u","channel":"$user"}`)
	if f := c.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("anonymous $user %v", f)
	}
	c.Send(`{"type":"publish","id":"p","channel":"public:other","data":1}`)
	if f := c.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("anonymous publish elsewhere %v", f)
	}
}

func TestBadInput(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	cases := []struct{ frame, id string }{
		{`not json`, ""},
		{`[1,2]`, ""},
		{`"string"`, ""},
		{`{"type":"warp","id":"w"}`, "w"},
		{`{"id":"n"}`, "n"},
		{`{"type":"subscribe","id":"a"}`, "a"},
		{`{"type":"subscribe","id":"b","channel":"bad channel"}`, "b"},
		{`{"type":"subscribe","id":"c","channel":"` + strings.Repeat("x", 129) + `"}`, "c"},
		{`{"type":"publish","id":"d","channel":"x"}`, "d"},
		{`{"type":"send","id":"e"}`, "e"},
		{`{"type":"ping","id":"` + strings.Repeat("i", 65) + `"}`, ""},
		{`{"type":"publish","id":"f","channel":"x","data":1,"msg_id":"` + strings.Repeat("m", 65) + `"}`, "f"},
		{`{"type":"ping","id":7}`, ""},
		{`{"type":"subscribe","id":"g","channel":"x","since":"garbage"}`, "g"},
		{`{"type":"publish","id":"h","channel":"x","data":{broken}`, "h"}, // the id is still readable
	}
	for _, tc := range cases {
		c.Send(tc.frame)
		f := c.Expect("error")
		if f.Str("code") != "bad_request" || f.Str("id") != tc.id || f.Str("message") == "" {
			t.Errorf("frame %s: got %v, want bad_request with id %q", tc.frame, f, tc.id)
		}
	}
	// A binary frame is refused too.
	if err := c.Conn.WriteMessage(2, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if f := c.Expect("error"); f.Str("code") != "bad_request" {
		t.Fatalf("binary frame %v", f)
	}
	// The connection is still fine.
	c.Send(`{"type":"ping","id":"alive"}`)
	c.Expect("pong")

	// A frame over the limit closes the connection with 1009; other clients are unaffected.
	other, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	_ = c.Conn.WriteMessage(1, []byte(`{"type":"publish","id":"big","channel":"x","data":"`+strings.Repeat("a", 70<<10)+`"}`))
	if ce := c.Closed(); ce.Code != 1009 {
		t.Fatalf("close code %d, want 1009", ce.Code)
	}
	other.Send(`{"type":"ping","id":"still"}`)
	other.Expect("pong")
}

func TestResumeOnOneNode(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_HISTORY_SIZE=5", "GATEWAY_HISTORY_MAX_REPLAY=3"))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	sub := c.Subscribe("feed")
	start := sub.Str("position")
	var positions []string
	for i := 0; i < 4; i++ {
		mustAPIPublish(t, n.URL, map[string]any{"channel": "feed", "data": i})
		positions = append(positions, c.Expect("message").Str("position"))
	}
	// Resume after the second message: the third and fourth are replayed, then subscribed, then live.
	r, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "feed", "since": positions[1]})
	for i, want := range []string{"2", "3"} {
		m := r.Expect("message")
		if m.Data() != want || m.Str("position") != positions[2+i] {
			t.Fatalf("replayed %v, want data %s at %s", m, want, positions[2+i])
		}
	}
	s := r.Expect("subscribed")
	if !s.Bool("recovered") || s.Str("position") != positions[3] {
		t.Fatalf("subscribed after replay %v", s)
	}
	mustAPIPublish(t, n.URL, map[string]any{"channel": "feed", "data": "live"})
	if m := r.Expect("message"); m.Data() != `"live"` {
		t.Fatalf("live %v", m)
	}
	// Resume from the last position: nothing to replay, recovered.
	r2, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	last := c.Expect("message").Str("position")
	if s := r2.Subscribe("feed", last); !s.Bool("recovered") || s.Str("position") != last {
		t.Fatalf("resume from the last %v", s)
	}
	// More than max_replay to replay: recovered false, nothing replayed.
	r3, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	if s := r3.Subscribe("feed", positions[0]); s.Bool("recovered") || s.Str("position") != last {
		t.Fatalf("resume beyond max_replay %v", s)
	}
	// History trimmed past the position (size 5): recovered false.
	for i := 0; i < 6; i++ {
		mustAPIPublish(t, n.URL, map[string]any{"channel": "feed", "data": i})
	}
	r4, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	if s := r4.Subscribe("feed", start); s.Bool("recovered") {
		t.Fatalf("resume from trimmed history %v", s)
	}
	// A position of another channel, or of another process, is refused or not recovered.
	r5, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	r5.Send(map[string]any{"type": "subscribe", "id": "o", "channel": "other", "since": last})
	if f := r5.Expect("error"); f.Str("code") != "bad_request" {
		t.Fatalf("position of another channel %v", f)
	}
	foreign := protocol.Position{Epoch: "elsewhere", Lo: 3}.ForChannel("feed")
	if s := r5.Subscribe("feed", foreign); s.Bool("recovered") {
		t.Fatalf("foreign position %v", s)
	}
}

func TestResumeUserChannel(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("$user")
	mustAPIPublish(t, n.URL, map[string]any{"user": "alice", "data": 1})
	p1 := c.Expect("message").Str("position")
	mustAPIPublish(t, n.URL, map[string]any{"user": "alice", "data": 2})
	c.Expect("message")
	r, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "$user", "since": p1})
	if m := r.Expect("message"); m.Data() != "2" || m.Str("channel") != "$user" {
		t.Fatalf("replayed %v", m)
	}
	if s := r.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("subscribed %v", s)
	}
	// Bob cannot use Alice's position on his own $user.
	b, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	b.Send(map[string]any{"type": "subscribe", "id": "b", "channel": "$user", "since": p1})
	if f := b.Expect("error"); f.Str("code") != "bad_request" {
		t.Fatalf("another user's position %v", f)
	}
}

func TestDedupeMsgID(t *testing.T) {
	n := startNode(t, testConfig(t))
	sub, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	sub.Subscribe("d")
	pub, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	pub.Publish("d", "once", "same")
	pub.Publish("d", "once", "same") // acked again
	other, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	other.Publish("d", "once", "same") // same user, another connection
	carol, _ := wstest.Dial(t, n.URL, allowAll(t, "carol"))
	carol.Publish("d", "carol's", "same") // another user's key is another key
	if m := sub.Expect("message"); m.Data() != `"once"` {
		t.Fatalf("first %v", m)
	}
	if m := sub.Expect("message"); m.Data() != `"carol's"` {
		t.Fatalf("the duplicate was delivered: %v", m)
	}
	// API msg_id dedupe.
	mustAPIPublish(t, n.URL, map[string]any{"channel": "d", "data": "api", "msg_id": "k"})
	mustAPIPublish(t, n.URL, map[string]any{"channel": "d", "data": "api", "msg_id": "k"})
	mustAPIPublish(t, n.URL, map[string]any{"channel": "d", "data": "end"})
	if m := sub.Expect("message"); m.Data() != `"api"` {
		t.Fatalf("api %v", m)
	}
	if m := sub.Expect("message"); m.Data() != `"end"` {
		t.Fatalf("api duplicate delivered: %v", m)
	}
}

func TestOriginCheck(t *testing.T) {
	n := startNode(t, testConfig(t))
	tok := allowAll(t, "alice")
	host := strings.TrimPrefix(n.URL, "http://")
	if _, resp, err := wstest.TryDial(t, n.URL, tok, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin accepted: %v", err)
	} else {
		expectJSONError(t, resp, "forbidden")
	}
	if _, _, err := wstest.TryDial(t, n.URL, tok, http.Header{"Origin": {"http://" + host}}); err != nil {
		t.Fatalf("same-host origin refused: %v", err)
	}
	n2 := startNode(t, testConfig(t, "GATEWAY_ALLOWED_ORIGINS=https://app.example"))
	if _, _, err := wstest.TryDial(t, n2.URL, tok, http.Header{"Origin": {"https://app.example"}}); err != nil {
		t.Fatalf("listed origin refused: %v", err)
	}
	if _, resp, err := wstest.TryDial(t, n2.URL, tok, http.Header{"Origin": {"https://other.example"}}); err == nil || resp.StatusCode != 403 {
		t.Fatalf("unlisted origin accepted: %v", err)
	} else {
		expectJSONError(t, resp, "forbidden")
	}
	// A request that is not a WebSocket handshake gets the same JSON shape (gorilla's refusal).
	resp, err := http.Get(n.URL + "/ws?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 {
		t.Fatalf("plain GET /ws: %d", resp.StatusCode)
	}
	expectJSONError(t, resp, "bad_request")
}

// smallBuffers dials with a small socket receive buffer, so a client that does not read backs up
// into the server quickly.
func smallBuffers(t *testing.T, base, tok string) *wstest.Client {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	c, _ := wstest.DialConn(t, conn, base, tok)
	return c
}

func TestSlowConsumerIsDisconnected(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_WS_SEND_BUFFER=16", "GATEWAY_WS_WRITE_TIMEOUT=30s"))
	slow := smallBuffers(t, n.URL, allowAll(t, "slow"))
	slow.Subscribe("firehose")
	fast, _ := wstest.Dial(t, n.URL, allowAll(t, "fast"))
	fast.Subscribe("firehose")
	payload := strings.Repeat("x", 16<<10)
	// Publish until the slow client is disconnected (bounded); the fast one reads everything.
	sent := 0
	for ; sent < 2000; sent++ {
		mustAPIPublish(t, n.URL, map[string]any{"channel": "firehose", "data": payload})
		fast.Expect("message")
		if metricSum(n.Gateway, "gateway_slow_consumer_disconnects_total") > 0 {
			break
		}
	}
	if sent == 2000 {
		t.Fatal("the slow client was never disconnected")
	}
	// The slow client now reads: messages in order, then disconnect slow_consumer, then close.
	got := 0
	for {
		f := slow.Next()
		if f.Str("type") == "message" {
			got++
			continue
		}
		if f.Str("type") != "disconnect" || f.Str("code") != "slow_consumer" || !f.Bool("reconnect") {
			t.Fatalf("got %v", f)
		}
		break
	}
	slow.Closed()
	if got == 0 || got > sent+1 {
		t.Fatalf("slow client read %d messages of %d", got, sent+1)
	}
	// The fast client is unaffected.
	fast.Send(`{"type":"ping","id":"ok"}`)
	fast.Expect("pong")
}

// metricSum is the sum of the values (counters and gauges) of the metric name of node g.
func metricSum(g *gateway.Gateway, name string) float64 {
	mfs, _ := g.Metrics().Registry.Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func TestDrain(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_DRAIN_PERIOD=400ms"))
	const clients = 20
	cs := make([]*wstest.Client, clients)
	for i := range cs {
		cs[i], _ = wstest.Dial(t, n.URL, allowAll(t, fmt.Sprintf("u%d", i)))
	}
	type got struct {
		at    time.Time
		frame wstest.Frame
		err   error
	}
	results := make(chan got, clients)
	for _, c := range cs {
		go func() {
			f, err := c.Read(wstest.Timeout)
			results <- got{time.Now(), f, err}
		}()
	}
	done := make(chan struct{})
	go func() { defer close(done); n.Drain() }()

	// While draining: not ready, and new connections are refused.
	wstest.WaitFor(t, func() error {
		resp, err := http.Get(n.URL + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			return fmt.Errorf("/readyz while draining: %d", resp.StatusCode)
		}
		return nil
	})
	if _, resp, err := wstest.TryDial(t, n.URL, allowAll(t, "late"), nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("connection accepted while draining: %v", err)
	}
	var first, last time.Time
	for range cs {
		r := <-results
		if r.err != nil || r.frame.Str("type") != "disconnect" || r.frame.Str("code") != "shutdown" || !r.frame.Bool("reconnect") {
			t.Fatalf("got %v, %v; want disconnect shutdown", r.frame, r.err)
		}
		if first.IsZero() || r.at.Before(first) {
			first = r.at
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	for _, c := range cs {
		c.Closed()
	}
	select {
	case <-done:
	case <-time.After(wstest.Timeout):
		t.Fatal("Drain did not return")
	}
	// Spread over the period, not all at once (a lower bound: a slow machine only widens it).
	if spread := last.Sub(first); spread < 100*time.Millisecond {
		t.Fatalf("disconnects spread over %v only", spread)
	}
}

// failingBroker refuses every publish, like a broker that is down.
type failingBroker struct {
	transports.Broker
	fails atomic.Int64
}

func (f *failingBroker) Publish(topic string, _ ...*message.Message) error {
	if protocol.IsChannelTopic(topic) {
		f.fails.Add(1)
	}
	return errors.New("connection refused")
}

func TestBrokerDownAnswersUnavailable(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	fb := &failingBroker{Broker: broker.Node("down")}
	n := startNode(t, testConfig(t, "GATEWAY_ROUTER_RETRY_ATTEMPTS=2", "GATEWAY_ROUTER_RETRY_INITIAL=1ms"), gateway.WithBroker(fb))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"publish","id":"p","channel":"x","data":1,"msg_id":"k"}`)
	if f := c.Expect("error"); f.Str("code") != "unavailable" || f.Str("id") != "p" {
		t.Fatalf("publish with the broker down %v", f)
	}
	if got := fb.fails.Load(); got != 3 {
		t.Fatalf("broker publish tried %d times, want 1 + 2 retries", got)
	}
	// The failed attempt did not keep the msg_id: a retry is not taken for a duplicate.
	c.Send(`{"type":"publish","id":"p2","channel":"x","data":1,"msg_id":"k"}`)
	if f := c.Expect("error"); f.Str("code") != "unavailable" || fb.fails.Load() != 6 {
		t.Fatalf("retry of the same msg_id %v after %d attempts", f, fb.fails.Load())
	}
	if status, _ := apiPublish(t, n.URL, map[string]any{"channel": "x", "data": 1}); status != 503 {
		t.Fatalf("api publish with the broker down: %d", status)
	}
}

func TestPanicInMiddlewareAnswersInternal(t *testing.T) {
	explode := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if msg.Metadata.Get(protocol.MetaChannel) == "boom" {
				panic("operator middleware bug")
			}
			return h(msg)
		}
	}
	n := startNode(t, testConfig(t), gateway.WithMiddleware(explode))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"publish","id":"p","channel":"boom","data":1}`)
	if f := c.Expect("error"); f.Str("code") != "internal" || f.Str("id") != "p" {
		t.Fatalf("panic %v", f)
	}
	c.Publish("fine", 1, "") // the node and the connection carry on
}

// A replay longer than the send buffer paces itself to the client rather than counting it slow.
func TestLongReplayIsPaced(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_WS_SEND_BUFFER=16"))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	start := c.Subscribe("long").Str("position")
	c.Conn.Close() // gone, like a client that lost its connection
	const total = 300
	pub, _ := wstest.Dial(t, n.URL, allowAll(t, "writer"))
	for i := 0; i < total; i++ {
		pub.Publish("long", i, "")
	}
	r, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "long", "since": start})
	for i := 0; i < total; i++ {
		if m := r.Expect("message"); m.Data() != fmt.Sprint(i) {
			t.Fatalf("replayed %v, want %d", m, i)
		}
	}
	if s := r.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("subscribed %v", s)
	}
}

// killable lets a test end the broker's channel subscriptions, as a broker does when it gives
// one up (a Redis reader overtaken by trimming, a broker that dropped the consumer).
type killable struct {
	*memory.Node
	mu    sync.Mutex
	kills []context.CancelFunc
}

func (k *killable) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return k.Node.Subscribe(k.killableContext(ctx), topic)
}

// SubscribeFunc is the subscription the Feed uses (transports.FuncSubscriber).
func (k *killable) SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error {
	return k.Node.SubscribeFunc(k.killableContext(ctx), topic, deliver, ended)
}

func (k *killable) killableContext(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	k.mu.Lock()
	k.kills = append(k.kills, cancel)
	k.mu.Unlock()
	return ctx
}

func (k *killable) killAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, kill := range k.kills {
		kill()
	}
}

func TestLostBrokerSubscriptionMakesClientsResume(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 100})
	t.Cleanup(broker.Close)
	kb := &killable{Node: broker.Node("lost")}
	n := startNode(t, testConfig(t), gateway.WithBroker(kb))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("news")
	mustAPIPublish(t, n.URL, map[string]any{"channel": "news", "data": 1})
	last := c.Expect("message").Str("position")

	kb.killAll()
	if f := c.Expect("disconnect"); f.Str("code") != "resubscribe" || !f.Bool("reconnect") {
		t.Fatalf("disconnect %v", f)
	}
	mustAPIPublish(t, n.URL, map[string]any{"channel": "news", "data": 2})
	r, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "news", "since": last})
	if m := r.Expect("message"); m.Data() != "2" {
		t.Fatalf("replayed %v", m)
	}
	if s := r.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("subscribed %v", s)
	}
	mustAPIPublish(t, n.URL, map[string]any{"channel": "news", "data": 3})
	if m := r.Expect("message"); m.Data() != "3" {
		t.Fatalf("live after the new subscription %v", m)
	}
}

func TestLifecycleEvents(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	n := startNode(t, testConfig(t, "GATEWAY_NODE_ID=ev-node"), gateway.WithBroker(broker.Node("ev")))
	service := broker.Node("ev")
	defer service.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := service.SubscribeGroup(ctx, protocol.TopicEvents, "presence")
	if err != nil {
		t.Fatal(err)
	}
	c, w := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("room")
	c.Send(`{"type":"unsubscribe","id":"u","channel":"room"}`)
	c.Expect("unsubscribed")
	c.Conn.Close()
	want := []string{"connected", "subscribed:room", "unsubscribed:room", "disconnected"}
	for i := 0; i < len(want); i++ {
		w2 := want[i]
		select {
		case m := <-events:
			m.Ack()
			var ev struct{ Type, User, Session, Node, Channel, Reason string }
			if err := json.Unmarshal(m.Payload, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Type == "node_alive" { // the node's heartbeat
				if ev.Node != "ev-node" {
					t.Fatalf("heartbeat %s", m.Payload)
				}
				i--
				continue
			}
			got := ev.Type
			if ev.Channel != "" {
				got += ":" + ev.Channel
			}
			if got != w2 || ev.User != "alice" || ev.Session != w.Str("session") || ev.Node != "ev-node" ||
				m.Metadata.Get("session") != ev.Session {
				t.Fatalf("event %d: %s %+v, want %s", i, m.Payload, m.Metadata, w2)
			}
			if ev.Type == "disconnected" && ev.Reason == "" {
				t.Fatalf("disconnected without a reason: %s", m.Payload)
			}
		case <-time.After(wstest.Timeout):
			t.Fatalf("no event %s", w2)
		}
	}
}
