package middleware

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

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
