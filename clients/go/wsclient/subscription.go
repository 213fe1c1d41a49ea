package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// Subscription is the client's subscription to one channel. It lasts across reconnections until
// Unsubscribe, Close, or a resubscription the server refuses (Err says why).
type Subscription struct {
	c       *Client
	channel string
	msgs    chan Message
	ready   chan struct{} // closed by the first `subscribed`
	stop    chan struct{} // closed when the subscription ends

	// sentOn is the connection the last subscribe frame went on (guarded by c.mu).
	sentOn *conn
	// rewind is how many of the channel's newest messages a subscribe without a position asks
	// for (WithRewind); once it has a position, a resubscription resumes from it instead.
	rewind int

	mu        sync.Mutex
	last      string // position of the last message delivered (or of the last `subscribed`)
	confirmed bool
	recovered bool
	data      json.RawMessage // of the latest `subscribed`
	expires   int64           // of the latest `subscribed`: unix seconds, 0 for none
	gap       bool            // the next message follows a resubscription that did not recover
	err       error
	// recent are the ids of the last recentIDs messages delivered: a message published twice
	// with one msg_id (through two nodes) has one id, and may reach a client once live and once
	// in a replay after a reconnect.
	recent  map[string]struct{}
	recentQ []string

	closeOnce sync.Once
	sendMu    sync.Mutex // held by the reader while it delivers
	closed    bool
}

// SubscribeOption changes a Subscribe.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct {
	since  string
	buffer int
	rewind int
}

// WithRewind asks for the channel's newest n messages (at most the server's
// history.max_replay) before the live ones, with no gap and no duplicate between them: "show
// the last 50 chat messages on join". Without a position only: WithSince wins; after a
// reconnection the subscription resumes from its position instead.
func WithRewind(n int) SubscribeOption {
	return func(o *subscribeOptions) { o.rewind = n }
}

// WithSince resumes from a position the application kept (Message.Position or
// Subscription.Position of an earlier run): the server first replays what came after it.
// Subscription.Recovered tells whether it could.
func WithSince(position string) SubscribeOption {
	return func(o *subscribeOptions) { o.since = position }
}

// WithBuffer sets the capacity of the subscription's channel (default Options.BufferSize).
func WithBuffer(n int) SubscribeOption {
	return func(o *subscribeOptions) {
		if n > 0 {
			o.buffer = n
		}
	}
}

// Channel is the subscribed channel.
func (s *Subscription) Channel() string { return s.channel }

// Messages delivers the channel's messages in order. It is closed when the subscription ends.
// The reader waits while it is full (see the package documentation on back-pressure).
func (s *Subscription) Messages() <-chan Message { return s.msgs }

// Position is the position of the last message delivered on Messages (or, before any, the one
// the server gave when subscribing): what a resubscription resumes after.
func (s *Subscription) Position() string { s.mu.Lock(); defer s.mu.Unlock(); return s.last }

// Recovered is the `recovered` of the latest `subscribed` reply: after a resubscription (or a
// Subscribe WithSince), whether the server replayed everything that was missed.
func (s *Subscription) Recovered() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.recovered }

// Data is the data of the latest `subscribed` reply: what the server's subscribe hook gave the
// client for this channel (docs/hooks.md); nil without one. Each resubscription asks the hook
// again, so it may change after a reconnect.
func (s *Subscription) Data() json.RawMessage { s.mu.Lock(); defer s.mu.Unlock(); return s.data }

// Expires is when the server ends the subscription, as the subscribe hook set it in the latest
// `subscribed` reply; the zero time when it does not. When it comes the server unsubscribes the
// client: the subscription ends with an *UnsubscribedError of reason UnsubscribeExpired, and is
// not renewed.
func (s *Subscription) Expires() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return unixTime(s.expires)
}

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.stop }

// Err is why the subscription ended (ErrUnsubscribed, ErrClosed, an *Error of a refused
// resubscription, an *UnsubscribedError when the server ended it, ...); nil while it lasts.
func (s *Subscription) Err() error {
	select {
	case <-s.stop:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Unsubscribe ends the subscription (Client.Unsubscribe of its channel).
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	s.c.mu.Lock()
	mine := s.c.subs[s.channel] == s
	s.c.mu.Unlock()
	if !mine {
		return ErrNotSubscribed
	}
	return s.c.Unsubscribe(ctx, s.channel)
}

// recentIDs is how many message ids a subscription remembers to drop repeats.
const recentIDs = 1024

// accept applies the position of a message about to be delivered: false for a duplicate.
func (s *Subscription) accept(m *Message) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Position != "" {
		if seen(m.Position, s.last) {
			return false
		}
		s.last = m.Position
	}
	if m.ID != "" {
		if _, dup := s.recent[m.ID]; dup {
			return false
		}
		if s.recent == nil {
			s.recent = make(map[string]struct{}, recentIDs)
		}
		if len(s.recentQ) == recentIDs {
			delete(s.recent, s.recentQ[0])
			s.recentQ = s.recentQ[1:]
		}
		s.recent[m.ID] = struct{}{}
		s.recentQ = append(s.recentQ, m.ID)
	}
	if s.gap {
		m.Gap, s.gap = true, false
	}
	return true
}

func (s *Subscription) deliver(m Message, closing <-chan struct{}) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.msgs <- m:
	case <-s.stop:
	case <-closing:
	}
}

// confirm applies a `subscribed` reply to a subscribe sent with since; it reports whether it
// was the first.
func (s *Subscription) confirm(since string, f *frame) (first bool) {
	pos, recovered := f.Position, f.Recovered
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.expires = f.Data, f.Expires
	// Adopt the server's position unless it is before what was delivered already.
	if cmp, ok := comparePositions(pos, s.last); pos != "" && (!ok || cmp >= 0) {
		s.last = pos
	}
	first = !s.confirmed
	s.recovered = recovered
	if !recovered && (!first || since != "") {
		s.gap = true
	}
	if first {
		s.confirmed = true
		close(s.ready)
	}
	return first
}

func (s *Subscription) isConfirmed() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.confirmed }

// close ends the subscription: its channel is closed once the reader is out of deliver.
func (s *Subscription) close(err error) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
		close(s.stop)
		s.sendMu.Lock()
		s.closed = true
		close(s.msgs)
		s.sendMu.Unlock()
	})
}

// Subscribe subscribes to channel ("$user" for the user's own channel) and returns once the
// server confirmed it. The subscription is renewed on every reconnection, resuming after the
// last message delivered. It fails with an *Error when the server refuses (CodeForbidden, ...),
// and with ErrAlreadySubscribed when the client is subscribed to channel already. While the
// client is disconnected it waits for the connection (bounded by ctx).
func (c *Client) Subscribe(ctx context.Context, channel string, opts ...SubscribeOption) (*Subscription, error) {
	o := subscribeOptions{buffer: c.opts.BufferSize}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Subscription{c: c, channel: channel, msgs: make(chan Message, o.buffer), ready: make(chan struct{}),
		stop: make(chan struct{}), last: o.since, rewind: o.rewind}
	c.mu.Lock()
	if c.closed || c.ctx.Err() != nil {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.subs[channel] != nil {
		c.mu.Unlock()
		return nil, ErrAlreadySubscribed
	}
	c.subs[channel] = s
	cn := c.conn
	if cn != nil {
		s.sentOn = cn
	}
	c.mu.Unlock()
	if cn != nil {
		c.sendSubscribe(cn, s, false)
	}
	select {
	case <-s.ready:
		return s, nil
	case <-s.stop:
		select {
		case <-s.ready:
			return s, nil // confirmed, then ended at once: the channel is closed, Err says why
		default:
		}
		return nil, s.Err()
	case <-ctx.Done():
		c.remove(s)
		s.close(ctx.Err())
		return nil, ctx.Err()
	case <-c.ctx.Done():
		c.remove(s)
		s.close(ErrClosed)
		return nil, ErrClosed
	}
}

// sendSubscribe sends the subscribe frame of s on cn, with since = its position. The reader
// calls it with fromReader, when it must not wait for the writer.
func (c *Client) sendSubscribe(cn *conn, s *Subscription, fromReader bool) {
	id := c.nextID()
	since := s.Position()
	cn.expectFn(id, func(f *frame) { c.subscribed(cn, s, since, f) })
	rewind := 0
	if since == "" {
		rewind = s.rewind
	}
	b := encode(outFrame{Type: protocol.TypeSubscribe, ID: id, Channel: s.channel, Since: since, Rewind: rewind})
	var ok bool
	if fromReader {
		ok = cn.tryEnqueue(b)
	} else {
		ok = cn.enqueue(c.ctx, b)
	}
	if !ok {
		cn.forget(id) // the next connection subscribes again
	}
}

// subscribed handles the reply to a subscribe, on the reader goroutine.
func (c *Client) subscribed(cn *conn, s *Subscription, since string, f *frame) {
	c.mu.Lock()
	current := c.subs[s.channel] == s
	c.mu.Unlock()
	if !current { // unsubscribed (or given up) meanwhile
		if f.Type == protocol.TypeSubscribed {
			cn.tryEnqueue(encode(outFrame{Type: protocol.TypeUnsubscribe, ID: c.nextID(), Channel: s.channel}))
		}
		return
	}
	if f.Type == protocol.TypeSubscribed {
		if first := s.confirm(since, f); !first {
			c.log.Info("resubscribed", "channel", s.channel, "recovered", f.Recovered, "node", cn.welcome.node)
			if c.opts.OnResubscribed != nil {
				c.opts.OnResubscribed(s.channel, f.Recovered)
			}
		}
		return
	}
	e := &Error{Code: f.Code, Message: f.Text}
	if f.Type != protocol.TypeError {
		e = &Error{Code: CodeInternal, Message: fmt.Sprintf("subscribe answered by %q", f.Type)}
	}
	if s.isConfirmed() {
		switch {
		case e.Code == CodeBadRequest && since != "":
			// The server cannot resume from since: subscribe afresh, which reports
			// recovered:false to the application.
			c.log.Warn("resume refused; subscribing without since", "channel", s.channel, "error", e)
			s.mu.Lock()
			s.last = ""
			s.mu.Unlock()
			c.sendSubscribe(cn, s, true)
			return
		case retryable(e.Code) || e.Code == CodeInternal:
			// Try again on a new connection, after the reconnect backoff.
			cn.close(fmt.Errorf("resubscribe %s: %w", s.channel, e))
			return
		}
		c.log.Warn("resubscribe refused; the subscription ends", "channel", s.channel, "error", e)
	}
	c.remove(s)
	s.close(e)
}

// serverUnsubscribed ends the subscription of channel the server ended on its own (an
// `unsubscribed` frame the client did not ask for), on the reader goroutine: it is not renewed.
func (c *Client) serverUnsubscribed(channel, reason string) {
	c.mu.Lock()
	s := c.subs[channel]
	if s != nil {
		delete(c.subs, channel)
	}
	c.mu.Unlock()
	if s == nil {
		c.log.Debug("unsubscribed from a channel not subscribed", "channel", channel, "reason", reason)
		return
	}
	c.log.Info("unsubscribed by the server", "channel", channel, "reason", reason)
	s.close(&UnsubscribedError{Channel: channel, Reason: reason})
}

// remove forgets s if it is still the subscription of its channel.
func (c *Client) remove(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.channel] == s {
		delete(c.subs, s.channel)
	}
}

// Unsubscribe ends the subscription to channel: its Messages channel is closed at once, and the
// server is told (when connected). A message already in the channel's buffer stays readable.
func (c *Client) Unsubscribe(ctx context.Context, channel string) error {
	c.mu.Lock()
	s := c.subs[channel]
	if s == nil {
		closed := c.closed || c.ctx.Err() != nil
		c.mu.Unlock()
		if closed {
			return ErrClosed
		}
		return ErrNotSubscribed
	}
	delete(c.subs, channel)
	cn := c.conn
	sent := cn != nil && s.sentOn == cn
	c.mu.Unlock()
	s.close(ErrUnsubscribed)
	if !sent || cn.isDone() {
		return nil // the next connection will not subscribe it
	}
	_, err := c.roundTrip(ctx, cn, outFrame{Type: protocol.TypeUnsubscribe, Channel: channel})
	var e *Error
	if err == nil || errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrClosed) || (errors.As(err, &e) && e.Code == CodeNotFound) {
		return nil
	}
	return err
}
