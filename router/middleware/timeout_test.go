package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/router/middleware"
)

// untilDone is a handler that waits for its message's context to end (or for stop) and returns
// err, like a broker call bounded by the context.
func untilDone(stop <-chan struct{}, err error) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		select {
		case <-msg.Context().Done():
			if err == nil {
				return []*message.Message{newMsg("late")}, nil
			}
			return nil, err
		case <-stop:
			return nil, errors.New("stopped by the test: the deadline never reached the handler")
		}
	}
}

func TestTimeoutReturnsErrTimeoutWhenTheHandlerFailsAtTheDeadline(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	for _, cause := range []error{context.DeadlineExceeded, errors.New("broker: flush timeout")} {
		_, err := middleware.Timeout(time.Millisecond)(untilDone(stop, cause))(newMsg("x"))
		if !errors.Is(err, middleware.ErrTimeout) {
			t.Fatalf("handler failing with %v at the deadline: error %v, want ErrTimeout", cause, err)
		}
	}
}

func TestTimeoutLeavesNoGoroutineAfterATimedOutAttempt(t *testing.T) {
	before := goleak.IgnoreCurrent()
	stop := make(chan struct{})
	defer close(stop) // frees a handler left behind, once the verdict is in
	_, err := middleware.Timeout(time.Millisecond)(untilDone(stop, context.DeadlineExceeded))(newMsg("x"))
	if !errors.Is(err, middleware.ErrTimeout) {
		t.Fatalf("error %v, want ErrTimeout", err)
	}
	goleak.VerifyNone(t, before)
}

func TestTimeoutReturnsWhatAHandlerInTimeReturned(t *testing.T) {
	boom := errors.New("boom")
	h := &counting{out: []*message.Message{newMsg("out")}, err: boom}
	out, err := middleware.Timeout(time.Hour)(h.handle)(newMsg("x"))
	if !errors.Is(err, boom) || errors.Is(err, middleware.ErrTimeout) || len(out) != 1 {
		t.Fatalf("out %d, err %v; want the handler's own result", len(out), err)
	}
}

func TestTimeoutKeepsALateSuccess(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	out, err := middleware.Timeout(time.Millisecond)(untilDone(stop, nil))(newMsg("x"))
	if err != nil || len(out) != 1 {
		t.Fatalf("out %d, err %v; a message the broker accepted must not be reported failed", len(out), err)
	}
}

type ctxKey struct{}

// contextSeen runs a message with context parent through Timeout(time.Hour): the message, and
// the context its handler saw.
func contextSeen(parent context.Context) (*message.Message, context.Context) {
	msg := newMsg("x")
	msg.SetContext(parent)
	var seen context.Context
	_, _ = middleware.Timeout(time.Hour)(func(m *message.Message) ([]*message.Message, error) {
		seen = m.Context()
		return nil, nil
	})(msg)
	return msg, seen
}

func TestTimeoutGivesTheMessageItsContextBack(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "outcome")
	msg, seen := contextSeen(parent)
	if _, ok := seen.Deadline(); !ok || seen.Value(ctxKey{}) != "outcome" {
		t.Fatal("the handler did not get a deadline derived from the message's context")
	}
	if msg.Context() != parent {
		t.Fatal("the next attempt would start with the cancelled context of this one")
	}
}

func TestTimeoutKeepsAnEarlierDeadlineOfTheMessage(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, seen := contextSeen(parent)
	want, _ := parent.Deadline()
	if got, ok := seen.Deadline(); !ok || !got.Equal(want) {
		t.Fatalf("the handler's deadline is %v (%v), want the message's own %v", got, ok, want)
	}
}

func TestTimeoutReturnsErrTimeoutAtTheMessagesOwnDeadline(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	msg := newMsg("x")
	msg.SetContext(parent)
	_, err := middleware.Timeout(time.Hour)(untilDone(stop, context.DeadlineExceeded))(msg)
	if !errors.Is(err, middleware.ErrTimeout) {
		t.Fatalf("handler failing at the message's deadline: error %v, want ErrTimeout", err)
	}
}

// BenchmarkTimeout is one attempt of a message whose own deadline comes first (an API
// publish's) and of one without a deadline.
func BenchmarkTimeout(b *testing.B) {
	h := middleware.Timeout(5 * time.Second)(func(*message.Message) ([]*message.Message, error) { return nil, nil })
	for _, bc := range []struct {
		name     string
		deadline bool
	}{{"earlier-deadline", true}, {"no-deadline", false}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			if bc.deadline {
				ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
			}
			defer cancel()
			msg := newMsg("x")
			msg.SetContext(ctx)
			b.ReportAllocs()
			for b.Loop() {
				_, _ = h(msg)
			}
		})
	}
}
