package middleware

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrTimeout is returned by Timeout when the handler did not finish in time.
var ErrTimeout = errors.New("handler timed out")

// Timeout bounds one run of the rest of the chain: after d it returns ErrTimeout (and the
// message's context is cancelled) while the handler, which must respect bounded broker calls,
// finishes in the background.
func Timeout(d time.Duration) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, cancel := context.WithTimeout(msg.Context(), d)
			defer cancel()
			type result struct {
				out []*message.Message
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := h(msg)
				done <- result{out, err}
			}()
			select {
			case r := <-done:
				return r.out, r.err
			case <-ctx.Done():
				return nil, ErrTimeout
			}
		}
	}
}
