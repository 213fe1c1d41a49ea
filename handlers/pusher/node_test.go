package pusher_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers/pusher"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

const (
	jwtSecret = "pusher-node-test-jwt-secret-0123"
	secret1   = "secret-of-app-one-0123"
)

// node is one in-process node on the embedded broker with two apps: app1 (client events on)
// and app2 (off).
func node(t *testing.T, opts ...gateway.Option) string {
	t.Helper()
	_, base := nodeGateway(t, opts...)
	return base
}

func nodeGateway(t *testing.T, opts ...gateway.Option) (*gateway.Gateway, string) {
	t.Helper()
	return nodeWith(t, func(*configs.Config) {}, opts...)
}

// nodeWith is nodeGateway with a change to the configuration.
func nodeWith(t *testing.T, change func(*configs.Config), opts ...gateway.Option) (*gateway.Gateway, string) {
	t.Helper()
	cfg, err := configs.Load("", []string{
		"GATEWAY_DRAIN_PERIOD=10ms",
		"GATEWAY_JWT_SECRET=" + jwtSecret,
		"GATEWAY_LOG_LEVEL=warn",
		"GATEWAY_PUSHER_APPS=app1:key1:" + secret1 + ",app2:key2:secret-of-app-two-0123",
	})
	if err != nil {
		t.Fatal(err)
	}
	ce := true
	cfg.Pusher.Apps[0].ClientEvents = &ce
	change(cfg)
	return nodetest.InProcess(t, cfg, opts...)
}

// pclient is a Pusher protocol client: JSON frames with an event.
type pclient struct {
	t    *testing.T
	conn *gws.Conn
}

func dialPusher(t *testing.T, base, key, query string) *pclient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/app/" + key + query
	conn, _, err := gws.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &pclient{t: t, conn: conn}
}

func (c *pclient) send(event string, data any, channel string) {
	c.t.Helper()
	f := map[string]any{"event": event, "data": data}
	if channel != "" {
		f["channel"] = channel
	}
	if err := c.conn.WriteJSON(f); err != nil {
		c.t.Fatal(err)
	}
}

type pframe struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

func (c *pclient) next() (pframe, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(wstest.Timeout))
	var f pframe
	_, b, err := c.conn.ReadMessage()
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	return f, err
}

func (c *pclient) expect(event string) pframe {
	c.t.Helper()
	f, err := c.next()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", event, err)
	}
	if f.Event != event {
		c.t.Fatalf("got %s %s %s, want %s", f.Event, f.Channel, f.Data, event)
	}
	return f
}

// socketID reads connection_established.
func (c *pclient) socketID() string {
	c.t.Helper()
	f := c.expect("pusher:connection_established")
	var s string
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if json.Unmarshal(f.Data, &s) != nil || json.Unmarshal([]byte(s), &d) != nil || d.SocketID == "" || d.ActivityTimeout != 120 {
		c.t.Fatalf("connection_established data %s", f.Data)
	}
	return d.SocketID
}

func trigger(t *testing.T, base string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	q := pusher.SignRequest("key1", secret1, "POST", "/apps/app1/events", nil, b, time.Now())
	resp, err := http.Post(base+"/apps/app1/events?"+q.Encode(), "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestOneFabric: an event triggered through the Pusher API reaches native subscribers of the
// mapped channel, a native publish reaches Pusher subscribers, and a Pusher client event is an
// ordinary Watermill message on the channel's topic for services.
func TestOneFabric(t *testing.T) {
	native, _ := pusher.NativeChannel("app1", "private-room")
	seen := make(chan *message.Message, 10)
	base := node(t, gateway.WithHandler("service", protocol.ChannelTopic(native), func(m *message.Message) error {
		seen <- m
		return nil
	}))
	p := dialPusher(t, base, "key1", "?protocol=7&client=js&version=8.4.0")
	sid := p.socketID()
	p.send("pusher:subscribe", map[string]string{"channel": "private-room",
		"auth": pusher.ChannelAuth("key1", secret1, sid, "private-room", "")}, "")
	p.expect("pusher_internal:subscription_succeeded")

	token, err := auth.SignHS256([]byte(jwtSecret), "nat", time.Hour, []string{"pusher:*"}, []string{"pusher:*"})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := wstest.Dial(t, base, token)
	n.Subscribe(native)

	if resp := trigger(t, base, map[string]any{"name": "ev", "channel": "private-room", "data": `{"a":1}`}); resp.StatusCode != 200 {
		t.Fatalf("trigger: %d", resp.StatusCode)
	}
	if f := n.Expect("message"); f.Str("channel") != native || f.Data() != `{"a":1}` {
		t.Fatalf("native client got %v", f)
	}
	if f := p.expect("ev"); f.Channel != "private-room" || string(f.Data) != `"{\"a\":1}"` {
		t.Fatalf("pusher client got %s", f.Data)
	}

	// n is subscribed to the channel too: its ack and its own message come in either order.
	n.Send(map[string]any{"type": "publish", "id": "pub", "channel": native, "data": map[string]int{"b": 2}})
	n.ExpectAll("ack", "message")
	if f := p.expect("message"); string(f.Data) != `"{\"b\":2}"` {
		t.Fatalf("pusher client got %s", f.Data)
	}

	p.send("client-typing", map[string]bool{"on": true}, "private-room")
	for {
		select {
		case m := <-seen:
			if m.Metadata.Get(protocol.MetaPusherEvent) != "client-typing" {
				continue // the trigger and the native publish came first
			}
			if string(m.Payload) != `{"on":true}` || m.Metadata.Get(protocol.MetaSession) != sid {
				t.Fatalf("service got %s %v", m.Payload, m.Metadata)
			}
			return
		case <-time.After(wstest.Timeout):
			t.Fatal("the service did not get the client event")
		}
	}
}

// TestRefusedConnections: an unknown key and a missing or unsupported protocol get pusher:error
// and the close with its code.
func TestRefusedConnections(t *testing.T) {
	base := node(t)
	for _, tc := range []struct {
		key, query string
		code       int
	}{
		{"nokey", "?protocol=7", pusher.CodeUnknownApp},
		{"key1", "", pusher.CodeNoProtocol},
		{"key1", "?protocol=3", pusher.CodeBadProtocol},
		{"key1", "?protocol=x", pusher.CodeBadProtocol},
	} {
		p := dialPusher(t, base, tc.key, tc.query)
		f := p.expect("pusher:error")
		var d struct{ Code int }
		if json.Unmarshal(f.Data, &d) != nil || d.Code != tc.code {
			t.Errorf("%s%s: error %s, want code %d", tc.key, tc.query, f.Data, tc.code)
		}
		_, err := p.next()
		var ce *gws.CloseError
		if !asClose(err, &ce) || ce.Code != tc.code {
			t.Errorf("%s%s: closed with %v, want %d", tc.key, tc.query, err, tc.code)
		}
	}
}

func asClose(err error, ce **gws.CloseError) bool {
	c, ok := err.(*gws.CloseError)
	*ce = c
	return ok
}

// TestClientEventRefusals: client events on a public channel, on a channel not subscribed, and
// of an app without client events are refused with pusher:error; a presence subscription
// without a valid user_id is refused.
func TestClientEventRefusals(t *testing.T) {
	base := node(t)
	p := dialPusher(t, base, "key1", "?protocol=7")
	sid := p.socketID()
	p.send("pusher:subscribe", map[string]string{"channel": "public"}, "")
	p.expect("pusher_internal:subscription_succeeded")
	for _, ch := range []string{"public", "private-unsubscribed"} {
		p.send("client-x", map[string]int{}, ch)
		if f := p.expect("pusher:error"); !strings.Contains(string(f.Data), "Client event rejected") {
			t.Errorf("%s: %s", ch, f.Data)
		}
	}
	p.send("pusher:subscribe", map[string]string{"channel": "presence-r", "channel_data": `{"user_info":{}}`,
		"auth": pusher.ChannelAuth("key1", secret1, sid, "presence-r", `{"user_info":{}}`)}, "")
	if f := p.expect("pusher:subscription_error"); !strings.Contains(string(f.Data), "user_id") {
		t.Errorf("presence without user_id: %s", f.Data)
	}
	p.send("pusher:ping", map[string]string{}, "")
	p.expect("pusher:pong")

	q := dialPusher(t, base, "key2", "?protocol=7")
	sid2 := q.socketID()
	q.send("pusher:subscribe", map[string]string{"channel": "private-a",
		"auth": pusher.ChannelAuth("key2", "secret-of-app-two-0123", sid2, "private-a", "")}, "")
	q.expect("pusher_internal:subscription_succeeded")
	q.send("client-x", map[string]int{}, "private-a")
	if f := q.expect("pusher:error"); !strings.Contains(string(f.Data), "enable") {
		t.Errorf("app without client events: %s", f.Data)
	}
	// app1's signature does not open app2's channel.
	q.send("pusher:subscribe", map[string]string{"channel": "private-b",
		"auth": pusher.ChannelAuth("key1", secret1, sid2, "private-b", "")}, "")
	if f := q.expect("pusher:subscription_error"); !strings.Contains(string(f.Data), `"status":401`) {
		t.Errorf("another app's signature: %s", f.Data)
	}
}

// TestAPIRefusals: the HTTP API answers a bad signature 401, an unknown app 404, and checks
// what it triggers.
func TestAPIRefusals(t *testing.T) {
	base := node(t)
	body := []byte(`{"name":"e","channel":"c","data":"x"}`)
	q := pusher.SignRequest("key1", "not-the-secret-0123", "POST", "/apps/app1/events", nil, body, time.Now())
	resp, err := http.Post(base+"/apps/app1/events?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("wrong secret: %d", resp.StatusCode)
	}
	resp, err = http.Get(base + "/apps/app9/channels?" + url.Values{}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown app: %d", resp.StatusCode)
	}
	many := make([]string, 101)
	for i := range many {
		many[i] = "c"
	}
	for name, tc := range map[string]struct {
		body   map[string]any
		status int
	}{
		"101 channels":    {map[string]any{"name": "e", "channels": many, "data": "x"}, 400},
		"no name":         {map[string]any{"channel": "c", "data": "x"}, 400},
		"a bad channel":   {map[string]any{"name": "e", "channel": "a b", "data": "x"}, 400},
		"data over 10KiB": {map[string]any{"name": "e", "channel": "c", "data": strings.Repeat("x", 10<<10+1)}, 413},
	} {
		if resp := trigger(t, base, tc.body); resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, tc.status)
		}
	}
}

// TestDrainSaysReconnect: a draining node tells its Pusher connections pusher:error 4200 and
// closes them with 4200, which pusher-js reconnects after at once.
func TestDrainSaysReconnect(t *testing.T) {
	g, base := nodeGateway(t)
	p := dialPusher(t, base, "key1", "?protocol=7")
	p.socketID()
	done := make(chan struct{})
	go func() { defer close(done); g.Drain() }()
	f := p.expect("pusher:error")
	var d struct{ Code int }
	if json.Unmarshal(f.Data, &d) != nil || d.Code != pusher.CodeReconnect {
		t.Errorf("drain: %s", f.Data)
	}
	_, err := p.next()
	var ce *gws.CloseError
	if !asClose(err, &ce) || ce.Code != pusher.CodeReconnect {
		t.Errorf("drain closed with %v, want %d", err, pusher.CodeReconnect)
	}
	<-done
}

// subscribePresence subscribes p (socket sid) to a presence channel as user and returns the
// event answered.
func subscribePresence(p *pclient, sid, channel, user string) pframe {
	data := `{"user_id":"` + user + `","user_info":{"name":"` + user + `"}}`
	p.send("pusher:subscribe", map[string]string{"channel": channel, "channel_data": data,
		"auth": pusher.ChannelAuth("key1", secret1, sid, channel, data)}, "")
	f, err := p.next()
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

// TestPresenceLimit: with max_presence_members 1, a second user is refused LimitReached, and the
// first user may open a second connection.
func TestPresenceLimit(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) { c.Pusher.Apps[0].MaxPresenceMembers = 1 })
	a := dialPusher(t, base, "key1", "?protocol=7")
	if f := subscribePresence(a, a.socketID(), "presence-one", "alice"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("alice: %s %s", f.Event, f.Data)
	}
	b := dialPusher(t, base, "key1", "?protocol=7")
	if f := subscribePresence(b, b.socketID(), "presence-one", "bob"); f.Event != "pusher:subscription_error" ||
		!strings.Contains(string(f.Data), "LimitReached") {
		t.Fatalf("bob: %s %s", f.Event, f.Data)
	}
	a2 := dialPusher(t, base, "key1", "?protocol=7")
	f := subscribePresence(a2, a2.socketID(), "presence-one", "alice")
	var s string
	if f.Event != "pusher_internal:subscription_succeeded" || json.Unmarshal(f.Data, &s) != nil || !strings.Contains(s, `"count":1`) {
		t.Fatalf("alice's second connection: %s %s", f.Event, f.Data)
	}
}
