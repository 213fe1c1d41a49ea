package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrTimeout is returned by Timeout when the handler did not finish in time.
var ErrTimeout = errors.New("handler timed out")

// Timeout bounds one run of the rest of the chain (one attempt). The handler runs on the calling
// goroutine with the message's context cancelled after d, so nothing of the attempt outlives
// it; the handler must respect that context or bound its own broker calls (every broker bounds
// a publish by websocket.publish_timeout, the default of d). A handler that fails once the
// context is done returns ErrTimeout (with the handler's error as text), which the outer Retry
// retries; one that succeeded returns its result even when late, since its message was
// accepted. The message gets its own context back afterwards, for the next attempt.
//
// When the message's context already ends no later than d from now (an API publish or a
// client's publish waits for its ack for websocket.publish_timeout, the default of d), that
// deadline bounds the attempt as it is: the handler runs with the message's own context (which
// its submitter cancels once it has the outcome) and no context or timer is made for the attempt.
func Timeout(d time.Duration) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) > d {
				parent := ctx
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(parent, d)
				defer cancel()
				msg.SetContext(ctx)
				defer msg.SetContext(parent)
			}
			out, err := h(msg)
			if err != nil && ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %v", ErrTimeout, err)
			}
			return out, err
		}
	}
}
