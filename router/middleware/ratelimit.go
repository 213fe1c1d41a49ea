package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/protocol"
)

// RateLimit refuses a message with `rate_limited` when one of the limiters limitersOf returns for
// it (the sender's connection and user, for instance) has no token left. Messages with no
// limiters pass.
func RateLimit(limitersOf func(*message.Message) []*rate.Limiter) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			for _, l := range limitersOf(msg) {
				if l != nil && !l.Allow() {
					return nil, protocol.Errorf(protocol.CodeRateLimited, "too many messages; slow down")
				}
			}
			return h(msg)
		}
	}
}
