// Package handlers holds the product's logic: what a client frame does (Sessions), the router
// handlers between the node and the broker (Inbound, Channel, Direct), and the HTTP endpoints
// (upgrade, publish API, health). It declares the small interfaces it needs where it uses them.
package handlers

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Hub is what the handlers need of the WebSocket hub.
type Hub interface {
	Join(ctx context.Context, c *websocket.Conn, channel string) error
	Leave(c *websocket.Conn, channel string) bool
	Deliver(channel string, pos protocol.Position, native []byte, other websocket.Encoder) int
	Session(id string) (*websocket.Conn, bool)
	Broadcast(frame []byte) int
}

// History is what the handlers need to read a channel's history (router.Feed): Last and Replay
// as transports.History, Before as transports.ReverseHistory (transports.ErrNoHistory when the
// broker cannot), all by channel name. Safe for concurrent use.
type History interface {
	Last(ctx context.Context, channel string) (protocol.Position, error)
	Replay(ctx context.Context, channel string, since protocol.Position, limit int) ([]*message.Message, bool, error)
	Before(ctx context.Context, channel string, before protocol.Position, limit int) ([]*message.Message, error)
	KeepsHistory() bool
}

// Submitter hands a message to the router and waits for its outcome (router.Inbox).
type Submitter interface {
	Submit(ctx context.Context, msg *message.Message) error
}

// Publisher publishes to the broker (transports.Broker).
type Publisher interface {
	Publish(topic string, messages ...*message.Message) error
}

// recent remembers message UUIDs for between one and two windows, so a node delivers a message
// carrying the same idempotency key once even when it was published twice (through two nodes).
type recent struct {
	mu      sync.Mutex
	window  time.Duration
	cur     map[string]struct{}
	prev    map[string]struct{}
	rotated time.Time
}

func newRecent(window time.Duration) *recent {
	return &recent{window: window, cur: map[string]struct{}{}, prev: map[string]struct{}{}, rotated: time.Now()}
}

// seen reports whether id was seen within the window, and remembers it.
func (r *recent) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.rotated) > r.window {
		r.prev, r.cur, r.rotated = r.cur, make(map[string]struct{}, len(r.cur)), now
	}
	if _, ok := r.cur[id]; ok {
		return true
	}
	if _, ok := r.prev[id]; ok {
		return true
	}
	r.cur[id] = struct{}{}
	return false
}

// positionKey carries, on a submitted message's context, where Inbound leaves the position the
// broker gave the message (withSubmission).
type positionKey struct{}

type positionSlot struct {
	mu  sync.Mutex
	pos protocol.Position
}

func (p *positionSlot) set(pos protocol.Position) {
	p.mu.Lock()
	p.pos = pos
	p.mu.Unlock()
}

func (p *positionSlot) get() protocol.Position {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// ctxState carries a client's connection state (claims, limiters) on the messages it submits,
// for Authorize and RateLimit.
type ctxState struct{}

// submission is the context of a message a client or the API submits: the client's connection
// state (nil for the API) and the slot where Inbound leaves the position the broker gave the
// message, in one value: one allocation per message instead of two context values and a slot.
type submission struct {
	context.Context
	st  *state
	pos positionSlot
}

func (s *submission) Value(key any) any {
	switch key.(type) {
	case ctxState:
		if s.st != nil {
			return s.st
		}
	case positionKey:
		return &s.pos
	}
	return s.Context.Value(key)
}

// withSubmission returns a context for a message to submit, carrying st (nil: none, the API's),
// and the function that returns the position the broker gave the message once the submit
// returned: zero when the message went to no channel, the broker keeps no history, or the
// router acked it without publishing (a repeated msg_id).
func withSubmission(ctx context.Context, st *state) (context.Context, func() protocol.Position) {
	s := &submission{Context: ctx, st: st}
	return s, s.pos.get
}

func stateFrom(ctx context.Context) (*state, bool) {
	st, ok := ctx.Value(ctxState{}).(*state)
	return st, ok
}
