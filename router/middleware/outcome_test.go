package middleware_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router"
	"github.com/wsgateway/gateway/router/middleware"
)

// submitThrough submits a message to an Inbox and handles it with h as the router would (nack
// on error), returning what Submit returned.
func submitThrough(t *testing.T, h func(*message.Message) ([]*message.Message, error)) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inbox := router.NewInbox()
	msgs, err := inbox.Subscribe(ctx, router.InboxTopic)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		m := <-msgs
		if _, err := h(m); err != nil {
			m.Nack()
			return
		}
		m.Ack()
	}()
	err = inbox.Submit(ctx, newMsg("x"))
	<-handled
	return err
}

func TestOutcomeReportsTheFinalErrorToTheSubmitter(t *testing.T) {
	refusal := protocol.Errorf(protocol.CodeForbidden, "no")
	h := &counting{err: refusal}
	if err := submitThrough(t, middleware.Outcome(h.handle)); !errors.Is(err, refusal) {
		t.Fatalf("Submit returned %v, want the handler's %v", err, refusal)
	}
	// Without Outcome the submitter only learns that the message was nacked.
	if err := submitThrough(t, h.handle); !errors.Is(err, router.ErrNacked) {
		t.Fatalf("Submit without Outcome returned %v, want ErrNacked", err)
	}
}

func TestOutcomeLeavesAnAckedMessageAlone(t *testing.T) {
	h := &counting{}
	if err := submitThrough(t, middleware.Outcome(h.handle)); err != nil || h.calls != 1 {
		t.Fatalf("Submit returned %v after %d handler calls, want nil after 1", err, h.calls)
	}
}

type parentKey struct{}

// TestWithOutcomeContext: the context WithOutcome returns keeps its parent's values, deadline
// and cancellation, and costs one allocation.
func TestWithOutcomeContext(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), parentKey{}, "v"))
	ctx, recorded := middleware.WithOutcome(parent)
	if ctx.Value(parentKey{}) != "v" || recorded() != nil {
		t.Fatal("the parent's value is lost, or an outcome was recorded already")
	}
	cancel()
	if ctx.Err() == nil {
		t.Fatal("the parent's cancellation did not reach the outcome's context")
	}
	if n := testing.AllocsPerRun(100, func() {
		_, recorded := middleware.WithOutcome(context.Background())
		_ = recorded()
	}); n != 1 {
		t.Fatalf("WithOutcome: %v allocations, want 1", n)
	}
}
