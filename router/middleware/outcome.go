package middleware

import (
	"context"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Outcome records the error the rest of the chain returned on messages whose context came from
// WithOutcome (what router.Inbox submits), so the client that sent it gets that error
// (forbidden, unavailable, ...) rather than a bare nack. It must be the outermost middleware.
func Outcome(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			if o, ok := msg.Context().Value(outcomeKey{}).(*outcome); ok {
				o.set(err)
			}
		}
		return out, err
	}
}

// WithOutcome returns a context for a message whose final error Outcome records, and the
// function that returns that error (nil while none was recorded). Safe for concurrent use.
func WithOutcome(ctx context.Context) (context.Context, func() error) {
	o := &outcome{Context: ctx}
	return o, o.get
}

type outcomeKey struct{}

// outcome is the context WithOutcome returns and the error recorded in it, in one value: one
// allocation per submitted message instead of a context value and what it carries.
type outcome struct {
	context.Context
	mu  sync.Mutex
	err error
}

func (o *outcome) Value(key any) any {
	if _, ok := key.(outcomeKey); ok {
		return o
	}
	return o.Context.Value(key)
}

func (o *outcome) set(err error) {
	o.mu.Lock()
	o.err = err
	o.mu.Unlock()
}

func (o *outcome) get() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
