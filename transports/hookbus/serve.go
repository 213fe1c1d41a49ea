package hookbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/components/requestreply"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Responder is the service side's requestreply.Backend: OnCommandProcessed publishes a handler's
// reply on TopicReplies, addressed to the node that asked (MetaReplyNode) and correlated by the
// operation id, both copied from the request. A handler error is sent in the reply's metadata
// (MetaHookHasError "1", MetaHookError its text: Watermill's own keys), with an empty reply.
// Safe for concurrent use.
type Responder struct {
	broker transports.Broker
}

// NewResponder returns the Responder publishing on b.
func NewResponder(b transports.Broker) *Responder { return &Responder{broker: b} }

var _ requestreply.Backend[protocol.HookReply] = (*Responder)(nil)

// ListenForNotifications fails: a Responder only answers (a Caller listens).
func (r *Responder) ListenForNotifications(context.Context, requestreply.BackendListenForNotificationsParams) (<-chan requestreply.Reply[protocol.HookReply], error) {
	return nil, errors.New("hookbus: a Responder does not listen for replies (a Caller does)")
}

// OnCommandProcessed publishes the reply of p.CommandMessage, the request. It fails when the
// request carries no operation id or reply node, or the publish fails; it does not fail for a
// handler error (that is in the reply).
func (r *Responder) OnCommandProcessed(_ context.Context, p requestreply.BackendOnCommandProcessedParams[protocol.HookReply]) error {
	req := p.CommandMessage
	if req == nil {
		return errors.New("hookbus: no request message to reply to")
	}
	op, node := req.Metadata.Get(protocol.MetaOperationID), req.Metadata.Get(protocol.MetaReplyNode)
	if op == "" || node == "" {
		return fmt.Errorf("hookbus: request %s has no %s or %s to reply to", req.UUID, protocol.MetaOperationID, protocol.MetaReplyNode)
	}
	reply := p.HandlerResult
	if p.HandleErr != nil {
		reply = protocol.HookReply{}
	}
	payload, err := json.Marshal(reply)
	if err != nil {
		return fmt.Errorf("hookbus: encode reply: %w", err)
	}
	m := message.NewMessage(watermill.NewUUID(), payload)
	m.Metadata.Set(protocol.MetaOperationID, op)
	m.Metadata.Set(protocol.MetaReplyNode, node)
	if hook := req.Metadata.Get(protocol.MetaHook); hook != "" {
		m.Metadata.Set(protocol.MetaHook, hook)
	}
	if p.HandleErr != nil {
		m.Metadata.Set(protocol.MetaHookHasError, "1")
		m.Metadata.Set(protocol.MetaHookError, p.HandleErr.Error())
	} else {
		m.Metadata.Set(protocol.MetaHookHasError, "0")
	}
	if err := r.broker.Publish(protocol.TopicReplies, m); err != nil {
		return fmt.Errorf("hookbus: publish reply: %w", err)
	}
	return nil
}

// Handler answers one hook request. ctx ends at the request's deadline. A returned error goes
// back to the node as the call's error (ErrHandler), at once.
type Handler func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error)

// DefaultConcurrency is how many requests Serve handles at once by default.
const DefaultConcurrency = 64

// DefaultClockSkew is how far the service's clock may be from the node's by default: a request's
// deadline is the node's clock, so Serve drops a request only once its own clock is this far
// past the deadline, and a handler's context ends this long after it.
const DefaultClockSkew = time.Second

// ServeConfig configures Serve.
type ServeConfig struct {
	// Broker is consumed (TopicHooks, group HooksGroup) and replied through (TopicReplies).
	Broker transports.Broker
	// Handler answers every request.
	Handler Handler
	// Concurrency bounds the requests handled at once; default DefaultConcurrency. A member
	// that has that many takes no more until one ends.
	Concurrency int
	// Log may be nil (discard).
	Log *slog.Logger
	// Now is the clock deadlines are checked against; nil is time.Now (tests).
	Now func() time.Time
	// ClockSkew is the skew between the nodes' clocks and this one tolerated; default
	// DefaultClockSkew, negative: none.
	ClockSkew time.Duration
	// Subscribe, when set, replaces Broker.SubscribeGroup(ctx, TopicHooks, HooksGroup) (the
	// service SDK's subscribes again while the broker is unavailable).
	Subscribe func(ctx context.Context) (<-chan *message.Message, error)
}

// Serve consumes hook requests as one member of group HooksGroup (competing consumers: each
// request goes to one member, of this process or another) and answers each with cfg.Handler
// through a Responder, until ctx ends; it returns once the subscription is up (the consumption
// goes on in the background, owned by ctx: it subscribes again, with a back-off, when the broker
// ends the subscription) and done is closed once ctx ended and every handler has returned.
//
// A request is acked when taken (hooks are answered at most once: a service that dies while
// handling one leaves its call to fail by the deadline). A request whose MetaDeadline has passed
// by more than ClockSkew (of this process's clock: the deadline is the node's) is dropped
// unanswered (nobody waits for it); its handler's context ends ClockSkew after the deadline; one
// without a deadline is handled within DefaultTimeout. One without operation id or reply node is
// dropped with a warning (nobody could be answered); one whose payload is not a HookRequest is
// answered with an error (the node's call fails at once).
func Serve(ctx context.Context, cfg ServeConfig) (done <-chan struct{}, err error) {
	if cfg.Broker == nil || cfg.Handler == nil {
		return nil, errors.New("hookbus: Serve needs a broker and a handler")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case cfg.ClockSkew == 0:
		cfg.ClockSkew = DefaultClockSkew
	case cfg.ClockSkew < 0:
		cfg.ClockSkew = 0
	}
	if cfg.Subscribe == nil {
		cfg.Subscribe = func(ctx context.Context) (<-chan *message.Message, error) {
			return cfg.Broker.SubscribeGroup(ctx, protocol.TopicHooks, protocol.HooksGroup)
		}
	}
	msgs, err := cfg.Subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("hookbus: subscribe to %s: %w", protocol.TopicHooks, err)
	}
	s := &server{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency)}
	s.handler = requestreply.NewCommandHandlerWithResult[protocol.HookRequest, protocol.HookReply](
		"hooks", NewResponder(cfg.Broker), s.handle)
	out := make(chan struct{})
	go func() {
		defer close(out)
		defer s.wg.Wait()
		backoff := 100 * time.Millisecond
		for {
			for m := range msgs {
				if !s.take(ctx, m) {
					m.Nack()
					return
				}
				backoff = 100 * time.Millisecond
			}
			// The broker ended the subscription (core NATS on a lost connection): again.
			for msgs = nil; msgs == nil; {
				if ctx.Err() != nil {
					return
				}
				cfg.Log.Warn("hookbus: the hooks subscription ended, subscribing again", "retry_in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
				backoff = min(2*backoff, 5*time.Second)
				if msgs, err = cfg.Subscribe(ctx); err != nil {
					msgs = nil
					cfg.Log.Warn("hookbus: subscribe to hooks failed", "error", err)
				}
			}
		}
	}()
	return out, nil
}

type server struct {
	cfg     ServeConfig
	sem     chan struct{}
	wg      sync.WaitGroup
	handler cqrs.CommandHandler
}

// take acks m and starts handling it, waiting for a free slot; false when ctx ended first.
func (s *server) take(ctx context.Context, m *message.Message) bool {
	deadline, hasDeadline := deadlineOf(m)
	if hasDeadline {
		deadline = deadline.Add(s.cfg.ClockSkew)
	}
	if hasDeadline && !s.cfg.Now().Before(deadline) {
		m.Ack()
		s.cfg.Log.Debug("hookbus: request past its deadline, dropped", "hook", m.Metadata.Get(protocol.MetaHook), "uuid", m.UUID)
		return true
	}
	if m.Metadata.Get(protocol.MetaOperationID) == "" || m.Metadata.Get(protocol.MetaReplyNode) == "" {
		m.Ack()
		s.cfg.Log.Warn("hookbus: request without operation id or reply node, dropped", "uuid", m.UUID)
		return true
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	m.Ack()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		var hctx context.Context
		var cancel context.CancelFunc
		if hasDeadline {
			hctx, cancel = context.WithDeadline(ctx, deadline)
		} else {
			hctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		}
		defer cancel()
		var req protocol.HookRequest
		if err := json.Unmarshal(m.Payload, &req); err != nil {
			s.cfg.Log.Warn("hookbus: request is not a HookRequest, answered with an error", "uuid", m.UUID, "error", err)
			s.refuse(hctx, m, fmt.Errorf("hookbus: the request is not a HookRequest: %w", err))
			return
		}
		if err := s.handler.Handle(cqrs.CtxWithOriginalMessage(hctx, m), &req); err != nil {
			s.cfg.Log.Warn("hookbus: reply not sent", "hook", req.Hook, "id", req.ID, "error", err)
		}
	}()
	return true
}

// refuse answers the request m with err (the reply's error metadata), without a handler.
func (s *server) refuse(ctx context.Context, m *message.Message, err error) {
	if rerr := NewResponder(s.cfg.Broker).OnCommandProcessed(ctx, requestreply.BackendOnCommandProcessedParams[protocol.HookReply]{
		CommandMessage: m, HandleErr: err,
	}); rerr != nil {
		s.cfg.Log.Warn("hookbus: reply not sent", "uuid", m.UUID, "error", rerr)
	}
}

// handle runs the handler, turning a panic into an error for the node.
func (s *server) handle(ctx context.Context, req *protocol.HookRequest) (reply protocol.HookReply, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Log.Error("hookbus: handler panicked", "hook", req.Hook, "id", req.ID, "panic", p)
			reply, err = protocol.HookReply{}, fmt.Errorf("the %s handler panicked", req.Hook)
		}
	}()
	return s.cfg.Handler(ctx, req)
}

// deadlineOf reads a request's MetaDeadline.
func deadlineOf(m *message.Message) (time.Time, bool) {
	ms, err := strconv.ParseInt(m.Metadata.Get(protocol.MetaDeadline), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
