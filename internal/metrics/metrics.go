// Package metrics holds the Prometheus collectors of one gateway node. Each node has its own
// registry, so several nodes can run in one process (tests) without clashing.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the node's collectors. The zero value is not usable; use New.
type Metrics struct {
	Registry *prometheus.Registry

	Connections     prometheus.Gauge
	Subscriptions   prometheus.Gauge
	FramesIn        prometheus.Counter
	FramesOut       prometheus.Counter
	Published       *prometheus.CounterVec // by kind: publish, send, api
	Delivered       prometheus.Counter
	SlowDisconnects prometheus.Counter
	WriteBusy       prometheus.Gauge       // 1 while the node holds frames for websocket.latency_budget
	Rejected        *prometheus.CounterVec // client frames answered with an error, by code
	BrokerErrors    prometheus.Counter
	DeliveryLatency prometheus.Histogram
	Disconnects     *prometheus.CounterVec // by code
	UpgradesRefused *prometheus.CounterVec // by status
	EventsDropped   prometheus.Counter
	EventsQueued    prometheus.Gauge         // lifecycle events waiting for the broker or in flight
	RouterHandled   *prometheus.CounterVec   // by handler and outcome
	RouterDuration  *prometheus.HistogramVec // by handler
	Poisoned        prometheus.Counter
	RouterRetries   prometheus.Counter // broker publish attempts after the first
	Unsigned        prometheus.Counter

	WebhookDelivered    prometheus.Counter   // events POSTed and answered 2xx
	WebhookFailed       prometheus.Counter   // POST attempts that failed (error or non-2xx)
	WebhookPoisoned     prometheus.Counter   // events whose batch ran out of retry budget
	WebhookBatchLatency prometheus.Histogram // from a batch's first POST to its 2xx, retries included

	HookCalls   *prometheus.CounterVec   // by hook and outcome: allowed, denied, failed, cached
	HookLatency *prometheus.HistogramVec // by hook: one call to the backend, retries included (cache hits not)
}

// New registers every collector, plus the Go and process collectors, in a new registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry:        r,
		Connections:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_connections", Help: "Open WebSocket connections."}),
		Subscriptions:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_subscriptions", Help: "Channel subscriptions of open connections."}),
		FramesIn:        prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_frames_in_total", Help: "Frames received from clients."}),
		FramesOut:       prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_frames_out_total", Help: "Frames written to clients."}),
		Published:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_messages_published_total", Help: "Messages accepted by the broker, by kind (publish, send, api)."}, []string{"kind"}),
		Delivered:       prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_messages_delivered_total", Help: "Messages queued to client connections."}),
		SlowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_slow_consumer_disconnects_total", Help: "Connections closed because their send buffer was full (no message is dropped silently)."}),
		WriteBusy:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_write_busy", Help: "1 while the node is busy and holds frames up to websocket.latency_budget to write them together; 0 while it writes every frame at once."}),
		Rejected:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_frames_rejected_total", Help: "Client frames answered with an error, by code."}, []string{"code"}),
		BrokerErrors:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_broker_errors_total", Help: "Failed broker operations (publish, subscribe, replay)."}),
		DeliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gateway_delivery_latency_seconds", Help: "From publish to queueing on the connection.", Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		Disconnects:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_disconnects_total", Help: "Connections closed by the server, by disconnect code."}, []string{"code"}),
		RouterHandled:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_router_messages_total", Help: "Messages handled by the router, by handler and outcome."}, []string{"handler", "outcome"}),
		RouterDuration:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_router_handling_seconds", Help: "Time a router handler took, middleware included.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)}, []string{"handler"}),
		Poisoned:        prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_poisoned_total", Help: "Messages sent to the poison topic."}),
		RouterRetries:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_router_retries_total", Help: "Broker publishes of the inbound handler attempted again after a failure."}),
		Unsigned:        prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_signature_rejected_total", Help: "Service messages dropped for a missing or wrong signature."}),
		EventsDropped:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_events_dropped_total", Help: "Lifecycle events not published (queue full or broker refused)."}),
		EventsQueued:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_events_queued", Help: "Lifecycle events waiting for the broker, or being published (at most events.queue)."}),
		UpgradesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_upgrades_refused_total", Help: "WebSocket upgrades refused, by HTTP status."}, []string{"status"}),

		WebhookDelivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_webhook_events_delivered_total", Help: "Lifecycle events POSTed to webhooks.url and answered 2xx."}),
		WebhookFailed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_webhook_attempts_failed_total", Help: "Webhook POSTs that failed (no answer, or not 2xx)."}),
		WebhookPoisoned:  prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_webhook_events_poisoned_total", Help: "Lifecycle events whose webhook batch ran out of retry budget (sent to the poison topic)."}),
		WebhookBatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gateway_webhook_batch_seconds", Help: "From a webhook batch's first POST to its 2xx, retries included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600}}),

		HookCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_hook_calls_total",
			Help: "Hook decisions, by hook and outcome (allowed, denied, failed: no valid answer in time; cached: from the cache)."}, []string{"hook", "outcome"}),
		HookLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_hook_seconds", Help: "Time a hook call to the backend took, retries included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"hook"}),
	}
	for _, c := range []prometheus.Collector{m.Connections, m.Subscriptions, m.FramesIn, m.FramesOut, m.Published, m.Delivered,
		m.SlowDisconnects, m.WriteBusy, m.Rejected, m.BrokerErrors, m.DeliveryLatency, m.Disconnects, m.UpgradesRefused, m.EventsDropped, m.EventsQueued, m.RouterHandled, m.RouterDuration, m.Poisoned, m.RouterRetries, m.Unsigned,
		m.WebhookDelivered, m.WebhookFailed, m.WebhookPoisoned, m.WebhookBatchLatency, m.HookCalls, m.HookLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	// Label values that exist from the start, so dashboards see zeros rather than nothing.
	for _, kind := range []string{"publish", "send", "api"} {
		m.Published.WithLabelValues(kind)
	}
	for _, code := range []string{"shutdown", "slow_consumer", "token_expired", "policy", "rate_limited", "invalid_utf8"} {
		m.Disconnects.WithLabelValues(code)
	}
	for _, code := range []string{"bad_request", "forbidden", "not_found", "rate_limited", "limit_exceeded", "unavailable", "internal"} {
		m.Rejected.WithLabelValues(code)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
