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

// Poison publishes a copy of a message whose handling failed for good (not the client's fault)
// to topic, with the reason in metadata ReasonForPoisonedKey and the handler in
// PoisonedHandlerKey, and still returns the error, so the client is told. publish failing too
// is only counted.
func Poison(topic string, publish func(topic string, msg *message.Message) error, poisoned prometheus.Counter) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || clientFault(err) {
				return out, err
			}
			Quarantine(topic, publish, poisoned, msg, err.Error())
			return out, err
		}
	}
}

// Quarantine publishes a copy of msg to the poison topic with reason.
func Quarantine(topic string, publish func(string, *message.Message) error, poisoned prometheus.Counter, msg *message.Message, reason string) {
	c := msg.Copy()
	c.Metadata.Set(ReasonForPoisonedKey, reason)
	c.Metadata.Set(PoisonedHandlerKey, message.HandlerNameFromCtx(msg.Context()))
	poisoned.Inc()
	_ = publish(topic, c)
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
