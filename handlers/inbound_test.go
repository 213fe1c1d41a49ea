package handlers

import (
	"maps"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// lastPublished keeps what it was last handed.
type lastPublished struct {
	topic string
	msgs  []*message.Message
}

func (p *lastPublished) Publish(topic string, msgs ...*message.Message) error {
	p.topic, p.msgs = topic, msgs
	return nil
}

// TestInboundPublishesWithoutCopying: Inbound hands the broker the submitted message (UUID,
// payload and metadata as submitted) without copying it: no allocation of a message and its
// metadata map per publish (ten allocations before), only the channel's topic name and the
// argument list of the broker call.
func TestInboundPublishesWithoutCopying(t *testing.T) {
	broker := &lastPublished{}
	r := NewMessages(MessagesConfig{Broker: broker, Metrics: metrics.New()})
	msg := message.NewMessage("uuid-1", []byte(`{"text":"hi"}`))
	for k, v := range map[string]string{
		protocol.MetaTarget: protocol.TargetChannel, protocol.MetaChannel: "room:1", protocol.MetaKind: protocol.KindPublish,
		protocol.MetaUser: "alice", protocol.MetaSession: "s-1", protocol.MetaNode: "n1", protocol.MetaMsgID: "m-1",
		protocol.MetaSentAt: "1", protocol.MetaIdempotent: "1",
	} {
		msg.Metadata.Set(k, v)
	}
	if err := r.Inbound(msg); err != nil {
		t.Fatal(err)
	}
	if broker.topic != protocol.ChannelTopic("room:1") || len(broker.msgs) != 1 {
		t.Fatalf("published %d messages to %q", len(broker.msgs), broker.topic)
	}
	if got := broker.msgs[0]; got.UUID != "uuid-1" || string(got.Payload) != `{"text":"hi"}` || !maps.Equal(got.Metadata, msg.Metadata) || len(got.Metadata) != 9 {
		t.Fatalf("published %s %s %v", got.UUID, got.Payload, got.Metadata)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Inbound(msg) }); n > 2 {
		t.Fatalf("Inbound: %v allocations per publish, want at most 2 (the topic's name, the broker call's argument list)", n)
	}
}
