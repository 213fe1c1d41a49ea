package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/transports"
)

// Outcome records the error the rest of the chain returned on messages submitted through a
// transports.Inbox, so the client that sent it gets that error (forbidden, unavailable, ...)
// rather than a bare nack. It must be the outermost middleware.
func Outcome(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			transports.RecordError(msg, err)
		}
		return out, err
	}
}
