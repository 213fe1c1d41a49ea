package middleware

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/protocol"
)

// Metadata keys of the copies Poison and Quarantine publish to the poison topic.
const (
	// ReasonForPoisonedKey holds why the message was poisoned (the handler's final error, or why
	// its signature was refused).
	ReasonForPoisonedKey = "poison_reason"
	// PoisonedHandlerKey holds the name of the router handler that poisoned the message.
	PoisonedHandlerKey = "poison_handler"
)

// PoisonConfig is where Poison and Quarantine put a message that must not be lost silently.
type PoisonConfig struct {
	// Topic is the poison topic (logical) the copies are published to.
	Topic string
	// Publish publishes a copy to Topic; an error is ignored (the copy is counted all the same).
	Publish func(topic string, msg *message.Message) error
	// Poisoned counts the copies, published or not.
	Poisoned prometheus.Counter
}

// Poison publishes a copy of a message whose handling failed for good (not the client's fault)
// to the poison topic (Quarantine), and still returns the error, so the client is told.
func Poison(cfg PoisonConfig) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || clientFault(err) {
				return out, err
			}
			cfg.Quarantine(msg, err.Error())
			return out, err
		}
	}
}

// Quarantine publishes a copy of msg to the poison topic, with reason in metadata
// ReasonForPoisonedKey and the router handler in PoisonedHandlerKey.
func (cfg PoisonConfig) Quarantine(msg *message.Message, reason string) {
	c := msg.Copy()
	c.Metadata.Set(ReasonForPoisonedKey, reason)
	c.Metadata.Set(PoisonedHandlerKey, message.HandlerNameFromCtx(msg.Context()))
	cfg.Poisoned.Inc()
	_ = cfg.Publish(cfg.Topic, c)
}

// clientFault reports whether err is the sender's doing (not worth retrying or keeping).
func clientFault(err error) bool {
	var pe *protocol.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case protocol.CodeUnavailable, protocol.CodeInternal:
		return false
	}
	return true
}
