package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Kinds of consumed messages (Inbound.Kind), the protocol's.
const (
	KindPublish = protocol.KindPublish // a client published to a channel
	KindSend    = protocol.KindSend    // a client sent to the services
	KindAPI     = protocol.KindAPI     // the HTTP API published
	// KindService ("service") is what a Service emits.
)

// Inbound is a message a client (or the API, or a service) sent: the Watermill message with
// typed accessors for the metadata of docs/services.md. Ack or Nack every one.
type Inbound struct {
	*message.Message
	svc *Service
}

// User is the sender's user id ("" for an anonymous client); on a message to a user's channel,
// the user addressed.
func (m *Inbound) User() string { return m.Metadata.Get(protocol.MetaUser) }

// Session is the sender's session, the one Reply answers.
func (m *Inbound) Session() string { return m.Metadata.Get(protocol.MetaSession) }

// Node is the gateway node that accepted the message from its client.
func (m *Inbound) Node() string { return m.Metadata.Get(protocol.MetaNode) }

// Channel is the channel of a channel message ("$user:<id>" for a user's channel); "" for a send.
func (m *Inbound) Channel() string { return m.Metadata.Get(protocol.MetaChannel) }

// MsgID is the idempotency key: the client's msg_id, or one the node made when it gave none.
func (m *Inbound) MsgID() string { return m.Metadata.Get(protocol.MetaMsgID) }

// Kind is "send", "publish", "api" or "service".
func (m *Inbound) Kind() string { return m.Metadata.Get(protocol.MetaKind) }

// Target is how the message was addressed: "services" for a send, "channel", "user", ...
func (m *Inbound) Target() string { return m.Metadata.Get(protocol.MetaTarget) }

// Position is the broker position of a channel message ("" when the broker keeps no history).
func (m *Inbound) Position() string { return m.Metadata.Get(protocol.MetaPosition) }

// Idempotent reports whether the UUID derives from the msg_id (the client gave one), so the same
// message published through two nodes has the same UUID.
func (m *Inbound) Idempotent() bool { return m.Metadata.Get(protocol.MetaIdempotent) == "1" }

// SentAt is when the node (or API, or service) published it; zero when unknown.
func (m *Inbound) SentAt() time.Time { return unixNanos(m.Metadata.Get(protocol.MetaSentAt)) }

// Data is the payload: the client's "data" as JSON.
func (m *Inbound) Data() []byte { return m.Payload }

// Reply emits data to the sender's session (ToSession(m.Session())). It fails with ErrNoSession
// when the message has no sender session.
func (m *Inbound) Reply(ctx context.Context, data any, opts ...EmitOption) (string, error) {
	session := m.Session()
	if session == "" {
		return "", ErrNoSession
	}
	return m.svc.ToSession(ctx, session, data, opts...)
}

// Inbound consumes what clients send to the services (`send` frames), as competing consumers:
// each message goes to one of the subscriptions sharing group, in this process or another. The
// channel closes when ctx ends or the Service is closed. Messages sent while no member of the
// group was subscribed are delivered as far as the broker keeps them (core NATS keeps nothing).
//
// Inbound, ChannelMessages and Events wait while the broker is unavailable (the broker reports
// transports.ErrUnavailable: not connected yet, JetStream streams not provisioned yet), subscribing
// again with backoff until they succeed or ctx ends; other errors return at once.
func (s *Service) Inbound(ctx context.Context, group string) (<-chan *Inbound, error) {
	if group == "" {
		return nil, fmt.Errorf("%w: group is required", ErrInvalid)
	}
	in, err := s.subscribe(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
		return s.broker.SubscribeGroup(ctx, protocol.TopicInbound, group)
	})
	if err != nil {
		return nil, fmt.Errorf("service: consume inbound as %q: %w", group, err)
	}
	return relay(s, ctx, in, s.wrap), nil
}

// ChannelMessages consumes everything published to channel (clients' `publish`, API and service
// emits) from now on, fan-out: every subscription, of every replica, gets every message. channel
// is a channel name or a user's channel ("$user:<id>", protocol.UserChannelFor). A message with a
// msg_id published through two nodes may arrive twice with the same UUID (Idempotent).
func (s *Service) ChannelMessages(ctx context.Context, channel string) (<-chan *Inbound, error) {
	user, isUser := strings.CutPrefix(channel, protocol.UserChannelPrefix)
	if !protocol.ValidChannel(channel) && !(isUser && user != "" && len(user) <= MaxUserLen) {
		return nil, fmt.Errorf("%w: channel %q must match ^[A-Za-z0-9_:.\\-]{1,128}$ or be $user:<id>", ErrInvalid, channel)
	}
	in, err := s.subscribe(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
		return s.broker.Subscribe(ctx, protocol.ChannelTopic(channel))
	})
	if err != nil {
		return nil, fmt.Errorf("service: consume channel %q: %w", channel, err)
	}
	return relay(s, ctx, in, s.wrap), nil
}

func (s *Service) wrap(m *message.Message) (*Inbound, bool) {
	return &Inbound{Message: m, svc: s}, true
}

// EventType is the kind of a lifecycle event (Event.Type): one of the Event* constants.
type EventType = string

// Lifecycle event types, the protocol's.
const (
	EventConnected    = protocol.EventConnected
	EventDisconnected = protocol.EventDisconnected
	EventSubscribed   = protocol.EventSubscribed
	EventUnsubscribed = protocol.EventUnsubscribed
	// EventNodeAlive is a node's heartbeat (no user or session); EventNodeStopped its clean
	// shutdown. Presence uses them to notice nodes that died without a word.
	EventNodeAlive   = protocol.EventNodeAlive
	EventNodeStopped = protocol.EventNodeStopped
)

// Event is a connection lifecycle event: the payload the gateway publishes (protocol.Event: Type,
// User, Session, Node, Channel, Reason, At, described in the package documentation) and the
// message it came in. Ack or Nack every one.
type Event struct {
	protocol.Event

	msg *message.Message
}

// Message is the Watermill message the event came in.
func (e *Event) Message() *message.Message { return e.msg }

// Ack acknowledges the event (nothing for one Presence made up).
func (e *Event) Ack() bool {
	if e.msg == nil {
		return true
	}
	return e.msg.Ack()
}

// Nack has the event delivered again (nothing for one Presence made up).
func (e *Event) Nack() bool {
	if e.msg == nil {
		return false
	}
	return e.msg.Nack()
}

// DecodeEvent decodes an event payload. "at" is an RFC 3339 time or a number of unix nanoseconds.
func DecodeEvent(payload []byte) (*Event, error) {
	var raw struct {
		Type    EventType       `json:"type"`
		User    string          `json:"user"`
		Session string          `json:"session"`
		Node    string          `json:"node"`
		Channel string          `json:"channel"`
		Reason  string          `json:"reason"`
		At      json.RawMessage `json:"at"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("event payload: %w", err)
	}
	if raw.Type == "" {
		return nil, errors.New("event payload: no type")
	}
	e := &Event{Event: protocol.Event{Type: raw.Type, User: raw.User, Session: raw.Session, Node: raw.Node, Channel: raw.Channel, Reason: raw.Reason}}
	if len(raw.At) > 0 && string(raw.At) != "null" {
		if raw.At[0] == '"' {
			if err := json.Unmarshal(raw.At, &e.At); err != nil {
				return nil, fmt.Errorf("event payload: at: %w", err)
			}
		} else {
			var ns int64
			if err := json.Unmarshal(raw.At, &ns); err != nil {
				return nil, fmt.Errorf("event payload: at: %w", err)
			}
			e.At = time.Unix(0, ns).UTC()
		}
	}
	return e, nil
}

// Events consumes connection lifecycle events as competing consumers of group: each event goes
// to one of the subscriptions sharing group. An event whose payload does not decode is logged,
// acked and skipped.
func (s *Service) Events(ctx context.Context, group string) (<-chan *Event, error) {
	if group == "" {
		return nil, fmt.Errorf("%w: group is required", ErrInvalid)
	}
	in, err := s.subscribe(ctx, func(ctx context.Context) (<-chan *message.Message, error) {
		return s.broker.SubscribeGroup(ctx, protocol.TopicEvents, group)
	})
	if err != nil {
		return nil, fmt.Errorf("service: consume events as %q: %w", group, err)
	}
	return relay(s, ctx, in, func(m *message.Message) (*Event, bool) {
		e, err := DecodeEvent(m.Payload)
		if err != nil {
			s.log.Warn("lifecycle event skipped", "message_uuid", m.UUID, "error", err)
			return nil, false
		}
		e.msg = m
		return e, true
	}), nil
}

// subscribe calls sub until it succeeds, waiting while the broker reports the broker unavailable
// (transports.ErrUnavailable: not connected yet, streams not provisioned yet), with backoff, until
// ctx ends. Any other error is returned at once.
func (s *Service) subscribe(ctx context.Context, sub func(context.Context) (<-chan *message.Message, error)) (<-chan *message.Message, error) {
	delay := subscribeRetryMin
	var last error // the last unavailable error
	gaveUp := func(err error) error {
		if last == nil {
			return err
		}
		return fmt.Errorf("%w (gave up: %w)", last, err)
	}
	for {
		if s.isClosed() {
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, gaveUp(err)
		}
		ch, err := sub(ctx)
		if err == nil {
			return ch, nil
		}
		if !errors.Is(err, transports.ErrUnavailable) || errors.Is(err, transports.ErrNotStarted) {
			return nil, err // a broker that was not started will not come back by waiting: Start it
		}
		if last == nil {
			s.log.Warn("broker unavailable, subscribing again until it is back", "error", err)
		}
		last = err
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, gaveUp(ctx.Err())
		case <-s.done:
			t.Stop()
			return nil, ErrClosed
		}
		delay = min(delay*2, subscribeRetryMax)
	}
}

// Backoff of subscribe while the broker is unavailable.
const (
	subscribeRetryMin = 20 * time.Millisecond
	subscribeRetryMax = 2 * time.Second
)

// relay hands what in delivers, wrapped, to the returned channel until in closes, ctx ends or the
// Service closes. A message wrap refuses is acked; one nobody took is nacked.
func relay[T any](s *Service, ctx context.Context, in <-chan *message.Message, wrap func(*message.Message) (T, bool)) <-chan T {
	out := make(chan T)
	if !s.track() {
		close(out)
		return out
	}
	go func() {
		defer s.wg.Done()
		defer close(out)
		for {
			var m *message.Message
			var ok bool
			select {
			case m, ok = <-in:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
			v, keep := wrap(m)
			if !keep {
				m.Ack()
				continue
			}
			select {
			case out <- v:
			case <-ctx.Done():
				m.Nack()
				return
			case <-s.done:
				m.Nack()
				return
			}
		}
	}()
	return out
}

func unixNanos(s string) time.Time {
	ns, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
