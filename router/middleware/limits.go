package middleware

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/internal/protocol"
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

// Poison publishes a copy of a message whose handling failed for good (not the client's fault)
// to topic, with the reason in metadata "poison_reason" and the handler in "poison_handler", and
// still returns the error, so the client is told. publish failing too is only counted.
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
	c.Metadata.Set("poison_reason", reason)
	c.Metadata.Set("poison_handler", message.HandlerNameFromCtx(msg.Context()))
	poisoned.Inc()
	_ = publish(topic, c)
}

// Observe counts every message by handler and outcome and times its handling.
func Observe(handled *prometheus.CounterVec, duration *prometheus.HistogramVec) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			start := time.Now()
			out, err := h(msg)
			name := message.HandlerNameFromCtx(msg.Context())
			outcome := "ack"
			if err != nil {
				outcome = "error"
			}
			handled.WithLabelValues(name, outcome).Inc()
			duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
			return out, err
		}
	}
}
