package wsclient

import (
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

func TestSeen(t *testing.T) {
	for _, tc := range []struct {
		pos, last string
		want      bool
	}{
		{"m1:0:5:abc", "m1:0:5:abc", true},
		{"m1:0:4:abc", "m1:0:5:abc", true},
		{"m1:0:6:abc", "m1:0:5:abc", false},
		{"m1:1:0:abc", "m1:0:9:abc", false}, // hi first (Redis: ms, seq)
		{"m1:0:9:abc", "m1:1:0:abc", true},
		{"m2:0:1:abc", "m1:0:5:abc", false}, // another epoch
		{"m1:0:1:abd", "m1:0:5:abc", false}, // another channel
		{"m1:0:1:abc", "", false},
		{"", "m1:0:5:abc", false},
		{"junk", "junk", false},
		{":0:1:abc", ":0:1:abc", false}, // no epoch: not comparable
		{"m1:x:1:abc", "m1:0:5:abc", false},
		{"m1:0:1", "m1:0:5", false},
		{"m1:0:1:abc:extra", "m1:0:5:abc:extra", false},
		{"m1:-1:1:abc", "m1:0:5:abc", false},
		// As the gateway writes them.
		{protocol.Position{Epoch: "m1", Lo: 4}.ForChannel("room"), protocol.Position{Epoch: "m1", Lo: 5}.ForChannel("room"), true},
		{protocol.Position{Epoch: "m1", Lo: 6}.ForChannel("room"), protocol.Position{Epoch: "m1", Lo: 5}.ForChannel("room"), false},
		{protocol.Position{Epoch: "m1", Lo: 4}.ForChannel("hall"), protocol.Position{Epoch: "m1", Lo: 5}.ForChannel("room"), false},
		{protocol.Position{}.ForChannel("room"), protocol.Position{}.ForChannel("room"), false}, // no history
	} {
		if got := seen(tc.pos, tc.last); got != tc.want {
			t.Errorf("seen(%q, %q) = %v, want %v", tc.pos, tc.last, got, tc.want)
		}
	}
}

func TestWSURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://h:8080":         "ws://h:8080/ws",
		"https://h/":            "wss://h/ws",
		"ws://h/ws":             "ws://h/ws",
		"wss://lb/gateway":      "wss://lb/gateway/ws",
		"http://h/ws?region=eu": "ws://h/ws?region=eu",
		"https://h/prefix/ws/":  "wss://h/prefix/ws",
	} {
		got, err := wsURL(in)
		if err != nil || got != want {
			t.Errorf("wsURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://h", "http://", "://x"} {
		if _, err := wsURL(bad); err == nil {
			t.Errorf("wsURL(%q) accepted", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{opts: Options{MinBackoff: 100, MaxBackoff: 1000}}
	for n := 0; n < 40; n++ {
		limit := min(int64(100)<<min(n, 10), 1000)
		for range 50 {
			if d := c.backoff(n); d < 0 || int64(d) >= limit {
				t.Fatalf("backoff(%d) = %v, want [0, %d)", n, d, limit)
			}
		}
	}
}
