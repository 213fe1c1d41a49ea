// Package router builds the node's Watermill router and its middleware chain, in one order:
//
// Every handler (router level, outermost first):
//  1. Outcome: the final error of a client's message becomes that client's error frame.
//  2. Recoverer: a panic in a handler becomes an error (the node stays up).
//  3. CorrelationID: every message carries a correlation id through the chain.
//  4. the operator's middleware, in the order given (Options.Extra).
//
// The inbound handler (client publish/send and API publishes -> broker) adds:
//  5. Authorize: a client publishes only where its token allows.
//  6. Dedupe: a msg_id accepted within the window is acked again but not published again; keys
//     are kept only after success, so a failed attempt can be retried.
//  7. Retry: broker publishes are retried with exponential backoff and jitter; protocol errors
//     (forbidden, bad_request) are not retried.
//
// Then the handler itself. Deliveries from the broker (channel feed, direct topic) go through
// 1-4 only.
package router

import (
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/wsgateway/gateway/internal/protocol"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
)

// Handler names.
const (
	HandlerInbound = "inbound"
	HandlerChannel = "channel"
	HandlerDirect  = "direct"
)

// Sources are the subscribers the router consumes.
type Sources struct {
	Inbox  message.Subscriber // transports.InboxTopic: what clients and the API submit
	Feed   message.Subscriber // transports.FeedTopic: channel messages for local subscribers
	Direct message.Subscriber // transports.TopicDirect: session and broadcast messages
}

// Handlers are the product's logic (package handlers).
type Handlers struct {
	Inbound   message.NoPublishHandlerFunc
	Channel   message.NoPublishHandlerFunc
	Direct    message.NoPublishHandlerFunc
	Authorize func(*message.Message) error
	DedupeKey func(*message.Message) string
}

// Options set the chain.
type Options struct {
	Dedupe          middleware.DedupeStore
	DedupeWindow    time.Duration
	DedupeHold      time.Duration // how long an attempt holds its key
	RetryAttempts   int
	RetryInitial    time.Duration
	RetryMaxElapsed time.Duration
	CloseTimeout    time.Duration
	Extra           []message.HandlerMiddleware
}

// New builds the router; the caller runs it (Run) and closes it (Close).
func New(src Sources, h Handlers, opt Options, log *slog.Logger) (*message.Router, error) {
	logger := quietLogger{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: opt.CloseTimeout}, logger)
	if err != nil {
		return nil, err
	}
	r.AddMiddleware(middleware.Outcome, wmw.Recoverer, wmw.CorrelationID)
	r.AddMiddleware(opt.Extra...)

	inbound := r.AddConsumerHandler(HandlerInbound, transports.InboxTopic, src.Inbox, h.Inbound)
	inbound.AddMiddleware(
		middleware.Authorize(h.Authorize),
		middleware.Dedupe(opt.Dedupe, opt.DedupeWindow, opt.DedupeHold, h.DedupeKey),
		wmw.Retry{
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
		}.Middleware,
	)
	r.AddConsumerHandler(HandlerChannel, transports.FeedTopic, src.Feed, h.Channel)
	r.AddConsumerHandler(HandlerDirect, transports.TopicDirect, src.Direct, h.Direct)
	return r, nil
}

// quietLogger logs at debug level the errors that are the client's doing (a forbidden publish),
// which Watermill's router would log as errors.
type quietLogger struct{ watermill.LoggerAdapter }

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Code != protocol.CodeInternal {
		l.LoggerAdapter.Debug(msg+": "+err.Error(), fields)
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(fields)}
}
