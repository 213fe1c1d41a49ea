package gateway_test

import (
	"testing"

	"github.com/gorilla/websocket"

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
