// Package hookbus carries hook requests and replies over a transports.Broker, with Watermill's
// request/reply component (components/requestreply).
//
// A node asks with a Caller: Call publishes the protocol.HookRequest as JSON on
// protocol.TopicHooks (MetaHook, MetaReplyNode, MetaDeadline and Watermill's operation id in the
// metadata) and waits for the reply that carries the same operation id on protocol.TopicReplies.
// A Caller holds ONE subscription to TopicReplies for all its calls (Watermill's PubSubBackend
// would subscribe once per request): replies addressed to other nodes, and replies that come
// after their call gave up, are dropped.
//
// A service answers with Serve (the service SDK's OnHooks uses it): the services consume
// TopicHooks in group protocol.HooksGroup (competing consumers: one replica answers each
// request), skip the requests whose deadline has passed, run the handler, and publish its reply
// on TopicReplies through a Responder, the requestreply.Backend of the service side. A handler
// error travels in the reply's metadata (protocol.MetaHookError), so the node gets it at once
// rather than waiting for its deadline. docs/hooks.md, "Hooks over the broker", has the whole
// path and what each broker keeps.
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
	"github.com/ThreeDotsLabs/watermill/components/requestreply"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Errors of a call. Each call's error wraps one of them (or the broker's publish error, or
// transports.ErrClosed, transports.ErrNotStarted).
var (
	// ErrNoReply: no reply came before the call's deadline (no service subscribed, a slow
	// service, or a lost request). It comes with a requestreply.ReplyTimeoutError.
	ErrNoReply = errors.New("hookbus: no reply before the deadline")
	// ErrHandler: the service's handler returned an error (or the service has no handler for
	// the hook); the error's text is the service's. It comes with a
	// requestreply.CommandHandlerError.
	ErrHandler = errors.New("hookbus: the service's handler failed")
	// ErrInvalidReply: the reply is not a valid HookReply (bad JSON, or HookReply.Check failed;
	// the error names the field).
	ErrInvalidReply = errors.New("hookbus: invalid reply")
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// CallerConfig configures a Caller.
type CallerConfig struct {
	// Broker carries the requests and replies; the Caller does not own it (it neither starts
	// nor closes it).
	Broker transports.Broker
	// NodeID is this node's id (MetaReplyNode): the replies addressed to it are the Caller's.
	NodeID string
	// Log may be nil (discard).
	Log *slog.Logger
}

// Caller makes hook calls over the broker. NewCaller starts nothing; Start subscribes to
// TopicReplies; Close ends the subscription and fails the calls still waiting.
//
// All methods are safe for concurrent use; Call may be called from any number of goroutines.
type Caller struct {
	cfg CallerConfig
	log *slog.Logger
	bus commandBus

	mu      sync.Mutex
	waiting map[requestreply.OperationID]chan requestreply.Reply[protocol.HookReply]
	state   int // 0 new, 1 started, 2 closed

	ctx    context.Context // the subscription's; cancelled by Close
	cancel context.CancelFunc
	done   chan struct{}  // closed when the subscription goroutine ended
	sends  sync.WaitGroup // publishes of requests whose call gave up first (Close waits)
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// NewCaller returns a Caller; it starts nothing. It fails on a nil broker or an empty node id.
func NewCaller(cfg CallerConfig) (*Caller, error) {
	if cfg.Broker == nil {
		return nil, errors.New("hookbus: nil broker")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("hookbus: empty node id")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Caller{cfg: cfg, log: log, waiting: map[requestreply.OperationID]chan requestreply.Reply[protocol.HookReply]{}}
	c.bus = commandBus{c: c}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start subscribes to TopicReplies, once for every call of this Caller, and starts the goroutine
// that hands each reply to its call (it subscribes again, with a back-off, when the broker ends
// the subscription: replies published meanwhile are lost, and their calls fail by their
// deadline). The broker must be started. Safe to call twice (the second call does nothing);
// after Close it fails with transports.ErrClosed. A failed Start may be retried.
func (c *Caller) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateStarted:
		return nil
	case stateClosed:
		return transports.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	replies, err := c.cfg.Broker.Subscribe(c.ctx, protocol.TopicReplies)
	if err != nil {
		return fmt.Errorf("hookbus: subscribe to %s: %w", protocol.TopicReplies, err)
	}
	c.state = stateStarted
	c.done = make(chan struct{})
	go c.run(replies)
	return nil
}

// Close ends the subscription, waits for its goroutine, and fails every call still waiting with
// transports.ErrClosed. Safe to call twice, and before Start.
func (c *Caller) Close() error {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return nil
	}
	started := c.state == stateStarted
	c.state = stateClosed
	c.cancel()
	waiting := c.waiting
	c.waiting = map[requestreply.OperationID]chan requestreply.Reply[protocol.HookReply]{}
	c.mu.Unlock()
	for _, ch := range waiting {
		ch <- requestreply.Reply[protocol.HookReply]{Error: transports.ErrClosed} // buffered, sent once
	}
	if started {
		<-c.done
	}
	c.sends.Wait() // each bounded by the broker's publish timeout
	return nil
}

// Call publishes req on TopicHooks and returns the service's reply. ctx's deadline (DefaultTimeout
// when it has none) bounds the call and is the request's MetaDeadline; a reply that comes later
// is dropped, and a publish of the request that outlasts the deadline does not hold the call. The
// error wraps ErrNoReply (and ctx's error) when no reply came in time, ErrHandler when the
// service's handler failed (returned at once), ErrInvalidReply when the reply fails
// HookReply.Check, transports.ErrClosed after Close, transports.ErrNotStarted before Start, or
// the broker's error when the request could not be published. req.Node is set to the Caller's
// node id when empty.
func (c *Caller) Call(ctx context.Context, req protocol.HookRequest) (protocol.HookReply, error) {
	c.mu.Lock()
	state := c.state
	c.mu.Unlock()
	switch state {
	case stateNew:
		return protocol.HookReply{}, transports.ErrNotStarted
	case stateClosed:
		return protocol.HookReply{}, transports.ErrClosed
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	if req.Node == "" {
		req.Node = c.cfg.NodeID
	}
	start := time.Now()
	if err := ctx.Err(); err != nil { // nobody would answer a request past its deadline
		return protocol.HookReply{}, noReply(req.Hook, start, err)
	}
	reply, err := requestreply.SendWithReply[protocol.HookReply](ctx, c.bus, backend{c}, req)
	if err == nil {
		err = reply.Error
	}
	switch {
	case err == nil:
		return reply.HandlerResult, nil
	case errors.Is(err, transports.ErrClosed):
		return protocol.HookReply{}, transports.ErrClosed
	case ctx.Err() != nil && !errors.Is(err, ErrHandler) && !errors.Is(err, ErrInvalidReply):
		return protocol.HookReply{}, noReply(req.Hook, start, ctx.Err())
	}
	return protocol.HookReply{}, fmt.Errorf("%s hook: %w", req.Hook, err)
}

// noReplyError is a call's ErrNoReply: it matches ErrNoReply, requestreply.ReplyTimeoutError
// (errors.As) and the context's error (context.DeadlineExceeded, or context.Canceled when the
// caller gave up before the deadline).
type noReplyError struct {
	hook    string
	timeout requestreply.ReplyTimeoutError
}

func noReply(hook string, start time.Time, ctxErr error) error {
	return &noReplyError{hook: hook, timeout: requestreply.ReplyTimeoutError{Duration: time.Since(start), Err: ctxErr}}
}

func (e *noReplyError) Error() string {
	return fmt.Sprintf("%s: %s hook: %s", ErrNoReply, e.hook, e.timeout.Error())
}

func (e *noReplyError) Unwrap() []error { return []error{ErrNoReply, e.timeout, e.timeout.Err} }

// listen registers a call waiting for the reply with operation id op; the entry goes when ctx
// ends (the call gave up: a later reply is dropped) or when the reply is handed over.
func (c *Caller) listen(ctx context.Context, op requestreply.OperationID) (<-chan requestreply.Reply[protocol.HookReply], error) {
	ch := make(chan requestreply.Reply[protocol.HookReply], 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil, transports.ErrClosed
	}
	c.waiting[op] = ch
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		if c.waiting[op] == ch {
			delete(c.waiting, op)
		}
		c.mu.Unlock()
	})
	return ch, nil
}

// take removes and returns the call waiting for op, if any.
func (c *Caller) take(op requestreply.OperationID) chan requestreply.Reply[protocol.HookReply] {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.waiting[op]
	if ch != nil {
		delete(c.waiting, op)
	}
	return ch
}

// Waiting is the number of calls waiting for their reply now.
func (c *Caller) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiting)
}

// run hands the replies of this node to their calls until Close; it subscribes again when the
// broker ends the subscription.
func (c *Caller) run(replies <-chan *message.Message) {
	defer close(c.done)
	backoff := 100 * time.Millisecond
	for {
		for m := range replies {
			m.Ack()
			c.deliver(m)
			backoff = 100 * time.Millisecond
		}
		for {
			if c.ctx.Err() != nil {
				return
			}
			c.log.Warn("hookbus: the replies subscription ended, subscribing again", "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			var err error
			if replies, err = c.cfg.Broker.Subscribe(c.ctx, protocol.TopicReplies); err == nil {
				break
			}
			c.log.Warn("hookbus: subscribe to replies failed", "error", err)
		}
	}
}

// deliver hands one reply message to its call, when it is this node's and its call still waits.
func (c *Caller) deliver(m *message.Message) {
	if m.Metadata.Get(protocol.MetaReplyNode) != c.cfg.NodeID {
		return
	}
	op := requestreply.OperationID(m.Metadata.Get(protocol.MetaOperationID))
	ch := c.take(op)
	if ch == nil {
		c.log.Debug("hookbus: reply after its call ended, dropped", "operation_id", op)
		return
	}
	ch <- decodeReply(m) // buffered, sent once
}

// decodeReply makes the Reply of a reply message: the handler's error, or the HookReply checked.
func decodeReply(m *message.Message) requestreply.Reply[protocol.HookReply] {
	r := requestreply.Reply[protocol.HookReply]{NotificationMessage: m}
	if m.Metadata.Get(protocol.MetaHookHasError) == "1" {
		r.Error = requestreply.CommandHandlerError{Err: fmt.Errorf("%w: %s", ErrHandler, m.Metadata.Get(protocol.MetaHookError))}
		return r
	}
	if err := json.Unmarshal(m.Payload, &r.HandlerResult); err != nil {
		r.Error = requestreply.ReplyUnmarshalError{Err: fmt.Errorf("%w: %w", ErrInvalidReply, err)}
		return r
	}
	if err := r.HandlerResult.Check(); err != nil {
		r.HandlerResult = protocol.HookReply{}
		r.Error = fmt.Errorf("%w: %w", ErrInvalidReply, err)
	}
	return r
}

// backend is the Caller's requestreply.Backend: the map of waiting calls, filled by the one
// subscription. It only listens; replies are sent by a Responder.
type backend struct{ c *Caller }

func (b backend) ListenForNotifications(ctx context.Context, p requestreply.BackendListenForNotificationsParams) (<-chan requestreply.Reply[protocol.HookReply], error) {
	return b.c.listen(ctx, p.OperationID)
}

func (b backend) OnCommandProcessed(context.Context, requestreply.BackendOnCommandProcessedParams[protocol.HookReply]) error {
	return errors.New("hookbus: a Caller does not answer requests (a Responder does)")
}

// commandBus is the Caller's requestreply.CommandBus: it publishes a HookRequest on TopicHooks,
// returning at ctx's end at the latest (the publish goes on, bounded by the broker's publish
// timeout, and Close waits for it).
type commandBus struct{ c *Caller }

func (b commandBus) SendWithModifiedMessage(ctx context.Context, cmd any, modify func(*message.Message) error) error {
	req, ok := cmd.(protocol.HookRequest)
	if !ok {
		return fmt.Errorf("hookbus: command %T is not a protocol.HookRequest", cmd)
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("hookbus: encode request: %w", err)
	}
	m := message.NewMessage(watermill.NewUUID(), payload)
	m.Metadata.Set(protocol.MetaHook, req.Hook)
	m.Metadata.Set(protocol.MetaReplyNode, b.c.cfg.NodeID)
	if d, ok := ctx.Deadline(); ok {
		m.Metadata.Set(protocol.MetaDeadline, strconv.FormatInt(d.UnixMilli(), 10))
	}
	if err := modify(m); err != nil {
		return err
	}
	errc := make(chan error, 1)
	b.c.mu.Lock()
	if b.c.state == stateClosed {
		b.c.mu.Unlock()
		return transports.ErrClosed
	}
	b.c.sends.Add(1) // under mu, before Close's Wait
	b.c.mu.Unlock()
	go func() {
		defer b.c.sends.Done()
		errc <- b.c.cfg.Broker.Publish(protocol.TopicHooks, m)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
