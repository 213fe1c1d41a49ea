package handlers

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Messages are the router handlers between the node and the broker: Inbound (client ->
// broker), Channel and Direct (broker -> clients).
type Messages struct {
	d      Deps
	recent *recent
}

// NewMessages makes the message handlers.
func NewMessages(d Deps) *Messages { return &Messages{d: d, recent: newRecent(d.DedupeWindow)} }

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
	out := message.NewMessage(msg.UUID, msg.Payload)
	for k, v := range md {
		out.Metadata.Set(k, v)
	}
	if protocol.IsChannelTopic(topic) || topic == protocol.TopicDirect {
		r.d.Signatures.Sign(topic, out)
	}
	if err := r.d.Broker.Publish(topic, out); err != nil {
		r.d.Metrics.BrokerErrors.Inc()
		return fmt.Errorf("%w: %w", transports.ErrUnavailable, err)
	}
	r.d.Metrics.Published.WithLabelValues(md.Get(protocol.MetaKind)).Inc()
	return nil
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
	if n := r.d.Hub.Deliver(channel, pos, frame); n > 0 {
		r.d.Metrics.Delivered.Add(float64(n))
		r.observeLatency(msg)
	}
	return nil
}

// Direct delivers a message addressed to one session (if it is on this node) or to everyone.
func (r *Messages) Direct(msg *message.Message) error {
	if r.duplicate(msg) {
		return nil
	}
	f := protocol.Message{Type: "message", ID: messageID(msg, protocol.Position{})}
	f.SetPayload(msg.Payload)
	var n int
	switch msg.Metadata.Get(protocol.MetaTarget) {
	case protocol.TargetSession:
		c, ok := r.d.Hub.Session(msg.Metadata.Get(protocol.MetaSession))
		if !ok {
			return nil
		}
		f.To = protocol.TargetSession
		if c.Send(protocol.Encode(f)) {
			n = 1
		}
	case protocol.TargetAll:
		f.To = protocol.TargetAll
		n = r.d.Hub.Broadcast(protocol.Encode(f))
	default:
		r.d.Log.Warn("direct message without a valid target dropped", "message_uuid", msg.UUID, "target", msg.Metadata.Get(protocol.MetaTarget))
		return nil
	}
	if n > 0 {
		r.d.Metrics.Delivered.Add(float64(n))
		r.observeLatency(msg)
	}
	return nil
}

func (r *Messages) observeLatency(msg *message.Message) {
	if ns, err := strconv.ParseInt(msg.Metadata.Get(protocol.MetaSentAt), 10, 64); err == nil {
		r.d.Metrics.DeliveryLatency.Observe(time.Since(time.Unix(0, ns)).Seconds())
	}
}

// channelFrame encodes a channel message for clients. channel is the node's name, clientName
// the one the client subscribed with ($user for a user's channel).
func channelFrame(msg *message.Message, channel, clientName string) ([]byte, protocol.Position) {
	pos, _ := protocol.ParsePosition(msg.Metadata.Get(protocol.MetaPosition))
	f := protocol.Message{Type: "message", Channel: clientName, ID: messageID(msg, pos), Position: pos.ForChannel(channel)}
	f.SetPayload(msg.Payload)
	if msg.Metadata.Get(protocol.MetaKind) == protocol.KindPublish {
		f.From = &protocol.From{User: msg.Metadata.Get(protocol.MetaUser), Session: msg.Metadata.Get(protocol.MetaSession)}
	}
	return protocol.Encode(f), pos
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
