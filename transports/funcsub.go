package transports

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Helpers for brokers that implement FuncSubscriber.

// CopyMessage is m.Copy() with the copy's metadata map made at its final size: m's entries and
// extra more that the caller adds. Watermill's Copy grows an empty map entry by entry, and a
// message's metadata (nine to eleven entries) outgrows a map's first group of eight: a fifth
// more bytes and a rehash per copy.
func CopyMessage(m *message.Message, extra int) *message.Message {
	c := message.NewMessage(m.UUID, m.Payload)
	c.Metadata = make(message.Metadata, len(m.Metadata)+extra)
	for k, v := range m.Metadata {
		c.Metadata[k] = v
	}
	return c
}

// Delivery is how DeliverUntilAcked ended.
type Delivery int

const (
	Acked   Delivery = iota // a copy was acked
	Refused                 // deliver did not take a copy: the subscriber is going away
	Ended                   // ctx ended first
)

// DeliverUntilAcked hands copies of m, each with ctx as its context, to deliver until one is
// acked; a nacked copy is followed at once by another.
func DeliverUntilAcked(ctx context.Context, m *message.Message, deliver func(*message.Message) bool) Delivery {
	return DeliverUntilAckedAfter(ctx, m, deliver, 0)
}

// DeliverUntilAckedAfter is DeliverUntilAcked with a pause of nackDelay after each nack (0: none),
// for brokers that document one.
func DeliverUntilAckedAfter(ctx context.Context, m *message.Message, deliver func(*message.Message) bool, nackDelay time.Duration) Delivery {
	for {
		c := CopyMessage(m, 0)
		c.SetContext(ctx)
		if !deliver(c) {
			return Refused
		}
		select {
		case <-c.Acked():
			return Acked
		case <-c.Nacked():
		case <-ctx.Done():
			return Ended
		}
		if nackDelay <= 0 {
			continue
		}
		t := time.NewTimer(nackDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil { // an ended subscription must not win the race with the timer
			return Ended
		}
	}
}

// SubscribeChan implements Broker.Subscribe with h's SubscribeFunc: the messages come on an
// unbuffered channel that is closed when the subscription ends. It needs the contract DeliverUntilAcked
// keeps: each message handed to deliver has the subscription's context, done once it ended.
func SubscribeChan(ctx context.Context, h FuncSubscriber, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	deliver := func(m *message.Message) bool {
		select {
		case out <- m:
			return true
		case <-m.Context().Done(): // the subscription ended
			return false
		}
	}
	if err := h.SubscribeFunc(ctx, topic, deliver, func() { close(out) }); err != nil {
		return nil, err
	}
	return out, nil
}
