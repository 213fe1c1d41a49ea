package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// KindService is the kind (metadata "kind") of the messages a Service emits.
const KindService = protocol.KindService

// Bounds of emit arguments, the same as the HTTP API's.
const (
	MaxMsgIDLen   = protocol.MaxMsgIDLen   // bytes of a msg_id
	MaxUserLen    = protocol.MaxUserLen    // bytes of a user id
	MaxSessionLen = protocol.MaxSessionLen // bytes of a session id
)

// EmitOption changes one emit.
type EmitOption func(*emitOptions)

type emitOptions struct {
	msgID string
	meta  map[string]string
}

// WithMsgID makes the emit idempotent under key (1 to MaxMsgIDLen bytes of UTF-8): the message
// UUID derives from the key exactly as for POST /api/publish with "msg_id": key, and nodes
// deliver it once however often it was emitted within their dedupe window, so a failed or
// timed-out emit can be retried safely. The key space is the API's: the same key used by the API
// and by a service is the same message.
func WithMsgID(key string) EmitOption { return func(o *emitOptions) { o.msgID = key } }

// WithMetadata adds a metadata key of your own to the message. The keys of the contract
// (docs/services.md: channel, user, session, node, msg_id, kind, target, position, sent_at,
// encoding, idempotent, signature) are reserved: setting one makes the emit fail with ErrInvalid.
func WithMetadata(key, value string) EmitOption {
	return func(o *emitOptions) {
		if o.meta == nil {
			o.meta = map[string]string{}
		}
		o.meta[key] = value
	}
}

var reserved = map[string]bool{
	protocol.MetaChannel: true, protocol.MetaUser: true, protocol.MetaSession: true,
	protocol.MetaNode: true, protocol.MetaMsgID: true, protocol.MetaKind: true,
	protocol.MetaTarget: true, protocol.MetaPosition: true, protocol.MetaSentAt: true,
	protocol.MetaEncoding: true, protocol.MetaIdempotent: true, protocol.MetaSig: true,
}

// ToChannel emits data to the clients subscribed to channel (^[A-Za-z0-9_:.\-]{1,128}$). It
// returns the message id (the frame's "id").
func (s *Service) ToChannel(ctx context.Context, channel string, data any, opts ...EmitOption) (string, error) {
	if !protocol.ValidChannel(channel) {
		return "", fmt.Errorf("%w: channel %q must match ^[A-Za-z0-9_:.\\-]{1,128}$ (use ToUser for a user's channel)", ErrInvalid, channel)
	}
	return s.emit(ctx, protocol.ChannelTopic(channel), data, opts, map[string]string{
		protocol.MetaTarget:  protocol.TargetChannel,
		protocol.MetaChannel: channel,
	})
}

// ToChannelPosition is ToChannel that also returns the position the broker gave the message in
// the channel (the client form, as in the clients' message frames: a subscribe or history read
// with since set to it gets what came after it), on a broker with history (memory, jetstream,
// redis, kafka); "" on core NATS.
func (s *Service) ToChannelPosition(ctx context.Context, channel string, data any, opts ...EmitOption) (id, position string, err error) {
	if !protocol.ValidChannel(channel) {
		return "", "", fmt.Errorf("%w: channel %q must match ^[A-Za-z0-9_:.\\-]{1,128}$ (use ToUserPosition for a user's channel)", ErrInvalid, channel)
	}
	return s.emitAt(ctx, channel, data, opts, map[string]string{
		protocol.MetaTarget:  protocol.TargetChannel,
		protocol.MetaChannel: channel,
	})
}

// ToUserPosition is ToUser that also returns the message's position in the user's channel, as
// ToChannelPosition does (clients see that channel as "$user").
func (s *Service) ToUserPosition(ctx context.Context, user string, data any, opts ...EmitOption) (id, position string, err error) {
	if user == "" || len(user) > MaxUserLen {
		return "", "", fmt.Errorf("%w: user must be 1 to %d bytes", ErrInvalid, MaxUserLen)
	}
	channel := protocol.UserChannelFor(user)
	return s.emitAt(ctx, channel, data, opts, map[string]string{
		protocol.MetaTarget:  protocol.TargetUser,
		protocol.MetaUser:    user,
		protocol.MetaChannel: channel,
	})
}

// emitAt emits to channel and returns the message's position there ("" without one).
func (s *Service) emitAt(ctx context.Context, channel string, data any, opts []EmitOption, target map[string]string) (string, string, error) {
	var pos protocol.Position
	id, err := s.emitWith(ctx, protocol.ChannelTopic(channel), data, opts, target, &pos)
	if err != nil || pos.IsZero() {
		return id, "", err
	}
	return id, pos.ForChannel(channel), nil
}

// ToUser emits data to every connection of user that subscribed to its "$user" channel, on any
// node. Clients see it on channel "$user".
func (s *Service) ToUser(ctx context.Context, user string, data any, opts ...EmitOption) (string, error) {
	if user == "" || len(user) > MaxUserLen {
		return "", fmt.Errorf("%w: user must be 1 to %d bytes", ErrInvalid, MaxUserLen)
	}
	channel := protocol.UserChannelFor(user)
	return s.emit(ctx, protocol.ChannelTopic(channel), data, opts, map[string]string{
		protocol.MetaTarget:  protocol.TargetUser,
		protocol.MetaUser:    user,
		protocol.MetaChannel: channel,
	})
}

// ToSession emits data to one connection (the welcome frame's "session"; Inbound.Session()),
// wherever it is connected. Nothing happens if the session is gone. Clients see "to":"session".
func (s *Service) ToSession(ctx context.Context, session string, data any, opts ...EmitOption) (string, error) {
	if session == "" || len(session) > MaxSessionLen {
		return "", fmt.Errorf("%w: session must be 1 to %d bytes", ErrInvalid, MaxSessionLen)
	}
	return s.emit(ctx, protocol.TopicDirect, data, opts, map[string]string{
		protocol.MetaTarget:  protocol.TargetSession,
		protocol.MetaSession: session,
	})
}

// Broadcast emits data to every connection of every node. Clients see "to":"all".
func (s *Service) Broadcast(ctx context.Context, data any, opts ...EmitOption) (string, error) {
	return s.emit(ctx, protocol.TopicDirect, data, opts, map[string]string{
		protocol.MetaTarget: protocol.TargetAll,
	})
}

// Payload is the message payload for data: []byte and json.RawMessage as they are (copied),
// anything else JSON-encoded. Empty data is refused (the API requires data too).
func Payload(data any) ([]byte, error) {
	var b []byte
	switch d := data.(type) {
	case []byte:
		b = bytes.Clone(d)
	case json.RawMessage:
		b = bytes.Clone(d)
	default:
		var err error
		if b, err = json.Marshal(d); err != nil {
			return nil, fmt.Errorf("%w: data: %w", ErrInvalid, err)
		}
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: data is empty", ErrInvalid)
	}
	return b, nil
}

// emit builds the message as the HTTP API does and publishes it to topic.
func (s *Service) emit(ctx context.Context, topic string, data any, opts []EmitOption, target map[string]string) (string, error) {
	return s.emitWith(ctx, topic, data, opts, target, nil)
}

// emitWith is emit; when pos is not nil and the broker says where it put the message
// (transports.PositionPublisher), that position is written to pos.
func (s *Service) emitWith(ctx context.Context, topic string, data any, opts []EmitOption, target map[string]string, pos *protocol.Position) (string, error) {
	var o emitOptions
	for _, opt := range opts {
		opt(&o)
	}
	payload, err := Payload(data)
	if err != nil {
		return "", err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	md := msg.Metadata
	for k, v := range o.meta {
		if reserved[k] || k == "" {
			return "", fmt.Errorf("%w: metadata key %q is reserved", ErrInvalid, k)
		}
		md.Set(k, v)
	}
	md.Set(protocol.MetaKind, KindService)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	if o.msgID != "" {
		if len(o.msgID) > MaxMsgIDLen || !utf8.ValidString(o.msgID) {
			return "", fmt.Errorf("%w: msg_id must be at most %d bytes of UTF-8", ErrInvalid, MaxMsgIDLen)
		}
		md.Set(protocol.MetaMsgID, o.msgID)
		md.Set(protocol.MetaIdempotent, "1")
		msg.UUID = MsgUUID(o.msgID)
	}
	for k, v := range target {
		md.Set(k, v)
	}
	s.keys.Sign(topic, msg) // last: it covers the target, the session and the payload
	if err := s.publish(ctx, topic, msg, pos); err != nil {
		return "", err
	}
	return msg.UUID, nil
}

// MsgUUID is the message UUID of an emit WithMsgID(key): the one POST /api/publish gives a
// message with that msg_id (protocol.IdempotentUUID of the API's dedupe key, "api\x00"+key).
func MsgUUID(key string) string {
	return protocol.IdempotentUUID(protocol.DedupeKey(protocol.KindAPI, "", "", key))
}

// publish hands msg to the broker and waits for the broker's acceptance or for ctx. When ctx
// ends first the message may still be delivered (retry WithMsgID to be sure of once).
func (s *Service) publish(ctx context.Context, topic string, msg *message.Message, pos *protocol.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	msg.SetContext(ctx)
	done := make(chan error, 1)
	var got protocol.Position // written by the goroutine before done
	go func() {
		pp, ok := s.broker.(transports.PositionPublisher)
		if pos == nil || !ok {
			done <- s.broker.Publish(topic, msg)
			return
		}
		ps, err := pp.PublishPositions(topic, msg)
		if err == nil && len(ps) == 1 {
			got = ps[0]
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("service: publish to %s: %w", topicName(topic), err)
		}
		if pos != nil {
			*pos = got
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("service: publish to %s: %w", topicName(topic), ctx.Err())
	}
}

func topicName(topic string) string {
	if ch, ok := protocol.ChannelOf(topic); ok {
		if user, ok := strings.CutPrefix(ch, protocol.UserChannelPrefix); ok {
			return "user " + strconv.Quote(user)
		}
		return "channel " + strconv.Quote(ch)
	}
	return "topic " + strconv.Quote(topic)
}
