package pusher

import (
	"testing"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// TestGoodbye: the node's disconnects reach Pusher clients as pusher:error with the code range
// pusher-js acts on (4200 reconnect, 4100 back off, 4009 stay away).
func TestGoodbye(t *testing.T) {
	s := New(Config{})
	for _, tc := range []struct {
		d    protocol.Disconnect
		code int
	}{
		{protocol.DisconnectShutdown, CodeReconnect},
		{protocol.DisconnectResubscribe, CodeReconnect},
		{protocol.DisconnectSlowConsumer, CodeOverCapacity},
		{protocol.DisconnectPolicy, CodeUnauthorized},
		{protocol.DisconnectRateLimited, CodeUnauthorized},
	} {
		g := s.Goodbye(nil, tc.d)
		if g.CloseCode() != tc.code || g.CloseReason() != tc.d.Code {
			t.Errorf("%s: close %d %q, want %d %q", tc.d.Code, g.CloseCode(), g.CloseReason(), tc.code, tc.d.Code)
		}
		if want := string(errorFrame(tc.code, tc.d.Reason)); string(g.Frame()) != want {
			t.Errorf("%s: frame %s, want %s", tc.d.Code, g.Frame(), want)
		}
	}
	own := goodbye{CodeUnknownApp, "no", "pusher_refused"}
	if g := s.Goodbye(nil, own); g != websocket.Goodbye(own) {
		t.Errorf("a Pusher goodbye was changed: %v", g)
	}
}
