package middleware_test

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
)

func TestAuthorizeRefusesWithTheErrorOfItsCheck(t *testing.T) {
	refusal := protocol.Errorf(protocol.CodeForbidden, "not yours")
	h := &counting{}
	mw := middleware.Authorize(func(m *message.Message) error {
		if m.Metadata.Get("user") == "mallory" {
			return refusal
		}
		return nil
	})(h.handle)

	m := newMsg("x")
	m.Metadata.Set("user", "mallory")
	if _, err := mw(m); !errors.Is(err, refusal) {
		t.Fatalf("error %v, want the check's %v", err, refusal)
	}
	if h.calls != 0 {
		t.Fatal("a refused message reached the handler")
	}
}

func TestAuthorizeRunsTheHandlerWhenTheCheckPasses(t *testing.T) {
	boom := errors.New("broker down")
	h := &counting{out: []*message.Message{newMsg("out")}, err: boom}
	mw := middleware.Authorize(func(*message.Message) error { return nil })(h.handle)
	out, err := mw(newMsg("x"))
	if !errors.Is(err, boom) || len(out) != 1 || h.calls != 1 {
		t.Fatalf("out %d, err %v, calls %d; want the handler's result", len(out), err, h.calls)
	}
}
