package pusher_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers/pusher"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
)

// TestNativeNeedsPusherPattern: a native client's "*" (public_channels, anonymous_publish, a
// token's channels and publish) does not reach an app's channels; a pattern that starts with
// "pusher:" does.
func TestNativeNeedsPusherPattern(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) {
		c.Auth.AllowAnonymous = true
		c.Auth.PublicChannels = []string{"*", "pusher:app2:*"}
		c.Auth.AnonymousPublish = []string{"*"}
	})
	private, _ := pusher.NativeChannel("app1", "private-secrets")
	public2, _ := pusher.NativeChannel("app2", "news")

	anon, _ := wstest.Dial(t, base, "")
	anon.Send(map[string]any{"type": "subscribe", "id": "1", "channel": private})
	if f := anon.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("anonymous subscribe to %s: %v", private, f)
	}
	anon.Send(map[string]any{"type": "publish", "id": "2", "channel": private, "data": 1})
	if f := anon.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("anonymous publish to %s: %v", private, f)
	}
	anon.Subscribe("news") // "*" still opens the native channels
	anon.Subscribe(public2)

	token, err := auth.SignHS256([]byte(jwtSecret), "nat", time.Hour, []string{"*"}, []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := wstest.Dial(t, base, token)
	n.Send(map[string]any{"type": "subscribe", "id": "1", "channel": private})
	if f := n.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("a token with channels * subscribing to %s: %v", private, f)
	}
	n.Send(map[string]any{"type": "publish", "id": "2", "channel": private, "data": 1})
	if f := n.Expect("error"); f.Str("code") != "forbidden" {
		t.Fatalf("a token with publish * publishing to %s: %v", private, f)
	}

	token, _ = auth.SignHS256([]byte(jwtSecret), "svc", time.Hour, []string{"pusher:app1:*"}, nil)
	ok, _ := wstest.Dial(t, base, token)
	ok.Subscribe(private)
}

// TestAPIBodyAfterSignature: the HTTP API checks the query's signature before it reads the body
// (a wrongly signed request is answered while its body is still unsent), reads at most the
// app's bound (413 beyond), and refuses a body on GET.
func TestAPIBodyAfterSignature(t *testing.T) {
	base := node(t)
	host := strings.TrimPrefix(base, "http://")

	// Headers announcing 1 MiB of body, none of it sent: the answer must come without it.
	q := pusher.SignRequest("key1", "not-the-secret-0123", "POST", "/apps/app1/events", nil, []byte("x"), time.Now())
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /apps/app1/events?%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", q.Encode(), host, 1<<20)
	_ = conn.SetReadDeadline(time.Now().Add(wstest.Timeout)) // fails the test; never reached when right
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong signature: %d, want 401", resp.StatusCode)
	}

	// Rightly signed, over the bound (10 events of 6 × 10 KiB + 32 KiB: 940 KiB): 413.
	big := []byte(`{"name":"e","channel":"c","data":"` + strings.Repeat("x", 1<<20) + `"}`)
	if resp := post(t, base, "/apps/app1/events", big); resp.StatusCode != 413 {
		t.Fatalf("a 1 MiB body: %d, want 413", resp.StatusCode)
	}

	// A GET with a body, body_md5 rightly signed: 400.
	body := []byte(`{"a":1}`)
	q = pusher.SignRequest("key1", secret1, "GET", "/apps/app1/channels", nil, body, time.Now())
	req, _ := http.NewRequest("GET", base+"/apps/app1/channels?"+q.Encode(), bytes.NewReader(body))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("a GET with a body: %d, want 400", resp.StatusCode)
	}
	// Without one, the same call is answered.
	q = pusher.SignRequest("key1", secret1, "GET", "/apps/app1/channels", nil, nil, time.Now())
	resp, err = http.Get(base + "/apps/app1/channels?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a GET: %d, want 200", resp.StatusCode)
	}
}

// TestBatchAllOrNothing: a batch with one bad event is refused whole, before any of it is
// published: a subscriber of the good event's channel next gets a later marker, not that event.
func TestBatchAllOrNothing(t *testing.T) {
	base := node(t)
	p := dialPusher(t, base, "key1", "?protocol=7")
	p.socketID()
	p.send("pusher:subscribe", map[string]string{"channel": "c"}, "")
	p.expect("pusher_internal:subscription_succeeded")
	for name, bad := range map[string]map[string]any{
		"a bad channel": {"name": "e", "channel": "a b", "data": "x"},
		"no name":       {"channel": "c", "data": "x"},
		"too much data": {"name": "e", "channel": "c", "data": strings.Repeat("x", 10<<10+1)},
	} {
		b, _ := json.Marshal(map[string]any{"batch": []any{
			map[string]any{"name": "first", "channel": "c", "data": "x"}, bad}})
		if resp := post(t, base, "/apps/app1/batch_events", b); resp.StatusCode/100 != 4 {
			t.Fatalf("%s: %d, want 4xx", name, resp.StatusCode)
		}
	}
	if resp := trigger(t, base, map[string]any{"name": "marker", "channel": "c", "data": "m"}); resp.StatusCode != 200 {
		t.Fatalf("marker: %d", resp.StatusCode)
	}
	if f := p.expect("marker"); f.Channel != "c" {
		t.Fatalf("marker on %s", f.Channel)
	}
}

// TestStrikes: refusals for a rate take the native strikes (limits.rate_limited_disconnect): a
// Pusher connection that keeps subscribing, or sending client events, over its rates is told
// pusher:error 4009 and closed with it once it has none left.
func TestStrikes(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) {
		// One at once, the next in 1000 s: every later one is over the rate.
		c.Limits.SubscribeRate, c.Limits.SubscribeBurst = 0.001, 1
		c.Limits.PublishRate, c.Limits.PublishBurst = 0.001, 1
		c.Limits.RateLimitedDisconnect, c.Limits.RateLimitedWindow = 2, time.Hour
	})
	closed := func(p *pclient, what string) {
		t.Helper()
		f := p.expect("pusher:error")
		var d struct{ Code int }
		if json.Unmarshal(f.Data, &d) != nil || d.Code != pusher.CodeUnauthorized {
			t.Fatalf("%s: %s", what, f.Data)
		}
		var ce *gws.CloseError
		if _, err := p.next(); !asClose(err, &ce) || ce.Code != pusher.CodeUnauthorized {
			t.Fatalf("%s: closed with %v", what, err)
		}
	}

	p := dialPusher(t, base, "key1", "?protocol=7")
	p.socketID()
	p.send("pusher:subscribe", map[string]string{"channel": "s0"}, "")
	p.expect("pusher_internal:subscription_succeeded")
	for i := 1; i <= 3; i++ { // two strikes, then none left
		p.send("pusher:subscribe", map[string]string{"channel": "s" + strconv.Itoa(i)}, "")
		if f := p.expect("pusher:subscription_error"); !strings.Contains(string(f.Data), "4301") {
			t.Fatalf("subscribe %d: %s", i, f.Data)
		}
	}
	closed(p, "the third subscribe over the rate")

	e := dialPusher(t, base, "key1", "?protocol=7")
	sid := e.socketID()
	e.send("pusher:subscribe", map[string]string{"channel": "private-x", "auth": pusher.ChannelAuth("key1", secret1, sid, "private-x", "")}, "")
	e.expect("pusher_internal:subscription_succeeded")
	e.send("client-a", map[string]int{}, "private-x") // the one at once
	for i := 1; i <= 3; i++ {
		e.send("client-a", map[string]int{}, "private-x")
		f := e.expect("pusher:error")
		var d struct{ Code int }
		if json.Unmarshal(f.Data, &d) != nil || d.Code != pusher.CodeClientEventLimit {
			t.Fatalf("client event %d: %s", i, f.Data)
		}
	}
	closed(e, "the third client event over the rate")
}

// TestNodeSlotReleased: a Pusher connection holds one of limits.connections_per_node from its
// upgrade to its close: a node of one refuses a second connection, and takes one again once
// the first has closed.
func TestNodeSlotReleased(t *testing.T) {
	_, base := nodeWith(t, func(c *configs.Config) { c.Limits.ConnectionsPerNode = 1 })
	u := "ws" + strings.TrimPrefix(base, "http") + "/app/key1?protocol=7"
	p := dialPusher(t, base, "key1", "?protocol=7")
	p.socketID()
	if _, resp, err := gws.DefaultDialer.Dial(u, nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("a second connection on a node of 1: %v %v", err, resp)
	}
	p.conn.Close()
	wstest.WaitFor(t, func() error {
		c, _, err := gws.DefaultDialer.Dial(u, nil)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// TestUnsubscribe: after pusher:unsubscribe a connection gets no more of the channel's events
// (the next it gets is a later one of a channel it kept), and leaving a presence channel tells
// the others member_removed.
func TestUnsubscribe(t *testing.T) {
	base := node(t)
	p := dialPusher(t, base, "key1", "?protocol=7")
	sid := p.socketID()
	for _, ch := range []string{"gone", "kept"} {
		p.send("pusher:subscribe", map[string]string{"channel": ch}, "")
		p.expect("pusher_internal:subscription_succeeded")
	}
	p.send("pusher:unsubscribe", map[string]string{"channel": "gone"}, "")
	// The unsubscribe is handled before the next frame: a ping answered means it is done.
	p.send("pusher:ping", map[string]string{}, "")
	p.expect("pusher:pong")
	// q is still on "gone": once q has its event, the node has fanned it out (to p too, were p
	// still on it); only then is "kept" triggered.
	q := dialPusher(t, base, "key1", "?protocol=7")
	q.socketID()
	q.send("pusher:subscribe", map[string]string{"channel": "gone"}, "")
	q.expect("pusher_internal:subscription_succeeded")
	for _, ch := range []string{"gone", "kept"} {
		if resp := trigger(t, base, map[string]any{"name": "ev", "channel": ch, "data": ch}); resp.StatusCode != 200 {
			t.Fatalf("trigger %s: %d", ch, resp.StatusCode)
		}
		if ch == "gone" {
			q.expect("ev")
		}
	}
	if f := p.expect("ev"); f.Channel != "kept" {
		t.Fatalf("after unsubscribing: an event of %s", f.Channel)
	}

	if f := subscribePresence(p, sid, "presence-u", "alice"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("alice: %s %s", f.Event, f.Data)
	}
	b := dialPusher(t, base, "key1", "?protocol=7")
	if f := subscribePresence(b, b.socketID(), "presence-u", "bob"); f.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("bob: %s %s", f.Event, f.Data)
	}
	p.expect("pusher_internal:member_added")
	b.send("pusher:unsubscribe", map[string]string{"channel": "presence-u"}, "")
	if f := p.expect("pusher_internal:member_removed"); !strings.Contains(string(f.Data), "bob") {
		t.Fatalf("member_removed %s", f.Data)
	}
}
