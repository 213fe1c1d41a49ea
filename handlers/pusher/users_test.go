package pusher_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers/pusher"
	"github.com/wsgateway/gateway/protocol"
)

// signin signs p (socket sid) in as user id and waits for signin_success.
func signin(t *testing.T, p *pclient, sid, id string) {
	t.Helper()
	ud := `{"id":"` + id + `","user_info":{"name":"` + id + `"}}`
	p.send("pusher:signin", map[string]string{"auth": pusher.UserAuth("key1", secret1, sid, ud), "user_data": ud}, "")
	f := p.expect("pusher:signin_success")
	var s string
	var d struct {
		UserData string `json:"user_data"`
	}
	if json.Unmarshal(f.Data, &s) != nil || json.Unmarshal([]byte(s), &d) != nil || d.UserData != ud {
		t.Fatalf("signin_success data %s", f.Data)
	}
}

func post(t *testing.T, base, path string, body []byte) *http.Response {
	t.Helper()
	q := pusher.SignRequest("key1", secret1, "POST", path, nil, body, time.Now())
	resp, err := http.Post(base+path+"?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestSigninAndTerminate: a signed-in connection gets its #server-to-user- channel's events and
// is closed with 4009 by terminate_connections; another user's connection and an anonymous one
// stay; a wrong signin signature is closed with 4009.
func TestSigninAndTerminate(t *testing.T) {
	base := node(t)
	a := dialPusher(t, base, "key1", "?protocol=7")
	sa := a.socketID()
	signin(t, a, sa, "alice")
	b := dialPusher(t, base, "key1", "?protocol=7")
	sb := b.socketID()
	signin(t, b, sb, "bob")
	anon := dialPusher(t, base, "key1", "?protocol=7")
	anon.socketID()

	// The user's channel: alice's own, with no auth; bob may not have it.
	a.send("pusher:subscribe", map[string]string{"channel": "#server-to-user-alice"}, "")
	a.expect("pusher_internal:subscription_succeeded")
	b.send("pusher:subscribe", map[string]string{"channel": "#server-to-user-alice"}, "")
	if f := b.expect("pusher:subscription_error"); !strings.Contains(string(f.Data), `"status":401`) {
		t.Fatalf("bob on alice's channel: %s", f.Data)
	}
	if resp := trigger(t, base, map[string]any{"name": "note", "channel": "#server-to-user-alice", "data": "hi"}); resp.StatusCode != 200 {
		t.Fatalf("sendToUser: %d", resp.StatusCode)
	}
	if f := a.expect("note"); f.Channel != "#server-to-user-alice" || string(f.Data) != `"hi"` {
		t.Fatalf("alice got %s %s", f.Channel, f.Data)
	}

	if resp := post(t, base, "/apps/app1/users/alice/terminate_connections", []byte(`{}`)); resp.StatusCode != 200 {
		t.Fatalf("terminate_connections: %d", resp.StatusCode)
	}
	f := a.expect("pusher:error")
	var d struct{ Code int }
	if json.Unmarshal(f.Data, &d) != nil || d.Code != pusher.CodeUnauthorized {
		t.Fatalf("terminated: %s", f.Data)
	}
	_, err := a.next()
	var ce *gws.CloseError
	if !asClose(err, &ce) || ce.Code != pusher.CodeUnauthorized {
		t.Fatalf("terminated: closed with %v", err)
	}
	for _, p := range []*pclient{b, anon} {
		p.send("pusher:ping", map[string]string{}, "")
		p.expect("pusher:pong")
	}

	c := dialPusher(t, base, "key1", "?protocol=7")
	sc := c.socketID()
	ud := `{"id":"carol"}`
	c.send("pusher:signin", map[string]string{"auth": pusher.UserAuth("key1", "not-the-secret-0123", sc, ud), "user_data": ud}, "")
	c.expect("pusher:error")
	if _, err := c.next(); !asClose(err, &ce) || ce.Code != pusher.CodeUnauthorized {
		t.Fatalf("wrong signin signature: closed with %v", err)
	}
}

// TestLimits: limits.connections_per_user bounds a Pusher user's signed-in connections on a
// node, subscriptions_per_connection its channels, connections_per_node its connections.
func TestLimits(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) {
		c.Limits.ConnectionsPerUser = 1
		c.Limits.SubscriptionsPerConnection = 2
		c.Limits.ConnectionsPerNode = 3
	})
	a := dialPusher(t, base, "key1", "?protocol=7")
	signin(t, a, a.socketID(), "alice")
	a2 := dialPusher(t, base, "key1", "?protocol=7")
	sa2 := a2.socketID()
	ud := `{"id":"alice"}`
	a2.send("pusher:signin", map[string]string{"auth": pusher.UserAuth("key1", secret1, sa2, ud), "user_data": ud}, "")
	if f := a2.expect("pusher:error"); !strings.Contains(string(f.Data), "connections_per_user") {
		t.Fatalf("alice's second connection: %s", f.Data)
	}
	for i, ch := range []string{"one", "two", "three"} {
		a.send("pusher:subscribe", map[string]string{"channel": ch}, "")
		f, err := a.next()
		if err != nil {
			t.Fatal(err)
		}
		if want := "pusher_internal:subscription_succeeded"; i < 2 && f.Event != want {
			t.Fatalf("%s: %s %s", ch, f.Event, f.Data)
		}
		if i == 2 && (f.Event != "pusher:subscription_error" || !strings.Contains(string(f.Data), "LimitReached")) {
			t.Fatalf("the third subscription: %s %s", f.Event, f.Data)
		}
	}
	dialPusher(t, base, "key1", "?protocol=7").socketID()
	_, resp, err := gws.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/app/key1?protocol=7", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("a fourth connection on a node of 3: %v %v", err, resp)
	}
}

// TestToSession: a service's message to a Pusher session (here through /api/publish) is an
// event without a channel, "message" unless its pusher_event metadata names another.
func TestToSession(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) { c.API.Key = "api-key-of-the-test-0123" })
	p := dialPusher(t, base, "key1", "?protocol=7")
	sid := p.socketID()
	req, _ := http.NewRequest("POST", base+"/api/publish", strings.NewReader(`{"session":"`+sid+`","data":{"n":1}}`))
	req.Header.Set("Authorization", "Bearer api-key-of-the-test-0123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	if f := p.expect("message"); f.Channel != "" || string(f.Data) != `"{\"n\":1}"` {
		t.Fatalf("got %s %s", f.Channel, f.Data)
	}
}

// TestRefusedPresenceNoLeave: a presence subscribe refused as over max_presence_members publishes
// neither a member_joined nor a member_left for the refused connection (it was never announced).
func TestRefusedPresenceNoLeave(t *testing.T) {
	events := make(chan protocol.Event, 100)
	_, base := nodeWith(t, func(c *configs.Config) { c.Pusher.Apps[0].MaxPresenceMembers = 1 },
		gateway.WithHandler("events", protocol.TopicEvents, func(m *message.Message) error {
			var ev protocol.Event
			if json.Unmarshal(m.Payload, &ev) == nil {
				events <- ev
			}
			return nil
		}))
	a := dialPusher(t, base, "key1", "?protocol=7")
	subscribePresence(a, a.socketID(), "presence-lim", "alice")
	b := dialPusher(t, base, "key1", "?protocol=7")
	sb := b.socketID()
	if f := subscribePresence(b, sb, "presence-lim", "bob"); f.Event != "pusher:subscription_error" {
		t.Fatalf("bob: %s %s", f.Event, f.Data)
	}
	// A marker after the refusal: alice's second connection joins.
	a2 := dialPusher(t, base, "key1", "?protocol=7")
	sa2 := a2.socketID()
	subscribePresence(a2, sa2, "presence-lim", "alice")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Session == sb && (ev.Type == protocol.EventMemberLeft || ev.Type == protocol.EventMemberJoined) {
				t.Fatalf("the refused connection was announced: %+v", ev)
			}
			if ev.Session == sa2 && ev.Type == protocol.EventMemberJoined {
				return
			}
		case <-deadline:
			t.Fatal("no member_joined for alice's second connection")
		}
	}
}

// TestEncryptedChannel: a private-encrypted- channel is subscribed with a private channel's
// signature (a wrong one is refused), passes what is triggered through as it is (the ciphertext),
// and refuses client events.
func TestEncryptedChannel(t *testing.T) {
	base := node(t)
	p := dialPusher(t, base, "key1", "?protocol=7")
	sid := p.socketID()
	const ch = "private-encrypted-vault"
	p.send("pusher:subscribe", map[string]string{"channel": ch, "auth": pusher.ChannelAuth("key1", "not-the-secret-0123", sid, ch, "")}, "")
	p.expect("pusher:subscription_error")
	p.send("pusher:subscribe", map[string]string{"channel": ch, "auth": pusher.ChannelAuth("key1", secret1, sid, ch, "")}, "")
	p.expect("pusher_internal:subscription_succeeded")
	cipher := `{"nonce":"bm9uY2Vub25jZQ==","ciphertext":"c2VjcmV0"}`
	if resp := trigger(t, base, map[string]any{"name": "ev", "channel": ch, "data": cipher}); resp.StatusCode != 200 {
		t.Fatalf("trigger: %d", resp.StatusCode)
	}
	f := p.expect("ev")
	var s string
	if json.Unmarshal(f.Data, &s) != nil || s != cipher {
		t.Fatalf("got %s", f.Data)
	}
	p.send("client-x", map[string]int{}, ch)
	if f := p.expect("pusher:error"); !strings.Contains(string(f.Data), "encrypted") {
		t.Fatalf("client event: %s", f.Data)
	}
}

// TestUserPublishRate: limits.user_publish_rate is shared by a signed-in user's connections on
// the node: alice's second connection is refused (4301) the client event her first one used up,
// while bob's and an anonymous connection's events still go through.
func TestUserPublishRate(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) {
		c.Limits.UserPublishRate, c.Limits.UserPublishBurst = 0.001, 1 // one at once, the next in 1000 s
	})
	subscribed := func(id string) *pclient {
		p := dialPusher(t, base, "key1", "?protocol=7")
		sid := p.socketID()
		if id != "" {
			signin(t, p, sid, id)
		}
		p.send("pusher:subscribe", map[string]string{"channel": "private-x", "auth": pusher.ChannelAuth("key1", secret1, sid, "private-x", "")}, "")
		p.expect("pusher_internal:subscription_succeeded")
		return p
	}
	listener := subscribed("")
	a1, a2, b, anon := subscribed("alice"), subscribed("alice"), subscribed("bob"), subscribed("")
	a1.send("client-a1", map[string]int{}, "private-x")
	listener.expect("client-a1")
	a2.expect("client-a1") // a client event goes to every other connection on the channel
	a2.send("client-a2", map[string]int{}, "private-x")
	f := a2.expect("pusher:error")
	var d struct{ Code int }
	if json.Unmarshal(f.Data, &d) != nil || d.Code != pusher.CodeClientEventLimit {
		t.Fatalf("alice's second connection: %s", f.Data)
	}
	b.send("client-b", map[string]int{}, "private-x")
	if f := listener.expect("client-b"); f.Event != "client-b" { // client-a2 never came
		t.Fatalf("got %s", f.Event)
	}
	anon.send("client-anon", map[string]int{}, "private-x")
	listener.expect("client-anon")
}
