package gateway_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/wstest"
)

// TestInvalidUTF8PublishIsRefusedWith1007: a publish whose text frame holds invalid UTF-8
// (0xff 0xfe inside the data string) closes the publisher's connection with 1007 and reaches
// no subscriber (it used to be delivered as base64).
func TestInvalidUTF8PublishIsRefusedWith1007(t *testing.T) {
	n := startNode(t, testConfig(t))
	sub, _ := wstest.Dial(t, n.URL, allowAll(t, "reader"))
	sub.Subscribe("utf8")
	bad, _ := wstest.Dial(t, n.URL, allowAll(t, "mallory"))
	bad.Send([]byte("{\"type\":\"publish\",\"id\":\"p\",\"channel\":\"utf8\",\"data\":\"\xff\xfe\"}"))
	if ce := bad.Closed(); ce.Code != websocket.CloseInvalidFramePayloadData || ce.Text != "invalid_utf8" {
		t.Fatalf("closed with %d %q, want 1007 invalid_utf8", ce.Code, ce.Text)
	}
	good, _ := wstest.Dial(t, n.URL, allowAll(t, "writer"))
	good.Publish("utf8", "after", "")
	if m := sub.Expect("message"); m.Data() != `"after"` {
		t.Fatalf("the subscriber got %v first, want only the valid message", m)
	}
}

// expectJSONError checks that a refused upgrade answered application/json with
// {"error":{"code":code,"message":...}} (docs/protocol.md, Connecting).
func expectJSONError(t *testing.T, resp *http.Response, code string) {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d answered %q, want application/json", resp.StatusCode, ct)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != code || body.Error.Message == "" {
		t.Fatalf("status %d body %+v (%v), want error code %q with a message", resp.StatusCode, body, err, code)
	}
}

// TestRefusedUpgradesAreLoggedRateLimited: refused upgrades are logged at info, one line per
// second at most (a flood of them writes one), and never with the token of the query string.
func TestRefusedUpgradesAreLoggedRateLimited(t *testing.T) {
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n := startNode(t, testConfig(t), gateway.WithLogger(log))
	const secretish = "not.a.jwt-SECRET-MARKER"
	start := time.Now()
	for range 20 {
		if _, resp, err := wstest.TryDial(t, n.URL, secretish, nil); err == nil || resp.StatusCode != 401 {
			t.Fatalf("bad token: %v", err)
		}
	}
	out := logs.String()
	most := 1 + int(time.Since(start)/time.Second) // one line per started second
	if got := strings.Count(out, "upgrade refused"); got < 1 || got > most {
		t.Fatalf("%d lines for 20 refused upgrades, want 1 to %d:\n%s", got, most, out)
	}
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, "status=401") {
		t.Fatalf("refused upgrade not logged at info with its status:\n%s", out)
	}
	if strings.Contains(out, "SECRET-MARKER") {
		t.Fatalf("the log holds the token:\n%s", out)
	}
}
