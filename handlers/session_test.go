package handlers

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/transports/websocket"
)

// TestConnectionWithoutState: a connection whose value is not what Admit makes (a programming
// error) is logged and let go by Open, and Frame and Close ignore it, instead of panicking.
func TestConnectionWithoutState(t *testing.T) {
	var logs bytes.Buffer
	s := NewSessions(SessionsConfig{Metrics: metrics.New(), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	c := &websocket.Conn{ID: "s1", Value: "not a state"} // no socket: Send and Disconnect do nothing
	s.Open(c)
	s.Frame(c, []byte(`{"type":"ping","id":"1"}`))
	s.Close(c)
	if !strings.Contains(logs.String(), "connection without session state") {
		t.Fatalf("not logged: %q", logs.String())
	}
}
