package pusher

import (
	"strings"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

func TestNativeChannel(t *testing.T) {
	cases := map[string]string{
		"news":                   "pusher:app1:news",
		"private-chat.room_1-a":  "pusher:app1:private-chat.room_1-a",
		"presence-a=b@c,d;e":     "pusher:app1:presence-a:eb:ac:cd:se",
		"=@,;":                   "pusher:app1::e:a:c:s",
		"#server-to-user-a=b":    "pusher:app1::hserver-to-user-a:eb",
		strings.Repeat("x", 116): "pusher:app1:" + strings.Repeat("x", 116), // 128 in all
	}
	for name, want := range cases {
		got, err := NativeChannel("app1", name)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", name, got, err, want)
			continue
		}
		if !protocol.ValidChannel(got) {
			t.Errorf("%q: %q is not a native channel name", name, got)
		}
		app, back, ok := PusherChannel(got)
		if !ok || app != "app1" || back != name {
			t.Errorf("%q: back to %q %q %v", name, app, back, ok)
		}
	}
}

func TestNativeChannelRefuses(t *testing.T) {
	for name, want := range map[string]error{
		"":                        errBadName,
		"a b":                     errBadName,
		"a:b":                     errBadName, // ':' is the escape: never in a Pusher name
		"é":                       errBadName,
		"#server-to-user-":        errBadName, // a user's channel names its user
		"#other-1":                errBadName, // '#' starts a user's channel only
		"a#server-to-user-1":      errBadName,
		"#server-to-user-a#b":     errBadName,
		"#server-to-user-1":       nil,
		strings.Repeat("x", 165):  errBadName,
		strings.Repeat("x", 117):  errTooLong, // 129 mapped
		strings.Repeat("=", 59):   errTooLong, // 12 + 118 mapped
		"private-" + "x;y" + "=z": nil,
	} {
		if _, err := NativeChannel("app1", name); err != want {
			t.Errorf("%q: %v, want %v", name, err, want)
		}
	}
}

func TestAppsAreApart(t *testing.T) {
	a, _ := NativeChannel("app1", "news")
	b, _ := NativeChannel("app2", "news")
	if a == b {
		t.Fatal("two apps' channels map to one native channel")
	}
	if strings.HasPrefix(b, AppPrefix("app1")) || !strings.HasPrefix(b, AppPrefix("app2")) {
		t.Fatalf("%s is under the wrong app's prefix", b)
	}
}

func TestPusherChannelRefusesOthers(t *testing.T) {
	for _, native := range []string{"news", "pusher:", "pusher:app1", "pusher::news", "pusher:app1:", "pusher:app1:a:x", "pusher:app1:a:"} {
		if app, name, ok := PusherChannel(native); ok {
			t.Errorf("%q read as app %q channel %q", native, app, name)
		}
	}
}
