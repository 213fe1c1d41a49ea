package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	jsbroker "github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/memory"
	natsbroker "github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/redis"
)

const (
	testSecret = "test-secret-0123456789abcdef"
	testAPIKey = "test-api-key-0123456789"
	// wait bounds every wait for something that should arrive (the machine may be loaded).
	wait = 30 * time.Second
)

func testConfig(t testing.TB, env ...string) *configs.Config {
	t.Helper()
	cfg, err := configs.Load("", append([]string{
		"GATEWAY_JWT_SECRET=" + testSecret,
		"GATEWAY_API_KEY=" + testAPIKey,
		"GATEWAY_DRAIN_PERIOD=100ms",
		"GATEWAY_NODE_ID=node-a",
	}, env...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// cluster is one gateway node and the memory broker it shares with services.
type cluster struct {
	t      *testing.T
	broker *memory.Broker
	prefix string
	URL    string
}

// startNode starts a gateway node on cfg with broker b, served by an httptest server.
func startNode(t *testing.T, cfg *configs.Config, opts ...gateway.Option) string {
	t.Helper()
	_, url := nodetest.InProcess(t, cfg, opts...)
	return url
}

func newCluster(t *testing.T, env ...string) *cluster {
	t.Helper()
	broker := memory.NewBroker(memory.Config{HistorySize: 1000})
	t.Cleanup(broker.Close)
	c := &cluster{t: t, broker: broker, prefix: "svc"}
	c.URL = startNode(t, testConfig(t, env...), gateway.WithBroker(broker.Node(c.prefix)))
	return c
}

// service is a Service on another node of the cluster's broker.
func (c *cluster) service(opts ...service.Option) *service.Service {
	c.t.Helper()
	svc, err := service.New(c.broker.Node(c.prefix), nil, opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = svc.Close() })
	return svc
}

func (c *cluster) dial(user string) (*wstest.Client, string) {
	c.t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	if err != nil {
		c.t.Fatal(err)
	}
	cl, w := wstest.Dial(c.t, c.URL, tok)
	return cl, w.Str("session")
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	return ctx
}

// nothingElse checks that the next frame each client reads is the pong of a ping sent now.
func nothingElse(t *testing.T, clients ...*wstest.Client) {
	t.Helper()
	for _, c := range clients {
		c.Send(`{"type":"ping","id":"end"}`)
		if f := c.Next(); f.Str("type") != "pong" {
			t.Fatalf("unexpected frame %v", f)
		}
	}
}

// must checks an emit and returns its id: must(t)(svc.ToChannel(...)).
func must(t *testing.T) func(id string, err error) string {
	return func(id string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if id == "" {
			t.Fatal("empty message id")
		}
		return id
	}
}

// receive takes the next value of ch within wait.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	case <-time.After(wait):
		t.Fatal("nothing received in time")
	}
	var zero T
	return zero
}

func TestEmitTargets(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	a1, s1 := c.dial("alice")
	a2, _ := c.dial("alice")
	bob, _ := c.dial("bob")
	carol, _ := c.dial("carol") // subscribed to nothing
	a1.Subscribe("$user")
	a2.Subscribe("$user")
	bob.Subscribe("$user")
	bob.Subscribe("news")

	id := must(t)(svc.ToChannel(ctx(t), "news", map[string]any{"n": 1}))
	if m := bob.Expect("message"); m.Str("channel") != "news" || m.Str("id") != id || m.Data() != `{"n":1}` || m["from"] != nil {
		t.Fatalf("channel message %v", m)
	}

	id = must(t)(svc.ToUser(ctx(t), "alice", "hi"))
	for _, cl := range []*wstest.Client{a1, a2} {
		if m := cl.Expect("message"); m.Str("channel") != "$user" || m.Str("id") != id || m.Data() != `"hi"` {
			t.Fatalf("user message %v", m)
		}
	}

	id = must(t)(svc.ToSession(ctx(t), s1, []byte(`{"raw":true}`)))
	if m := a1.Expect("message"); m.Str("to") != "session" || m.Str("id") != id || m.Data() != `{"raw":true}` {
		t.Fatalf("session message %v", m)
	}

	// Bytes that are not JSON reach clients base64-encoded; a RawMessage as it is.
	must(t)(svc.ToSession(ctx(t), s1, []byte{0xff, 0x00}))
	if m := a1.Expect("message"); m.Str("encoding") != "base64" || m.Data() != `"/wA="` {
		t.Fatalf("binary session message %v", m)
	}

	id = must(t)(svc.Broadcast(ctx(t), json.RawMessage(`[1,2]`)))
	for _, cl := range []*wstest.Client{a1, a2, bob, carol} {
		if m := cl.Expect("message"); m.Str("to") != "all" || m.Str("id") != id || m.Data() != `[1,2]` {
			t.Fatalf("broadcast %v", m)
		}
	}
	// A session that is not connected anywhere: accepted by the broker, delivered to no one.
	must(t)(svc.ToSession(ctx(t), "gone", "x"))
	nothingElse(t, a1, a2, bob, carol)
}

func TestEmitMetadata(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	watch, err := svc.ChannelMessages(ctx(t), "meta")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	id := must(t)(svc.ToChannel(ctx(t), "meta", "x", service.WithMsgID("k-1"), service.WithMetadata("trace", "t-1")))
	m := receive(t, watch)
	m.Ack()
	md := m.Metadata
	if m.UUID != id || m.Kind() != "service" || m.Target() != "channel" || m.Channel() != "meta" || m.MsgID() != "k-1" ||
		!m.Idempotent() || md.Get("trace") != "t-1" || m.SentAt().Before(before.Add(-time.Second)) || m.Position() == "" ||
		m.User() != "" || m.Session() != "" || string(m.Data()) != `"x"` {
		t.Fatalf("metadata %v payload %s", md, m.Data())
	}
	// Without WithMsgID there is no msg_id, as on the API.
	uw, err := svc.ChannelMessages(ctx(t), protocol.UserChannelFor("alice"))
	if err != nil {
		t.Fatal(err)
	}
	id = must(t)(svc.ToUser(ctx(t), "alice", 2))
	m = receive(t, uw)
	m.Ack()
	if m.UUID != id || m.MsgID() != "" || m.Idempotent() || m.Target() != "user" || m.User() != "alice" || m.Channel() != "$user:alice" {
		t.Fatalf("user message metadata %v", m.Metadata)
	}
	// The UUID of a msg_id is the one the HTTP API gives the same msg_id.
	if got, want := service.MsgUUID("k-1"), protocol.IdempotentUUID("api\x00k-1"); got != want {
		t.Fatalf("MsgUUID %s, want %s", got, want)
	}
}

func TestEmitRefusesBadArguments(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	long := strings.Repeat("x", 300)
	for name, emit := range map[string]func() (string, error){
		"bad channel":     func() (string, error) { return svc.ToChannel(ctx(t), "bad channel!", 1) },
		"user channel":    func() (string, error) { return svc.ToChannel(ctx(t), "$user:alice", 1) },
		"empty channel":   func() (string, error) { return svc.ToChannel(ctx(t), "", 1) },
		"empty user":      func() (string, error) { return svc.ToUser(ctx(t), "", 1) },
		"long user":       func() (string, error) { return svc.ToUser(ctx(t), long, 1) },
		"empty session":   func() (string, error) { return svc.ToSession(ctx(t), "", 1) },
		"long session":    func() (string, error) { return svc.ToSession(ctx(t), long, 1) },
		"empty data":      func() (string, error) { return svc.Broadcast(ctx(t), []byte{}) },
		"nil raw":         func() (string, error) { return svc.Broadcast(ctx(t), json.RawMessage(nil)) },
		"unencodable":     func() (string, error) { return svc.Broadcast(ctx(t), func() {}) },
		"long msg_id":     func() (string, error) { return svc.Broadcast(ctx(t), 1, service.WithMsgID(long)) },
		"bad utf8 msg_id": func() (string, error) { return svc.Broadcast(ctx(t), 1, service.WithMsgID("\xff")) },
		"reserved key":    func() (string, error) { return svc.Broadcast(ctx(t), 1, service.WithMetadata("target", "x")) },
	} {
		if id, err := emit(); !errors.Is(err, service.ErrInvalid) || id != "" {
			t.Errorf("%s: id %q, err %v, want ErrInvalid", name, id, err)
		}
	}
	if _, err := svc.ChannelMessages(ctx(t), "bad channel!"); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("ChannelMessages of a bad channel: %v", err)
	}
	if _, err := svc.Inbound(ctx(t), ""); !errors.Is(err, service.ErrInvalid) {
		t.Errorf("Inbound without group: %v", err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := svc.Broadcast(done, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("emit with a done context: %v", err)
	}
	// Nothing of that was delivered.
	cl, _ := c.dial("alice")
	must(t)(svc.Broadcast(ctx(t), "only"))
	if m := cl.Expect("message"); m.Data() != `"only"` {
		t.Fatalf("got %v", m)
	}
}

func TestWithMsgIDIsDeliveredOnce(t *testing.T) {
	c := newCluster(t)
	svc, replica := c.service(), c.service()
	sub, session := c.dial("bob")
	sub.Subscribe("d")
	sub.Subscribe("$user")

	first := must(t)(svc.ToChannel(ctx(t), "d", "once", service.WithMsgID("same")))
	again := must(t)(svc.ToChannel(ctx(t), "d", "once", service.WithMsgID("same")))
	other := must(t)(replica.ToChannel(ctx(t), "d", "once", service.WithMsgID("same"))) // another replica
	if first != again || first != other || first != service.MsgUUID("same") {
		t.Fatalf("ids %s %s %s", first, again, other)
	}
	// The HTTP API with the same msg_id is the same message.
	body, _ := json.Marshal(map[string]any{"channel": "d", "data": "api", "msg_id": "same"})
	req, _ := http.NewRequest("POST", c.URL+"/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != 200 || out["id"] != first {
		t.Fatalf("api publish: %d %v, want id %s", resp.StatusCode, out, first)
	}
	must(t)(svc.ToChannel(ctx(t), "d", "end"))
	if m := sub.Expect("message"); m.Data() != `"once"` || m.Str("id") != first {
		t.Fatalf("first %v", m)
	}
	if m := sub.Expect("message"); m.Data() != `"end"` {
		t.Fatalf("a duplicate was delivered: %v", m)
	}

	// Session, user and broadcast targets too.
	for _, emit := range []func(*service.Service) (string, error){
		func(s *service.Service) (string, error) {
			return s.ToSession(ctx(t), session, "s", service.WithMsgID("s-key"))
		},
		func(s *service.Service) (string, error) {
			return s.ToUser(ctx(t), "bob", "u", service.WithMsgID("u-key"))
		},
		func(s *service.Service) (string, error) { return s.Broadcast(ctx(t), "b", service.WithMsgID("b-key")) },
	} {
		id1 := must(t)(emit(svc))
		id2 := must(t)(emit(replica))
		if id1 != id2 {
			t.Fatalf("ids %s %s", id1, id2)
		}
		if m := sub.Expect("message"); m.Str("id") != id1 {
			t.Fatalf("got %v", m)
		}
	}
	nothingElse(t, sub)
}

func TestInboundAccessorsAndReply(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	in, err := svc.Inbound(ctx(t), "svc")
	if err != nil {
		t.Fatal(err)
	}
	alice, session := c.dial("alice")
	alice.Send(`{"type":"send","id":"s1","data":{"op":"hello"},"msg_id":"k1"}`)
	if ack := alice.Expect("ack"); ack.Str("msg_id") != "k1" {
		t.Fatalf("ack %v", ack)
	}
	m := receive(t, in)
	if m.User() != "alice" || m.Session() != session || m.Node() != "node-a" || m.MsgID() != "k1" || m.Kind() != "send" ||
		m.Target() != "services" || m.Channel() != "" || string(m.Data()) != `{"op":"hello"}` || !m.Idempotent() || m.SentAt().IsZero() {
		t.Fatalf("inbound %v %s", m.Metadata, m.Data())
	}
	id, err := m.Reply(ctx(t), map[string]any{"ok": true})
	if err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if f := alice.Expect("message"); f.Str("to") != "session" || f.Str("id") != id || f.Data() != `{"ok":true}` {
		t.Fatalf("reply %v", f)
	}
	// Without msg_id the node makes one.
	alice.Send(`{"type":"send","id":"s2","data":"x"}`)
	ack := alice.Expect("ack")
	m = receive(t, in)
	m.Ack()
	if m.MsgID() == "" || m.MsgID() != ack.Str("msg_id") || m.Idempotent() {
		t.Fatalf("inbound without msg_id %v (ack %v)", m.Metadata, ack)
	}
	// A message without a sender session cannot be replied to.
	api := &service.Inbound{Message: message.NewMessage("x", []byte("1"))}
	if _, err := api.Reply(ctx(t), 1); !errors.Is(err, service.ErrNoSession) {
		t.Fatalf("reply without session: %v", err)
	}
}

func TestInboundCompetingConsumers(t *testing.T) {
	c := newCluster(t)
	w1, w2, audit := c.service(), c.service(), c.service()
	in1, err := w1.Inbound(ctx(t), "workers")
	if err != nil {
		t.Fatal(err)
	}
	in2, err := w2.Inbound(ctx(t), "workers")
	if err != nil {
		t.Fatal(err)
	}
	all, err := audit.Inbound(ctx(t), "audit") // another group gets everything
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := c.dial("alice")
	const n = 20
	for i := range n {
		cl.Send(fmt.Sprintf(`{"type":"send","id":"s%d","data":%d,"msg_id":"m%d"}`, i, i, i))
		cl.Expect("ack")
	}

	got := map[string]int{}
	per := map[int]int{}
	var held *service.Inbound
	deadline := time.After(wait)
	for len(got) < n {
		var m *service.Inbound
		var which int
		select {
		case m = <-in1:
			which = 1
		case m = <-in2:
			which = 2
		case <-deadline:
			t.Fatalf("workers got %d of %d: %v", len(got), n, got)
		}
		if m == nil {
			t.Fatal("a worker's channel closed")
		}
		got[m.MsgID()]++
		per[which]++
		// Hold the first message unacked: its worker gets nothing more until it is acked, so the
		// next ones must go to the other member of the group.
		if per[1]+per[2] == 1 {
			held = m
			continue
		}
		m.Ack()
		if held != nil && per[1] > 0 && per[2] > 0 {
			held.Ack()
			held = nil
		}
	}
	if held != nil {
		held.Ack()
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s delivered %d times to the group", id, k)
		}
	}
	if per[1] == 0 || per[2] == 0 {
		t.Errorf("one worker got nothing: %v", per)
	}
	seen := map[string]bool{}
	for len(seen) < n {
		m := receive(t, all)
		m.Ack()
		if seen[m.MsgID()] {
			t.Fatalf("audit got %s twice", m.MsgID())
		}
		seen[m.MsgID()] = true
	}
}

func TestChannelMessages(t *testing.T) {
	c := newCluster(t)
	svc, replica := c.service(), c.service()
	r1, err := svc.ChannelMessages(ctx(t), "room:1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := replica.ChannelMessages(ctx(t), "room:1")
	if err != nil {
		t.Fatal(err)
	}
	bob, session := c.dial("bob")
	bob.Publish("room:1", map[string]any{"text": "hi"}, "p-1")
	for _, ch := range []<-chan *service.Inbound{r1, r2} { // fan-out: both get it
		m := receive(t, ch)
		m.Ack()
		if m.Kind() != "publish" || m.User() != "bob" || m.Session() != session || m.Channel() != "room:1" || m.MsgID() != "p-1" ||
			m.Node() != "node-a" || m.Position() == "" || string(m.Data()) != `{"text":"hi"}` {
			t.Fatalf("channel message %v %s", m.Metadata, m.Data())
		}
	}
	// Reply goes to the publisher's session.
	cctx, cancel := context.WithCancel(ctx(t))
	r3, err := svc.ChannelMessages(cctx, "room:2")
	if err != nil {
		t.Fatal(err)
	}
	bob.Publish("room:2", "q", "p-2")
	m := receive(t, r3)
	if _, err := m.Reply(ctx(t), "answer"); err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if f := bob.Expect("message"); f.Str("to") != "session" || f.Data() != `"answer"` {
		t.Fatalf("reply %v", f)
	}
	// Ending the context closes the channel.
	cancel()
	for range r3 {
		t.Fatal("message after cancel")
	}
}

func TestEvents(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	events, err := svc.Events(ctx(t), "audit")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 15, 4, 5, 123456789, time.UTC)
	pub := c.broker.Node(c.prefix)
	defer pub.Close()
	for _, payload := range []string{
		`not json`,
		`{"user":"alice"}`, // no type
		`{"type":"connected","user":"alice","session":"s1","node":"node-a","at":"2026-01-02T15:04:05.123456789Z","extra":1}`,
		`{"type":"subscribed","user":"alice","session":"s1","node":"node-a","channel":"$user:alice","at":"2026-01-02T15:04:05.123456789Z"}`,
		fmt.Sprintf(`{"type":"disconnected","user":"","session":"s2","node":"node-b","reason":"token_expired","at":%d}`, at.UnixNano()),
	} {
		if err := pub.Publish(protocol.TopicEvents, message.NewMessage("e", []byte(payload))); err != nil {
			t.Fatal(err)
		}
	}
	want := []service.Event{
		{Event: protocol.Event{Type: service.EventConnected, User: "alice", Session: "s1", Node: "node-a", At: at}},
		{Event: protocol.Event{Type: service.EventSubscribed, User: "alice", Session: "s1", Node: "node-a", Channel: "$user:alice", At: at}},
		{Event: protocol.Event{Type: service.EventDisconnected, Session: "s2", Node: "node-b", Reason: "token_expired", At: at}},
	}
	for _, w := range want {
		e := receive(t, events)
		e.Ack()
		for e.Type == service.EventNodeAlive { // the cluster's node beats too
			e = receive(t, events)
			e.Ack()
		}
		if e.Type != w.Type || e.User != w.User || e.Session != w.Session || e.Node != w.Node || e.Channel != w.Channel ||
			e.Reason != w.Reason || !e.At.Equal(w.At) || e.Message() == nil {
			t.Fatalf("event %+v, want %+v", e, w)
		}
	}
	// The documented shape round-trips through encoding/json.
	raw, _ := json.Marshal(want[1])
	back, err := service.DecodeEvent(raw)
	if err != nil || back.Type != want[1].Type || back.Channel != want[1].Channel || !back.At.Equal(at) {
		t.Fatalf("round trip %s: %+v %v", raw, back, err)
	}
}

// TestEventsFromGateway consumes the lifecycle events a real node publishes.
func TestEventsFromGateway(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	events, err := svc.Events(ctx(t), "presence")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	cl, session := c.dial("alice")
	cl.Subscribe("room")
	cl.Subscribe("$user")
	cl.Send(`{"type":"unsubscribe","id":"u","channel":"room"}`)
	cl.Expect("unsubscribed")
	cl.Conn.Close()
	for _, w := range []protocol.Event{
		{Type: service.EventConnected},
		{Type: service.EventSubscribed, Channel: "room"},
		{Type: service.EventSubscribed, Channel: "$user:alice"},
		{Type: service.EventUnsubscribed, Channel: "room"},
		{Type: service.EventDisconnected, Reason: "closed"},
	} {
		e := receive(t, events)
		e.Ack()
		for e.Type == service.EventNodeAlive { // the node's heartbeat
			e = receive(t, events)
			e.Ack()
		}
		if e.Type != w.Type || e.Channel != w.Channel || e.Reason != w.Reason || e.User != "alice" || e.Session != session ||
			e.Node != "node-a" || e.At.Before(before) {
			t.Fatalf("event %+v, want %+v", e, w)
		}
	}
}

// TestSignatures: a node that requires signatures delivers what a service signed with its keys,
// and drops unsigned messages and those signed with a key it does not know.
func TestSignatures(t *testing.T) {
	const current, old = "k2:0123456789abcdef-current", "k1:0123456789abcdef-old"
	c := newCluster(t, "GATEWAY_ROUTER_SIGNING_KEYS="+current+","+old, "GATEWAY_ROUTER_REQUIRE_SIGNATURE=true")
	signed := c.service(service.WithSigningKeys(current))
	rotated := c.service(service.WithSigningKeys(old)) // an older key the node still accepts
	unsigned := c.service()
	stranger := c.service(service.WithSigningKeys("k9:0123456789abcdef-unknown"))
	if _, err := service.New(c.broker.Node(c.prefix), nil, service.WithSigningKeys("no-secret")); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("malformed key: %v", err)
	}
	cl, session := c.dial("alice")
	cl.Subscribe("s")
	cl.Subscribe("$user")
	for _, svc := range []*service.Service{unsigned, stranger} {
		must(t)(svc.ToChannel(ctx(t), "s", "forged"))
		must(t)(svc.ToUser(ctx(t), "alice", "forged"))
		must(t)(svc.ToSession(ctx(t), session, "forged"))
		must(t)(svc.Broadcast(ctx(t), "forged"))
	}
	for i, emit := range []func() (string, error){
		func() (string, error) { return signed.ToChannel(ctx(t), "s", "c") },
		func() (string, error) { return signed.ToUser(ctx(t), "alice", "u") },
		func() (string, error) { return signed.ToSession(ctx(t), session, "s") },
		func() (string, error) { return signed.Broadcast(ctx(t), "b", service.WithMsgID("b1")) },
		func() (string, error) { return rotated.ToChannel(ctx(t), "s", "old key") },
	} {
		id := must(t)(emit())
		if m := cl.Expect("message"); m.Str("id") != id || strings.Contains(m.Data(), "forged") {
			t.Fatalf("emit %d: got %v", i, m)
		}
	}
	nothingElse(t, cl)

	// A service configured like the gateway signs with the configuration's keys.
	cfg := testConfig(t, "GATEWAY_ROUTER_SIGNING_KEYS="+current)
	self, err := service.New(newBroker(t, cfg), nil, service.WithSigningKeys(cfg.Router.SigningKeys...))
	if err != nil {
		t.Fatal(err)
	}
	if err := self.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	watch, err := self.ChannelMessages(ctx(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	must(t)(self.ToChannel(ctx(t), "x", 1))
	m := receive(t, watch)
	m.Ack()
	if sig := m.Metadata.Get("signature"); !strings.HasPrefix(sig, "k2:") {
		t.Fatalf("signature %q", sig)
	}
}

func TestClose(t *testing.T) {
	c := newCluster(t, "GATEWAY_EVENTS_DISABLED=true") // no heartbeat in flight while closing
	svc := c.service()
	in, err := svc.Inbound(ctx(t), "g")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := svc.Events(ctx(t), "g")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	for range in {
		t.Fatal("message after close")
	}
	for range ev {
		t.Fatal("event after close")
	}
	if _, err := svc.Broadcast(ctx(t), 1); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("emit after close: %v", err)
	}
	if _, err := svc.Inbound(ctx(t), "g"); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("inbound after close: %v", err)
	}
	// A message that was sent while the member was gone is delivered to the next member.
	cl, _ := c.dial("alice")
	cl.Send(`{"type":"send","id":"s","data":1,"msg_id":"late"}`)
	cl.Expect("ack")
	next, err := c.service().Inbound(ctx(t), "g")
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, next); m.MsgID() != "late" {
		t.Fatalf("got %v", m.Metadata)
	} else {
		m.Ack()
	}
}

// flaky fails SubscribeGroup with failure until fails is used up.
type flaky struct {
	transports.Broker
	mu      sync.Mutex
	fails   int
	failure error
	calls   int
}

func (f *flaky) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	f.mu.Lock()
	f.calls++
	if f.fails != 0 {
		f.fails--
		f.mu.Unlock()
		return nil, f.failure
	}
	f.mu.Unlock()
	return f.Broker.SubscribeGroup(ctx, topic, group)
}

// TestSubscribeWaitsForTheBroker: consuming waits while the broker reports the broker
// unavailable (a JetStream broker whose streams are not provisioned yet), and no longer than ctx.
func TestSubscribeWaitsForTheBroker(t *testing.T) {
	c := newCluster(t)
	unavailable := fmt.Errorf("test: %w: streams not provisioned yet", transports.ErrUnavailable)
	fb := &flaky{Broker: c.broker.Node(c.prefix), fails: 3, failure: unavailable}
	svc, err := service.New(fb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	in, err := svc.Inbound(ctx(t), "late")
	if err != nil || fb.calls != 4 {
		t.Fatalf("inbound after 3 failures: %v (%d calls)", err, fb.calls)
	}
	cl, _ := c.dial("alice")
	cl.Send(`{"type":"send","id":"s","data":1,"msg_id":"w"}`)
	if m := receive(t, in); m.MsgID() != "w" {
		t.Fatalf("got %v", m.Metadata)
	} else {
		m.Ack()
	}
	// Always unavailable: gives up when ctx ends.
	fb.mu.Lock()
	fb.fails = -1
	fb.mu.Unlock()
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := svc.Events(short, "g"); !errors.Is(err, transports.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("events while unavailable: %v", err)
	}
	// Other errors are returned at once.
	fb.mu.Lock()
	fb.fails, fb.failure, fb.calls = 1, errors.New("refused"), 0
	fb.mu.Unlock()
	if _, err := svc.Inbound(ctx(t), "g"); err == nil || errors.Is(err, transports.ErrUnavailable) || fb.calls != 1 {
		t.Fatalf("inbound on another error: %v (%d calls)", err, fb.calls)
	}
}

// TestNotStarted: a Service whose broker was never started fails to subscribe at once with
// ErrNotStarted (waiting would never help), and emits fail the same way.
func TestNotStarted(t *testing.T) {
	b, err := natsbroker.New(natsbroker.Config{URL: "nats://127.0.0.1:1"}, nil) // never started: no server needed
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	short, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := svc.Inbound(short, "g"); !errors.Is(err, transports.ErrNotStarted) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Inbound before Start: %v, want ErrNotStarted at once", err)
	}
	if _, err := svc.ToChannel(ctx(t), "news", "x"); !errors.Is(err, transports.ErrNotStarted) {
		t.Fatalf("ToChannel before Start: %v, want ErrNotStarted", err)
	}
}

// newBroker builds the broker cfg names as a separate service does, with the broker package's New
// and ConfigFrom; on the memory broker, a broker of its own (which reaches only itself).
func newBroker(t testing.TB, cfg *configs.Config) transports.Broker {
	t.Helper()
	var b transports.Broker
	var err error
	switch cfg.Broker {
	case configs.BrokerNATS:
		b, err = natsbroker.New(natsbroker.ConfigFrom(cfg), nil)
	case configs.BrokerJetStream:
		b, err = jsbroker.New(jsbroker.ConfigFrom(cfg), nil)
	case configs.BrokerRedis:
		b, err = redis.New(redis.ConfigFrom(cfg), nil)
	case configs.BrokerMemory:
		broker := memory.NewBroker(memory.ConfigFrom(cfg))
		t.Cleanup(broker.Close)
		b = broker.Node(cfg.TopicPrefix)
	default:
		t.Fatalf("no test broker %q", cfg.Broker)
	}
	if err != nil {
		t.Fatalf("broker %s: %v", cfg.Broker, err)
	}
	return b
}

// TestNew builds the service from the gateway's configuration, as a separate service would, on
// every broker that is reachable: the gateway node and the service each build their own broker.
func TestNew(t *testing.T) {
	for _, tc := range []struct {
		broker, addr string
	}{
		{"nats", "127.0.0.1:4222"},
		{"jetstream", "127.0.0.1:4222"},
		{"redis", "127.0.0.1:6379"},
	} {
		t.Run(tc.broker, func(t *testing.T) {
			if !nodetest.Reachable(tc.addr) {
				t.Skipf("no %s server on %s", tc.broker, tc.addr)
			}
			prefix := nodetest.SharedPrefix(t)
			cfg := testConfig(t, "GATEWAY_BROKER="+tc.broker, "GATEWAY_TOPIC_PREFIX="+prefix,
				"GATEWAY_NATS_URL=nats://"+tc.addr, "GATEWAY_REDIS_ADDR="+tc.addr, "GATEWAY_REDIS_SHARDS=2",
				"GATEWAY_WS_PUBLISH_TIMEOUT=20s", "GATEWAY_JETSTREAM_MAX_AGE=1h", "GATEWAY_JETSTREAM_MAX_BYTES=16777216")
			url := startNode(t, cfg)
			svc, err := service.New(newBroker(t, cfg), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Start(ctx(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			in, err := svc.Inbound(ctx(t), "new-test")
			if err != nil {
				t.Fatal(err)
			}
			tok, _ := auth.SignHS256([]byte(testSecret), "alice", time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
			cl, w := wstest.Dial(t, url, tok)
			cl.Subscribe("news")
			cl.Send(`{"type":"send","id":"s","data":{"q":1},"msg_id":"n1"}`)
			cl.Expect("ack")
			m := receive(t, in)
			if m.User() != "alice" || m.Session() != w.Str("session") || string(m.Data()) != `{"q":1}` {
				t.Fatalf("inbound %v %s", m.Metadata, m.Data())
			}
			must(t)(m.Reply(ctx(t), "pong", service.WithMsgID("reply-"+m.UUID)))
			m.Ack()
			if f := cl.Expect("message"); f.Str("to") != "session" || f.Data() != `"pong"` {
				t.Fatalf("reply %v", f)
			}
			id := must(t)(svc.ToChannel(ctx(t), "news", "n"))
			if f := cl.Expect("message"); f.Str("channel") != "news" || f.Str("id") != id {
				t.Fatalf("channel message %v", f)
			}
		})
	}
	t.Run("memory", func(t *testing.T) {
		// On a memory broker of its own, a service reaches itself only.
		svc, err := service.New(newBroker(t, testConfig(t)), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close()
		watch, err := svc.ChannelMessages(ctx(t), "self")
		if err != nil {
			t.Fatal(err)
		}
		id := must(t)(svc.ToChannel(ctx(t), "self", 1))
		if m := receive(t, watch); m.UUID != id {
			t.Fatalf("got %s", m.UUID)
		} else {
			m.Ack()
		}
	})
	if _, err := service.New(nil, nil); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("New(nil): %v", err)
	}
}
