package middleware

import (
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/internal/signing"
)

// SignatureConfig is what VerifySignature needs.
type SignatureConfig struct {
	// Keys verify the HMAC signatures.
	Keys *signing.Keys
	// TopicOf gives the logical topic a message was published to, which its signature covers.
	TopicOf func(*message.Message) string
	// Rejected counts the messages dropped.
	Rejected prometheus.Counter
	// Quarantine is handed each message dropped, with the reason (PoisonConfig.Quarantine, or a
	// func that does nothing when there is no poison topic).
	Quarantine func(msg *message.Message, reason string)
	// Log gets a warning for each message dropped.
	Log *slog.Logger
}

// VerifySignature drops (acks without delivering) a message whose HMAC signature is missing or
// wrong, counting it, logging it and handing it to Quarantine with the reason, so that a
// compromised topic writer cannot reach clients.
func VerifySignature(cfg SignatureConfig) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			topic := cfg.TopicOf(msg)
			if err := cfg.Keys.Verify(topic, msg); err != nil {
				cfg.Rejected.Inc()
				cfg.Log.Warn("service message dropped", "topic", topic, "message_uuid", msg.UUID, "reason", err.Error())
				cfg.Quarantine(msg, err.Error())
				return nil, nil
			}
			return h(msg)
		}
	}
}
