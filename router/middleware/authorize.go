package middleware

import "github.com/ThreeDotsLabs/watermill/message"

// Authorize refuses a message when check returns an error, before anything else runs.
func Authorize(check func(*message.Message) error) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if err := check(msg); err != nil {
				return nil, err
			}
			return h(msg)
		}
	}
}
