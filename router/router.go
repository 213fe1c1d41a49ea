// Package router builds the node's Watermill router and its middleware chain, in one order, and
// owns the router's in-process sources: Inbox (what sessions and the HTTP API submit; Submit
// waits for the router's ack or nack) and Feed (the node's broker subscriptions of the channels it
// has local subscribers for, merged into one Watermill subscription).
//
// Every handler (router level, outermost first):
//  1. Outcome: the final error of a client's message becomes that client's error frame.
//  2. Recoverer: a panic in a handler becomes an error (the node stays up).
//  3. CorrelationID: every message carries a correlation id through the chain.
//  4. Observe: messages and handling time by handler and outcome (Prometheus).
//  5. the operator's middleware, in the order given (gateway.WithMiddleware).
//
// The inbound handler (client publish/send, API publishes, lifecycle events -> broker) adds:
//  6. RateLimit: per connection and per user (`rate_limited`); before Authorize, so that
//     refused frames cost the client its rate too.
//  7. Authorize: a client publishes only where its token allows.
//  8. Dedupe: a msg_id accepted within the window is acked again but not published again; keys
//     are kept only after success, so a failed attempt can be retried.
//  9. Poison: what still fails after the retries is copied to the poison topic with the reason
//     (the client still gets `unavailable`).
//  10. CircuitBreaker: after many consecutive broker failures, fail fast for a while.
//  11. Retry: exponential backoff with jitter, max attempts and elapsed time; protocol errors
//     (forbidden, rate_limited, ...) are not retried.
//  12. Timeout: bounds one attempt with a deadline on the message's context, on the calling
//     goroutine (nothing of an attempt outlives it).
//
// The channel and direct handlers (broker -> clients) add, when signatures are required:
//  6. VerifySignature: a service message without a valid HMAC signature is dropped to the poison
//     topic and counted, never delivered.
package router

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker"
	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/signing"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
)

// Handler names.
const (
	HandlerInbound = "inbound"
	HandlerChannel = "channel"
	HandlerDirect  = "direct"
)

// Sources are the subscribers the router consumes.
type Sources struct {
	Inbox  message.Subscriber // InboxTopic: what clients and the API submit
	Feed   message.Subscriber // FeedTopic: channel messages for local subscribers
	Direct message.Subscriber // protocol.TopicDirect: session and broadcast messages
}

// Funcs are the product's logic (package handlers).
type Funcs struct {
	Inbound      message.NoPublishHandlerFunc
	Channel      message.NoPublishHandlerFunc
	Direct       message.NoPublishHandlerFunc
	Authorize    func(*message.Message) error
	DedupeKey    func(*message.Message) string
	RateLimiters func(*message.Message) []*rate.Limiter
}

// Options set the chain.
type Options struct {
	Dedupe           middleware.DedupeStore
	DedupeWindow     time.Duration
	DedupeHold       time.Duration // how long an attempt holds its key
	RetryAttempts    int
	RetryInitial     time.Duration
	RetryMaxElapsed  time.Duration
	Timeout          time.Duration
	BreakerFailures  int
	BreakerOpenFor   time.Duration
	PoisonTopic      string // logical topic; empty: no poison queue
	Publish          func(topic string, msg *message.Message) error
	Signatures       *signing.Keys // with RequireSignature, service messages must be signed
	RequireSignature bool
	Metrics          *metrics.Metrics
	CloseTimeout     time.Duration
	Extra            []message.HandlerMiddleware
}

// New builds the router; the caller runs it (Run) and closes it (Close).
func New(src Sources, h Funcs, opt Options, log *slog.Logger) (*message.Router, error) {
	logger := quietLogger{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}), log}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: opt.CloseTimeout}, logger)
	if err != nil {
		return nil, err
	}
	r.AddMiddleware(middleware.Outcome, wmw.Recoverer, wmw.CorrelationID,
		middleware.Observe(opt.Metrics.RouterHandled, opt.Metrics.RouterDuration))
	r.AddMiddleware(opt.Extra...)

	inbound := r.AddConsumerHandler(HandlerInbound, InboxTopic, src.Inbox, h.Inbound)
	chain := []message.HandlerMiddleware{
		middleware.RateLimit(h.RateLimiters), // first: a refused frame costs the client a token too
		middleware.Authorize(h.Authorize),
		middleware.Dedupe(middleware.DedupeConfig{
			Store: opt.Dedupe, Window: opt.DedupeWindow, Hold: opt.DedupeHold, KeyOf: h.DedupeKey,
		}),
	}
	poison := middleware.PoisonConfig{Topic: opt.PoisonTopic, Publish: opt.Publish, Poisoned: opt.Metrics.Poisoned}
	if opt.PoisonTopic != "" {
		chain = append(chain, middleware.Poison(poison))
	}
	breaker := wmw.NewCircuitBreaker(gobreaker.Settings{
		Name:         "broker-publish",
		Timeout:      opt.BreakerOpenFor,
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(opt.BreakerFailures) },
		IsSuccessful: brokerSucceeded,
	})
	chain = append(chain, breaker.Middleware,
		countRetries(wmw.Retry{
			MaxRetries:          opt.RetryAttempts,
			InitialInterval:     opt.RetryInitial,
			MaxInterval:         opt.RetryMaxElapsed,
			Multiplier:          2,
			RandomizationFactor: 0.5,
			MaxElapsedTime:      opt.RetryMaxElapsed,
			ShouldRetry: func(p wmw.RetryParams) bool {
				var pe *protocol.Error
				return !errors.As(p.Err, &pe)
			},
		}.Middleware, opt.Metrics.RouterRetries),
		middleware.Timeout(opt.Timeout),
	)
	inbound.AddMiddleware(chain...)

	channel := r.AddConsumerHandler(HandlerChannel, FeedTopic, src.Feed, h.Channel)
	direct := r.AddConsumerHandler(HandlerDirect, protocol.TopicDirect, src.Direct, h.Direct)
	if opt.RequireSignature {
		quarantine := func(msg *message.Message, reason string) {
			if opt.PoisonTopic != "" {
				poison.Quarantine(msg, reason)
			}
		}
		verify := func(topicOf func(*message.Message) string) message.HandlerMiddleware {
			return middleware.VerifySignature(middleware.SignatureConfig{
				Keys: opt.Signatures, TopicOf: topicOf, Rejected: opt.Metrics.Unsigned, Quarantine: quarantine, Log: log,
			})
		}
		channel.AddMiddleware(verify(func(m *message.Message) string {
			return protocol.ChannelTopic(m.Metadata.Get(protocol.MetaChannel))
		}))
		direct.AddMiddleware(verify(func(*message.Message) string { return protocol.TopicDirect }))
	}
	return r, nil
}

// quietLogger logs at debug level the errors that are the client's doing (a forbidden publish),
// which Watermill's router would log as errors. It drops Info (logged at debug level), Debug and
// Trace calls at once when log would not write them: Watermill's router makes two Trace calls
// per message, and its slog adapter turns their fields into attributes before slog looks at
// the level.
type quietLogger struct {
	watermill.LoggerAdapter
	log *slog.Logger // what the adapter writes to, for its levels
}

func (l quietLogger) Info(msg string, fields watermill.LogFields) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.LoggerAdapter.Info(msg, fields)
	}
}

func (l quietLogger) Debug(msg string, fields watermill.LogFields) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.LoggerAdapter.Debug(msg, fields)
	}
}

func (l quietLogger) Trace(msg string, fields watermill.LogFields) {
	if l.log.Enabled(context.Background(), watermill.LevelTrace) {
		l.LoggerAdapter.Trace(msg, fields)
	}
}

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Code != protocol.CodeInternal {
		l.LoggerAdapter.Debug(msg+": "+err.Error(), fields)
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(fields), l.log}
}

// brokerSucceeded is the circuit breaker's success: no error, or a refusal of the client's
// (forbidden, rate_limited, ...), which is no broker failure. The error's inspection is in a
// function of its own: its target would otherwise be allocated for every message, errors or not.
func brokerSucceeded(err error) bool {
	return err == nil || clientRefusal(err)
}

func clientRefusal(err error) bool {
	var pe *protocol.Error
	return errors.As(err, &pe) && pe.Code != protocol.CodeUnavailable
}

// countRetries is the retry middleware, counting every attempt after the first of a message.
func countRetries(retry message.HandlerMiddleware, retries prometheus.Counter) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			attempts := 0
			return retry(func(m *message.Message) ([]*message.Message, error) {
				if attempts++; attempts > 1 {
					retries.Inc()
				}
				return h(m)
			})(msg)
		}
	}
}
