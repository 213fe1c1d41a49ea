package transporttest

import (
	"context"
	"slices"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// testPublishPositions: a broker with history says where what it publishes to a channel landed
// (transports.PositionPublisher), the very positions its subscribers see, and a Replay from
// each returns exactly what came after it.
func (s *suite) testPublishPositions(t *testing.T) {
	if !s.f.History {
		t.Skip("broker keeps no history")
	}
	n := s.nodes(t, Prefix(t), 2)
	pp, ok := n[1].(transports.PositionPublisher)
	if !ok {
		t.Fatal("a broker with history must implement transports.PositionPublisher")
	}
	h := n[0].(transports.History)
	ctx := context.Background()
	topic, other := protocol.ChannelTopic("pos"), protocol.ChannelTopic("pos-other")
	ch := subscribe(t, n[0], topic)
	var pos []protocol.Position
	for i, batch := range [][]string{{"p0", "p1"}, {"p2"}, {"p3", "p4", "p5"}} {
		msgs := make([]*message.Message, len(batch))
		for j, p := range batch {
			msgs[j] = NewMessage(p)
		}
		got, err := pp.PublishPositions(topic, msgs...)
		if err != nil {
			t.Fatalf("PublishPositions %d: %v", i, err)
		}
		if len(got) != len(batch) {
			t.Fatalf("PublishPositions %d: %d positions for %d messages", i, len(got), len(batch))
		}
		pos = append(pos, got...)
		publish(t, n[1], other, NewMessage("o"+batch[0])) // another channel in between
	}
	live := Receive(t, ch, 6, s.f.Timeout)
	for i, m := range live {
		if got := m.Metadata.Get(protocol.MetaPosition); got != pos[i].String() {
			t.Fatalf("message %d: subscribers see position %q, PublishPositions said %q", i, got, pos[i])
		}
	}
	for i := range pos {
		msgs, complete, err := h.Replay(ctx, topic, pos[i], 100)
		if err != nil || !complete {
			t.Fatalf("Replay from published position %d: complete %v, err %v", i, complete, err)
		}
		checkSeq(t, "replay from a published position", msgs, seq("p", 6)[i+1:])
	}
	if last, err := h.Last(ctx, topic); err != nil || last != pos[5] {
		t.Fatalf("Last = %v (err %v), want the last published position %v", last, err, pos[5])
	}
	if got, err := pp.PublishPositions(protocol.TopicInbound, NewMessage("in")); err != nil || got != nil {
		t.Fatalf("PublishPositions to a topic without history: %v, err %v; want nil, nil", got, err)
	}
}

// testBefore: a broker with history reads a channel backwards (transports.ReverseHistory), page
// by page, skipping the other channels that share its storage.
func (s *suite) testBefore(t *testing.T) {
	if !s.f.History {
		t.Skip("broker keeps no history")
	}
	n := s.nodes(t, Prefix(t), 2)
	rh, ok := n[1].(transports.ReverseHistory)
	if !ok {
		t.Fatal("a broker with history must implement transports.ReverseHistory")
	}
	pp := n[0].(transports.PositionPublisher)
	ctx := context.Background()
	topic, other := protocol.ChannelTopic("rev"), protocol.ChannelTopic("rev-other")
	if msgs, err := rh.Before(ctx, protocol.ChannelTopic("rev-empty"), protocol.Position{}, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("Before on an empty channel: %d messages, err %v", len(msgs), err)
	}
	var pos []protocol.Position
	for _, p := range seq("r", 10) {
		got, err := pp.PublishPositions(topic, NewMessage(p))
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, got[0])
		publish(t, n[0], other, NewMessage("x"+p))
	}
	want := seq("r", 10)
	slices.Reverse(want) // r9 ... r0
	page := func(before protocol.Position, limit int, from, to int) protocol.Position {
		t.Helper()
		msgs, err := rh.Before(ctx, topic, before, limit)
		if err != nil {
			t.Fatalf("Before(%v, %d): %v", before, limit, err)
		}
		checkSeq(t, "a page backwards", msgs, want[from:to])
		for i, m := range msgs {
			if got, wantPos := m.Metadata.Get(protocol.MetaPosition), pos[9-from-i].String(); got != wantPos {
				t.Fatalf("Before: message %s has position %q, it was published at %q", m.Payload, got, wantPos)
			}
		}
		if len(msgs) == 0 {
			return protocol.Position{}
		}
		p, _ := protocol.ParsePosition(msgs[len(msgs)-1].Metadata.Get(protocol.MetaPosition))
		return p
	}
	next := page(protocol.Position{}, 4, 0, 4) // r9..r6
	next = page(next, 4, 4, 8)                 // r5..r2
	next = page(next, 4, 8, 10)                // r1, r0: fewer, the start
	page(next, 4, 10, 10)                      // nothing before r0
	page(pos[5], 100, 5, 10)                   // before r5: r4..r0
	foreign := protocol.Position{Epoch: "elsewhere", Lo: 5}
	if msgs, err := rh.Before(ctx, topic, foreign, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("Before a position of another epoch: %d messages, err %v", len(msgs), err)
	}
}
