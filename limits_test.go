package gateway_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/wstest"
)

// batch sends frames made by frame(i) for i in [from, from+n) and returns the n replies, in
// order (frames of one connection are answered in order). Batches keep the client reading, so
// it is never a slow consumer.
func batch(t *testing.T, c *wstest.Client, from, n int, frame func(i int) map[string]any) []wstest.Frame {
	t.Helper()
	for i := from; i < from+n; i++ {
		c.Send(frame(i))
	}
	out := make([]wstest.Frame, n)
	for i := range out {
		out[i] = c.Next()
	}
	return out
}

// TestSubscriptionLimit: with the default limits a connection holds
// DefaultSubscriptionsPerConnection subscriptions; the next subscribe gets limit_exceeded and
// the connection stays usable (a subscribe after an unsubscribe works again).
func TestSubscriptionLimit(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	most := configs.DefaultSubscriptionsPerConnection
	sub := func(i int) map[string]any {
		return map[string]any{"type": "subscribe", "id": fmt.Sprint(i), "channel": fmt.Sprintf("many.%d", i)}
	}
	for from := 0; from < most; from += 128 {
		for _, f := range batch(t, c, from, min(128, most-from), sub) {
			if f.Str("type") != "subscribed" {
				t.Fatalf("subscribe within the limit: %v", f)
			}
		}
	}
	f := batch(t, c, most, 1, sub)[0]
	if f.Str("type") != "error" || f.Str("code") != "limit_exceeded" || f.Str("id") != fmt.Sprint(most) {
		t.Fatalf("subscribe %d: %v, want error limit_exceeded", most+1, f)
	}
	c.Send(`{"type":"ping","id":"still"}`)
	c.Expect("pong")
	// At the limit, a subscribe to a channel held already is still the duplicate it is.
	c.Send(`{"type":"subscribe","id":"dup","channel":"many.1"}`)
	if f := c.Next(); f.Str("code") != "bad_request" {
		t.Fatalf("duplicate subscribe at the limit: %v, want bad_request", f)
	}
	c.Send(`{"type":"unsubscribe","id":"u","channel":"many.0"}`)
	c.Expect("unsubscribed")
	if f := c.Subscribe("again"); f.Str("channel") != "again" {
		t.Fatalf("subscribe after an unsubscribe: %v", f)
	}
}

// TestDefaultSubscribeRate: with the default limits, a connection may send the whole subscribe
// burst at once (resubscribing everything after a reconnect is never refused), and a flood
// beyond it gets rate_limited.
func TestDefaultSubscribeRate(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("dup")
	sub := func(i int) map[string]any { // refused as a duplicate, but counted by the rate
		return map[string]any{"type": "subscribe", "id": fmt.Sprint(i), "channel": "dup"}
	}
	burst := configs.DefaultSubscribeBurst - 1 // the first subscribe above took one
	sent := 0
	for ; sent < burst; sent += 64 {
		for _, f := range batch(t, c, sent, min(64, burst-sent), sub) {
			if f.Str("code") != "bad_request" {
				t.Fatalf("subscribe %s within the burst: %v", f.Str("id"), f)
			}
		}
	}
	for limited := false; !limited; sent += 16 {
		if sent > 100*configs.DefaultSubscribeBurst {
			t.Fatalf("%d subscribes, none rate_limited", sent)
		}
		for _, f := range batch(t, c, sent, 16, sub) {
			limited = limited || f.Str("code") == "rate_limited"
		}
	}
}

// TestPersistentAbuserIsDisconnected: with the default limits, a connection that keeps
// publishing over its rate gets rate_limited answers, then, after
// DefaultRateLimitedDisconnect of them, the disconnect frame rate_limited (reconnect false)
// and close 1008. The rate-limited frames are logged at info, one line a second at most.
func TestPersistentAbuserIsDisconnected(t *testing.T) {
	var logs logBuffer
	start := time.Now()
	n := startNode(t, testConfig(t), gateway.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "mallory"))
	pub := func(i int) map[string]any {
		return map[string]any{"type": "publish", "id": fmt.Sprint(i), "channel": "flood", "data": i}
	}
	acked, limited, writable := 0, 0, true
	var disconnect wstest.Frame
	for sent, size := 0, 50; disconnect == nil; sent += size {
		if sent > 100*configs.DefaultPublishBurst {
			t.Fatalf("%d publishes, %d acked, %d rate_limited, never disconnected", sent, acked, limited)
		}
		// Once rate_limited answers come, one publish at a time: the server closes the socket
		// right after the disconnect, and a frame of ours still arriving then would make the
		// kernel reset the connection, dropping the disconnect frame before we read it. (A batch
		// of 50 spends at most 50 of the 100 strikes, so the disconnect comes in lockstep.)
		if limited > 0 {
			size = 1
		}
		for i := sent; i < sent+size && writable; i++ {
			writable = c.Conn.WriteJSON(pub(i)) == nil
		}
		for range size {
			f, err := c.Read(wstest.Timeout)
			if err != nil {
				t.Fatalf("after %d acked and %d rate_limited: %v", acked, limited, err)
			}
			switch {
			case f.Str("type") == "ack":
				if limited > 0 {
					continue // the rate gave a token back meanwhile
				}
				acked++
			case f.Str("type") == "disconnect":
				disconnect = f
			case f.Str("type") == "error" && f.Str("code") == "rate_limited":
				limited++
			default:
				t.Fatalf("publish answered %v", f)
			}
			if disconnect != nil {
				break
			}
		}
	}
	if acked < configs.DefaultPublishBurst {
		t.Fatalf("only %d publishes acked before the first rate_limited, want the burst of %d", acked, configs.DefaultPublishBurst)
	}
	if limited < configs.DefaultRateLimitedDisconnect {
		t.Fatalf("disconnected after %d rate_limited answers, want at least %d", limited, configs.DefaultRateLimitedDisconnect)
	}
	if disconnect.Str("code") != "rate_limited" || disconnect.Bool("reconnect") {
		t.Fatalf("disconnect %v, want rate_limited without reconnect", disconnect)
	}
	if ce := c.Closed(); ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("closed with %d, want 1008", ce.Code)
	}
	out := logs.String()
	most := 1 + int(time.Since(start)/time.Second)
	if got := strings.Count(out, `level=INFO msg="frame rate limited"`); got < 1 || got > most {
		t.Fatalf("%d log lines for %d rate-limited frames, want 1 to %d:\n%s", got, limited, most, out)
	}
	if !strings.Contains(out, "connection disconnected: it kept sending over its rate limits") {
		t.Fatalf("the disconnect was not logged:\n%s", out)
	}
}

// TestForbiddenPublishesAreRateLimited: publishes the token does not allow cost the rate too, so
// a flood of them is answered rate_limited (and earns strikes), not forbidden for ever.
func TestForbiddenPublishesAreRateLimited(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_LIMITS_PUBLISH_RATE=0.1", "GATEWAY_LIMITS_PUBLISH_BURST=5"))
	c, _ := wstest.Dial(t, n.URL, token(t, "eve", time.Hour, []string{"*"}, nil)) // may publish nowhere
	pub := func(i int) map[string]any {
		return map[string]any{"type": "publish", "id": fmt.Sprint(i), "channel": "closed", "data": i}
	}
	var codes []string
	for _, f := range batch(t, c, 0, 8, pub) {
		codes = append(codes, f.Str("code"))
	}
	want := []string{"forbidden", "forbidden", "forbidden", "forbidden", "forbidden", "rate_limited", "rate_limited", "rate_limited"}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("answers %v, want %v", codes, want)
	}
}
