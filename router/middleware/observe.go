package middleware

import (
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// Observe counts every message by handler and outcome and times its handling. The series of
// the handler it wraps are looked up once, on its first message, not per message (a router
// wraps each of its handlers on its own; should a wrapped handler run under another name,
// that name's series are looked up then).
func Observe(handled *prometheus.CounterVec, duration *prometheus.HistogramVec) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		var last atomic.Pointer[observed]
		return func(msg *message.Message) ([]*message.Message, error) {
			start := time.Now()
			out, err := h(msg)
			name := message.HandlerNameFromCtx(msg.Context())
			s := last.Load()
			if s == nil || s.name != name {
				s = &observed{name: name, acks: handled.WithLabelValues(name, "ack"), duration: duration.WithLabelValues(name)}
				last.Store(s)
			}
			if err != nil {
				handled.WithLabelValues(name, "error").Inc() // rare: not kept
			} else {
				s.acks.Inc()
			}
			s.duration.Observe(time.Since(start).Seconds())
			return out, err
		}
	}
}

// observed are the series of one handler.
type observed struct {
	name     string
	acks     prometheus.Counter
	duration prometheus.Observer
}
