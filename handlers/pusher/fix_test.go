package pusher_test

import (
	"testing"
	"time"

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
