package handlers

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/signing"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Messages are the router handlers between the node and the broker: Inbound (client ->
// broker), Channel and Direct (broker -> clients).
type Messages struct {
	cfg    MessagesConfig
	recent *recent
}

// MessagesConfig is what Messages need.
type MessagesConfig struct {
	Hub          Hub
	Broker       Publisher
	DedupeWindow time.Duration // how long a delivered idempotency key is remembered
	Signatures   *signing.Keys // sign what the node publishes for clients; nil: no signing
	// Encode encodes a channel message for the connections of another frame format than the
	// native one (Pusher's; see websocket.Encoder); nil: only native connections are served.
	Encode  func(f websocket.Format, msg *message.Message, channel string, pos protocol.Position) websocket.Encoded
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// NewMessages makes the message handlers.
func NewMessages(cfg MessagesConfig) *Messages {
	return &Messages{cfg: cfg, recent: newRecent(cfg.DedupeWindow)}
}

// duplicate reports whether msg repeats an idempotency key this node delivered already.
func (r *Messages) duplicate(msg *message.Message) bool {
	return msg.Metadata.Get(protocol.MetaIdempotent) == "1" && r.recent.seen(msg.UUID)
}

// Inbound publishes what a client or the API submitted to the broker topic of its target. Its
// error, after the retry middleware gave up, reaches the client as `unavailable`.
func (r *Messages) Inbound(msg *message.Message) error {
	md := msg.Metadata
	var topic string
	switch md.Get(protocol.MetaTarget) {
	case protocol.TargetChannel:
		topic = protocol.ChannelTopic(md.Get(protocol.MetaChannel))
	case protocol.TargetUser:
		ch := protocol.UserChannelFor(md.Get(protocol.MetaUser))
		md.Set(protocol.MetaChannel, ch)
		topic = protocol.ChannelTopic(ch)
	case protocol.TargetSession, protocol.TargetAll:
		topic = protocol.TopicDirect
	case protocol.TargetServices:
		topic = protocol.TopicInbound
	case protocol.TargetEvents:
		topic = protocol.TopicEvents
	default:
		return protocol.Errorf(protocol.CodeBadRequest, "unknown target %q", md.Get(protocol.MetaTarget))
	}
	// The submitted message itself goes to the broker, not a copy: a broker reads what it is
	// given only until Publish returns and modifies nothing (transports.Broker), and nothing
	// else reads or writes msg meanwhile (its submitter waits for the router's ack). An attempt
	// that the retry middleware repeats signs it again, over the same fields.
	if protocol.IsChannelTopic(topic) || topic == protocol.TopicDirect {
		r.cfg.Signatures.Sign(topic, msg)
	}
	if err := r.publish(msg, topic); err != nil {
		r.cfg.Metrics.BrokerErrors.Inc()
		return fmt.Errorf("%w: %w", transports.ErrUnavailable, err)
	}
	r.cfg.Metrics.Published.WithLabelValues(md.Get(protocol.MetaKind)).Inc()
	return nil
}

// publish publishes msg to topic. For a channel topic, on a broker that says where it put it
// (transports.PositionPublisher), the position goes to whoever submitted msg and asked
// (withSubmission): the API's answer and the client's ack.
func (r *Messages) publish(msg *message.Message, topic string) error {
	slot, asked := msg.Context().Value(positionKey{}).(*positionSlot)
	pp, ok := r.cfg.Broker.(transports.PositionPublisher)
	if !asked || !ok || !protocol.IsChannelTopic(topic) {
		return r.cfg.Broker.Publish(topic, msg)
	}
	pos, err := pp.PublishPositions(topic, msg)
	if err == nil && len(pos) == 1 {
		slot.set(pos[0])
	}
	return err
}

// Channel delivers a channel message from the broker to the local subscribers of its channel,
// encoding the frame once for all of them.
func (r *Messages) Channel(msg *message.Message) error {
	if r.duplicate(msg) {
		return nil
	}
	channel := msg.Metadata.Get(protocol.MetaChannel)
	clientName := channel
	if strings.HasPrefix(channel, protocol.UserChannelPrefix) {
		clientName = protocol.UserChannel
	}
	frame, pos := channelFrame(msg, channel, clientName)
	var other websocket.Encoder
	if r.cfg.Encode != nil {
		other = func(f websocket.Format) websocket.Encoded { return r.cfg.Encode(f, msg, channel, pos) }
	}
	if n := r.cfg.Hub.Deliver(channel, pos, frame, other); n > 0 {
		r.cfg.Metrics.Delivered.Add(float64(n))
		r.observeLatency(msg)
	}
	return nil
}

// Direct delivers a message addressed to one session (if it is on this node) or to everyone.
func (r *Messages) Direct(msg *message.Message) error {
	if r.duplicate(msg) {
		return nil
	}
	var n int
	switch to := msg.Metadata.Get(protocol.MetaTarget); to {
	case protocol.TargetSession:
		c, ok := r.cfg.Hub.Session(msg.Metadata.Get(protocol.MetaSession))
		if !ok {
			return nil
		}
		frame := protocol.DirectMessageFrame(to, messageID(msg, protocol.Position{}), msg.Payload)
		if f := c.Format(); f != websocket.FormatNative { // a Pusher session: its own encoding, or nothing
			frame = nil
			if r.cfg.Encode != nil {
				frame = r.cfg.Encode(f, msg, "", protocol.Position{}).Frame
			}
		}
		if frame != nil && c.Send(frame) {
			n = 1
		}
	case protocol.TargetAll:
		n = r.cfg.Hub.Broadcast(protocol.DirectMessageFrame(to, messageID(msg, protocol.Position{}), msg.Payload))
	default:
		r.cfg.Log.Warn("direct message without a valid target dropped", "message_uuid", msg.UUID, "target", msg.Metadata.Get(protocol.MetaTarget))
		return nil
	}
	if n > 0 {
		r.cfg.Metrics.Delivered.Add(float64(n))
		r.observeLatency(msg)
	}
	return nil
}

func (r *Messages) observeLatency(msg *message.Message) {
	if ns, err := strconv.ParseInt(msg.Metadata.Get(protocol.MetaSentAt), 10, 64); err == nil {
		r.cfg.Metrics.DeliveryLatency.Observe(time.Since(time.Unix(0, ns)).Seconds())
	}
}

// channelFrame encodes a channel message for clients: a join or leave (a node published it,
// kind join or leave) as a join or leave frame, anything else as a message frame. channel is the
// node's name, clientName the one the client subscribed with ($user for a user's channel).
func channelFrame(msg *message.Message, channel, clientName string) ([]byte, protocol.Position) {
	pos, _ := protocol.ParsePosition(msg.Metadata.Get(protocol.MetaPosition))
	kind := msg.Metadata.Get(protocol.MetaKind)
	if kind == protocol.KindJoin || kind == protocol.KindLeave {
		if frame, ok := joinLeaveFrame(msg, kind, channel, clientName, pos); ok {
			return frame, pos
		}
	}
	var from *protocol.From
	if kind == protocol.KindPublish {
		from = &protocol.From{User: msg.Metadata.Get(protocol.MetaUser), Session: msg.Metadata.Get(protocol.MetaSession)}
	}
	return protocol.ChannelMessageFrame(clientName, messageID(msg, pos), pos.ForChannel(channel), msg.Payload, from), pos
}

// messageID is the message's UUID; a message emitted without one (a broker CLI) gets an id
// derived from its position, the same on every node.
func messageID(msg *message.Message, pos protocol.Position) string {
	if msg.UUID != "" {
		return msg.UUID
	}
	if !pos.IsZero() {
		return "p:" + pos.String()
	}
	return watermill.NewUUID()
}
