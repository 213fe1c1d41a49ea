package middleware

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/internal/signing"
)

// VerifySignature drops (acks without delivering) a message whose HMAC signature is missing or
// wrong, counting it and handing it to quarantine with the reason, so that a compromised topic
// writer cannot reach clients. topicOf gives the logical topic the message was published to.
func VerifySignature(keys *signing.Keys, topicOf func(*message.Message) string, rejected prometheus.Counter,
	quarantine func(*message.Message, string), log *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			topic := topicOf(msg)
			if err := keys.Verify(topic, msg); err != nil {
				rejected.Inc()
				log.Warn("service message dropped", "topic", topic, "message_uuid", msg.UUID, "reason", err.Error())
				quarantine(msg, err.Error())
				return nil, nil
			}
			return h(msg)
		}
	}
}
