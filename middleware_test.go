package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/signing"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports/memory"
)

// flakyBroker fails the first failures channel publishes, then works.
type flakyBroker struct {
	*memory.Node
	failures atomic.Int64
	attempts atomic.Int64
}

func (f *flakyBroker) Publish(topic string, msgs ...*message.Message) error {
	if protocol.IsChannelTopic(topic) {
		f.attempts.Add(1)
		if f.failures.Add(-1) >= 0 {
			return errors.New("broker hiccup")
		}
	}
	return f.Node.Publish(topic, msgs...)
}

// PublishPositions fails like Publish: the node publishes channel messages through it when the
// broker has it (transports.PositionPublisher), and the embedded Node's would bypass Publish.
func (f *flakyBroker) PublishPositions(topic string, msgs ...*message.Message) ([]protocol.Position, error) {
	if protocol.IsChannelTopic(topic) {
		f.attempts.Add(1)
		if f.failures.Add(-1) >= 0 {
			return nil, errors.New("broker hiccup")
		}
	}
	return f.Node.PublishPositions(topic, msgs...)
}

func TestRetryOfAFlakyBroker(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10})
	t.Cleanup(broker.Close)
	fb := &flakyBroker{Node: broker.Node("flaky")}
	fb.failures.Store(2)
	n := startNode(t, testConfig(t, "GATEWAY_ROUTER_RETRY_ATTEMPTS=3", "GATEWAY_ROUTER_RETRY_INITIAL=1ms"), gateway.WithBroker(fb))
	sub, _ := wstest.Dial(t, n.URL, allowAll(t, "bob"))
	sub.Subscribe("f")
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	if ack := c.Publish("f", "survives", "m1"); ack.Str("msg_id") != "m1" {
		t.Fatalf("ack %v", ack)
	}
	expectOnly(t, sub, `"survives"`)
	c.Send(`{"type":"ping","id":"one-ack"}`)
	if f := c.Next(); f.Str("type") != "pong" {
		t.Fatalf("a second reply %v", f)
	}
	if got := fb.attempts.Load(); got != 3 {
		t.Fatalf("%d broker attempts, want 3 (2 failures, 1 success)", got)
	}
}

func TestPoisonTopicAndCircuitBreaker(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10})
	t.Cleanup(broker.Close)
	fb := &flakyBroker{Node: broker.Node("poison")}
	fb.failures.Store(1 << 30) // always
	n := startNode(t, testConfig(t, "GATEWAY_ROUTER_RETRY_ATTEMPTS=1", "GATEWAY_ROUTER_RETRY_INITIAL=1ms",
		"GATEWAY_ROUTER_POISON_TOPIC=poison", "GATEWAY_ROUTER_BREAKER_FAILURES=2", "GATEWAY_ROUTER_BREAKER_OPEN_FOR=1h",
		"GATEWAY_EVENTS_DISABLED=true"), // events would share the open breaker and the poison topic
		gateway.WithBroker(fb))
	ops := broker.Node("poison")
	defer ops.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	poison, err := ops.SubscribeGroup(ctx, "poison", "ops")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	for i, id := range []string{"p1", "p2", "p3"} {
		c.Send(`{"type":"publish","id":"` + id + `","channel":"doomed","data":{"n":1}}`)
		if f := c.Expect("error"); f.Str("code") != "unavailable" || f.Str("id") != id {
			t.Fatalf("publish %d: %v", i, f)
		}
		select {
		case m := <-poison:
			m.Ack()
			if string(m.Payload) != `{"n":1}` || m.Metadata.Get(middleware.ReasonForPoisonedKey) == "" || m.Metadata.Get("channel") != "doomed" {
				t.Fatalf("poisoned %q %v", m.Payload, m.Metadata)
			}
		case <-time.After(wstest.Timeout):
			t.Fatalf("publish %d did not reach the poison topic", i)
		}
	}
	// Two messages tried the broker twice each; then the breaker opened and the third failed fast.
	if got := fb.attempts.Load(); got != 4 {
		t.Fatalf("%d broker attempts, want 4: the breaker should have spared the third message", got)
	}
	// A forbidden publish is the client's fault: not poisoned, not counted by the breaker.
	limited, _ := wstest.Dial(t, n.URL, token(t, "eve", time.Hour, []string{"*"}, []string{"other"}))
	limited.Send(`{"type":"publish","id":"f","channel":"doomed","data":1}`)
	if f := limited.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("forbidden %v", f)
	}
	select {
	case m := <-poison:
		t.Fatalf("a forbidden publish was poisoned: %v", m.Metadata)
	default:
	}
}

func TestDedupeStoreInRedisAcrossNodes(t *testing.T) {
	nodetest.SkipUnreachable(t, "Redis", nodetest.RedisAddr)
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	prefix := nodetest.SharedPrefix(t)
	env := []string{"GATEWAY_ROUTER_DEDUPE_STORE=redis", "GATEWAY_TOPIC_PREFIX=" + prefix}
	n1 := startNode(t, testConfig(t, env...), gateway.WithBroker(broker.Node(prefix)))
	n2 := startNode(t, testConfig(t, env...), gateway.WithBroker(broker.Node(prefix)))
	svc := broker.Node(prefix)
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inbound, err := svc.SubscribeGroup(ctx, protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := wstest.Dial(t, n1.URL, allowAll(t, "alice"))
	a2, _ := wstest.Dial(t, n2.URL, allowAll(t, "alice"))
	a1.Send(`{"type":"send","id":"s1","data":"once","msg_id":"k"}`)
	a1.Expect("ack")
	a2.Send(`{"type":"send","id":"s2","data":"once","msg_id":"k"}`)
	a2.Expect("ack")
	a2.Send(`{"type":"send","id":"s3","data":"next","msg_id":"k2"}`)
	a2.Expect("ack")
	for _, want := range []string{"once", "next"} {
		select {
		case m := <-inbound:
			m.Ack()
			if string(m.Payload) != `"`+want+`"` {
				t.Fatalf("service got %s, want %q (a duplicate went through?)", m.Payload, want)
			}
		case <-time.After(wstest.Timeout):
			t.Fatalf("service did not get %q", want)
		}
	}
}

func TestSignaturesRequired(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10})
	t.Cleanup(broker.Close)
	keys := []string{"k2:new-secret-0123456789", "k1:old-secret-0123456789"}
	n := startNode(t, testConfig(t, "GATEWAY_ROUTER_SIGNING_KEYS="+keys[0]+","+keys[1], "GATEWAY_ROUTER_REQUIRE_SIGNATURE=true",
		"GATEWAY_ROUTER_POISON_TOPIC=poison"), gateway.WithBroker(broker.Node("sig")))
	svc := broker.Node("sig")
	defer svc.Close()
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("news")

	emit := func(payload string, sign *signing.Keys) {
		m := message.NewMessage(watermill.NewUUID(), []byte(payload))
		m.Metadata.Set(protocol.MetaChannel, "news")
		sign.Sign(protocol.ChannelTopic("news"), m)
		if err := svc.Publish(protocol.ChannelTopic("news"), m); err != nil {
			t.Fatal(err)
		}
	}
	oldOnly, _ := signing.ParseKeys(keys[1:])
	forged, _ := signing.ParseKeys([]string{"k2:not-the-right-secret-000"})
	emit(`"unsigned"`, nil)
	emit(`"forged"`, forged)
	emit(`"old key still verifies"`, oldOnly)
	if m := c.Expect("message"); m.Data() != `"old key still verifies"` {
		t.Fatalf("got %v", m)
	}
	// What the gateway itself publishes is signed with the current key.
	c.Send(`{"type":"publish","id":"p","channel":"news","data":"from a client"}`)
	got := c.ExpectAll("ack", "message")
	if got["message"].Data() != `"from a client"` {
		t.Fatalf("client message %v", got)
	}
	if v := metricSum(n.Gateway, "gateway_signature_rejected_total"); v != 2 {
		t.Fatalf("%v messages rejected, want 2", v)
	}
}

func TestRateAndConnectionLimits(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_LIMITS_PUBLISH_RATE=0.001", "GATEWAY_LIMITS_PUBLISH_BURST=2",
		"GATEWAY_LIMITS_USER_PUBLISH_RATE=0.001", "GATEWAY_LIMITS_USER_PUBLISH_BURST=3",
		"GATEWAY_LIMITS_CONNECTIONS_PER_USER=2", "GATEWAY_LIMITS_CONNECTIONS_PER_NODE=3"))
	a1, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	a1.Publish("x", 1, "")
	a1.Publish("x", 2, "")
	a1.Send(`{"type":"publish","id":"third","channel":"x","data":3}`)
	if f := a1.Expect("error"); f.Str("code") != "rate_limited" || f.Str("id") != "third" {
		t.Fatalf("per-connection limit %v", f)
	}
	// The user's burst of 3 is shared: a second connection has one publish left.
	a2, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	a2.Publish("x", 4, "")
	a2.Send(`{"type":"publish","id":"user","channel":"x","data":5}`)
	if f := a2.Expect("error"); f.Str("code") != "rate_limited" {
		t.Fatalf("per-user limit %v", f)
	}
	// A third connection of alice is refused before the upgrade.
	if _, resp, err := wstest.TryDial(t, n.URL, allowAll(t, "alice"), nil); err == nil || resp.StatusCode != 429 {
		t.Fatalf("third connection of a user: %v", err)
	}
	// The node holds 3 connections at most.
	wstest.Dial(t, n.URL, allowAll(t, "bob"))
	if _, resp, err := wstest.TryDial(t, n.URL, allowAll(t, "carol"), nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("connection over the node limit: %v", err)
	}
	// A closed connection gives its place back.
	a2.Conn.Close()
	wstest.WaitFor(t, func() error {
		c, _, err := wstest.TryDial(t, n.URL, allowAll(t, "carol"), nil)
		if err != nil {
			return err
		}
		c.Conn.Close()
		return nil
	})
}

func TestBatchPublish(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, w := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("a")
	c.Subscribe("$user")
	post := func(body any) *http.Response {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", n.URL+"/api/batch", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := post(map[string]any{"messages": []any{}}); resp.StatusCode != 400 {
		t.Fatalf("empty batch: %d", resp.StatusCode)
	}
	resp := post(map[string]any{"messages": []map[string]any{
		{"channel": "a", "data": 1},
		{"channel": "bad channel", "data": 2},
		{"user": "alice", "data": 3},
		{"session": w.Str("session"), "data": 4},
	}})
	var res struct {
		Results []struct {
			ID    string
			Error *struct{ Code string }
		}
	}
	_ = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(res.Results) != 4 || res.Results[0].ID == "" || res.Results[1].Error == nil ||
		res.Results[1].Error.Code != "bad_request" || res.Results[2].ID == "" || res.Results[3].ID == "" {
		t.Fatalf("batch: %d %+v", resp.StatusCode, res)
	}
	// Three topics (the channel, alice's channel, the direct topic): no order between them.
	got := map[string]bool{}
	for range 3 {
		got[c.Expect("message").Data()] = true
	}
	if !got["1"] || !got["3"] || !got["4"] {
		t.Fatalf("got %v, want 1, 3 and 4", got)
	}
}
