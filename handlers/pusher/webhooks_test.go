package pusher_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers/pusher"
	"github.com/wsgateway/gateway/protocol"
)

type hookEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	UserID   string `json:"user_id"`
	Event    string `json:"event"`
	Data     string `json:"data"`
	SocketID string `json:"socket_id"`
}

// TestWebhooks: an app's webhook_url gets channel_occupied, member_added (once per user),
// client_event, member_removed and channel_vacated in Pusher's format, with X-Pusher-Key and a
// valid X-Pusher-Signature; another app's channels are not told to it. The first POST is answered
// 503: its events come again (the webhooks' retries).
func TestWebhooks(t *testing.T) {
	got := make(chan hookEvent, 100)
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if posts.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get(pusher.HeaderWebhookKey) != "key1" || r.Header.Get(pusher.HeaderWebhookSignature) != pusher.WebhookSignature(secret1, body) ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook headers %v", r.Header)
			w.WriteHeader(400)
			return
		}
		var b struct {
			TimeMS int64       `json:"time_ms"`
			Events []hookEvent `json:"events"`
		}
		if json.Unmarshal(body, &b) != nil || b.TimeMS < time.Now().Add(-time.Minute).UnixMilli() {
			t.Errorf("webhook body %s", body)
		}
		for _, e := range b.Events {
			got <- e
		}
	}))
	defer srv.Close()
	// left sees the member_left events on the events topic.
	left := make(chan string, 100)
	_, base := nodeWith(t, func(c *configs.Config) {
		c.Pusher.Apps[0].WebhookURL = srv.URL
		c.Webhooks.BatchWait = 10 * time.Millisecond
		c.Webhooks.RetryInitial = 10 * time.Millisecond
		c.Webhooks.Batch = 1 // one event read at a time, in the topic's order
	}, gateway.WithHandler("left", protocol.TopicEvents, func(m *message.Message) error {
		var ev protocol.Event
		if json.Unmarshal(m.Payload, &ev) == nil && ev.Type == protocol.EventMemberLeft {
			left <- ev.Session
		}
		return nil
	}))
	want := func(name, user string) hookEvent {
		t.Helper()
		select {
		case e := <-got:
			if e.Name != name || e.Channel != "presence-hooked" || e.UserID != user {
				t.Fatalf("got %+v, want %s of %q", e, name, user)
			}
			return e
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", name)
		}
		return hookEvent{}
	}
	a := dialPusher(t, base, "key1", "?protocol=7")
	sa := a.socketID()
	subscribePresence(a, sa, "presence-hooked", "alice")
	want("channel_occupied", "")
	want("member_added", "alice")
	a2 := dialPusher(t, base, "key1", "?protocol=7")
	sa2 := a2.socketID()
	subscribePresence(a2, sa2, "presence-hooked", "alice") // no second member_added
	a.send("client-hi", map[string]int{"n": 1}, "presence-hooked")
	if e := want("client_event", "alice"); e.Event != "client-hi" || e.Data != `{"n":1}` || e.SocketID != sa {
		t.Fatalf("client_event %+v", e)
	}
	q := dialPusher(t, base, "key2", "?protocol=7")
	q.socketID()
	q.send("pusher:subscribe", map[string]string{"channel": "other-app"}, "") // app2's: not told
	q.expect("pusher_internal:subscription_succeeded")
	// One of alice's connections goes: alice stays, no member_removed. The webhooks read its
	// member_left (one event at a time, in order) before the client event that follows it, and
	// alice's other connection is still there then.
	a2.conn.Close()
	for deadline := time.After(10 * time.Second); ; {
		select {
		case s := <-left:
			if s != sa2 {
				continue
			}
		case <-deadline:
			t.Fatal("no member_left for alice's second connection")
		}
		break
	}
	a.send("client-bye", map[string]int{}, "presence-hooked")
	if e := want("client_event", "alice"); e.Event != "client-bye" {
		t.Fatalf("client_event %+v", e)
	}
	a.conn.Close()
	want("member_removed", "alice")
	want("channel_vacated", "")
}
