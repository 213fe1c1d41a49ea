package handlers

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

type otherKey struct{}

// TestSubmissionContext: a submitted message's context carries the client's state (none for the
// API), the position slot Inbound fills and its parent's values, in one allocation.
func TestSubmissionContext(t *testing.T) {
	parent := context.WithValue(context.Background(), otherKey{}, "parent's")
	st := &state{}
	ctx, position := withSubmission(parent, st)
	if got, ok := stateFrom(ctx); !ok || got != st {
		t.Fatalf("stateFrom: %p %v, want %p", got, ok, st)
	}
	if ctx.Value(otherKey{}) != "parent's" {
		t.Fatal("the parent's value is lost")
	}
	ctx.Value(positionKey{}).(*positionSlot).set(protocol.Position{Epoch: "e7", Lo: 9})
	if p := position(); p != (protocol.Position{Epoch: "e7", Lo: 9}) {
		t.Fatalf("position %v", p)
	}
	api, _ := withSubmission(parent, nil)
	if _, ok := stateFrom(api); ok {
		t.Fatal("the API's submission carries a client state")
	}
	allocs := testing.AllocsPerRun(100, func() {
		ctx, position := withSubmission(context.Background(), st)
		if _, ok := stateFrom(ctx); !ok {
			t.Fatal("no state")
		}
		ctx.Value(positionKey{}).(*positionSlot).set(protocol.Position{Lo: 1})
		if position().IsZero() {
			t.Fatal("no position")
		}
	})
	if allocs != 1 {
		t.Fatalf("%v allocations per submission, want 1", allocs)
	}
}

// TestPublishIDs: a client message with a msg_id gets the UUID of its idempotency key, as
// DedupeKey computes it from the message, without drawing a random UUID first; without a
// msg_id, a random UUID that is its msg_id too.
func TestPublishIDs(t *testing.T) {
	id, msgID := publishIDs(protocol.KindPublish, "alice", "s-1", "m-1")
	msg := message.NewMessage(id, nil)
	msg.Metadata = message.Metadata{protocol.MetaKind: protocol.KindPublish, protocol.MetaUser: "alice", protocol.MetaSession: "s-1", protocol.MetaMsgID: "m-1"}
	if msgID != "m-1" || id != protocol.IdempotentUUID(DedupeKey(msg)) {
		t.Fatalf("publishIDs with a msg_id: %s %s", id, msgID)
	}
	if id, msgID := publishIDs(protocol.KindSend, "alice", "s-1", ""); id == "" || msgID != id {
		t.Fatalf("publishIDs without a msg_id: %s %s", id, msgID)
	}
	// The UUID's text only (the key stays on the stack): no random UUID drawn and dropped.
	if n := testing.AllocsPerRun(100, func() { publishIDs(protocol.KindPublish, "alice", "s-1", "m-1") }); n > 1 {
		t.Fatalf("publishIDs with a msg_id: %v allocations, want 1", n)
	}
}
