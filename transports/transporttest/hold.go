package transporttest

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// HeldGroupMessage checks that a consumer group hands a message its member still holds (neither
// acked nor nacked) to no other member, however long it is held, and that the message of a
// member that stops without acking goes to another member. a and b are two nodes of one cluster
// whose broker redelivers an unacked group message after redelivery (JetStream's AckWait,
// Redis's claim idle time), configured short for the test; timeout bounds each wait for a
// delivery.
func HeldGroupMessage(t *testing.T, a, b transports.Broker, redelivery, timeout time.Duration) {
	topic := protocol.TopicEvents
	t.Run("held", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		holder := subscribeGroup(t, ctx, a, topic, "hold")
		// queued waits at the holder behind held (pushed to it, or read by it): it is held too.
		held, queued := NewMessage("held"), NewMessage("queued")
		publish(t, a, topic, held, queued)
		got := take(t, holder, timeout)
		if got.UUID != held.UUID {
			t.Fatalf("holder got %s %q, want the held message", got.UUID, got.Payload)
		}
		other := subscribeGroup(t, ctx, b, topic, "hold")
		// Hold it for three redelivery deadlines: a broker that does not know it is held hands
		// it to the other member (or to the holder again) meanwhile.
		hold := time.NewTimer(3 * redelivery)
		defer hold.Stop()
		select {
		case m, ok := <-other:
			if !ok {
				t.Fatal("the other member's subscription closed")
			}
			t.Fatalf("the other member got %s %q while the holder held the messages", m.UUID, m.Payload)
		case <-hold.C:
		}
		got.Ack()
		// Whatever a member still had coming arrives before a sentinel published after it: publish
		// sentinels until each member got one.
		got1 := map[<-chan *message.Message]bool{}
		queuedSeen := 0
		deadline := time.After(timeout)
		for len(got1) < 2 {
			sentinel := NewMessage("sentinel")
			publish(t, a, topic, sentinel)
			for seen := false; !seen; {
				var m *message.Message
				from := holder
				select {
				case m = <-holder:
				case m = <-other:
					from = other
				case <-deadline:
					t.Fatalf("sentinels did not reach both members within %v", timeout)
				}
				if m == nil {
					t.Fatal("a subscription closed")
				}
				m.Ack()
				if m.UUID == held.UUID {
					t.Fatal("the held message was delivered a second time")
				}
				if m.UUID == queued.UUID {
					if queuedSeen++; queuedSeen > 1 {
						t.Fatal("the queued message was delivered twice")
					}
				}
				if seen = m.UUID == sentinel.UUID; seen {
					got1[from] = true
				}
			}
		}
		if queuedSeen != 1 {
			t.Fatalf("the queued message arrived %d times, want once", queuedSeen)
		}
	})
	t.Run("member stops", func(t *testing.T) {
		hctx, stop := context.WithCancel(t.Context())
		defer stop()
		holder := subscribeGroup(t, hctx, a, topic, "stops")
		lost := NewMessage("lost")
		publish(t, a, topic, lost)
		if got := take(t, holder, timeout); got.UUID != lost.UUID {
			t.Fatalf("holder got %s %q, want the message", got.UUID, got.Payload)
		}
		other := subscribeGroup(t, t.Context(), b, topic, "stops")
		stop() // without an ack: the member is gone
		for range holder {
		}
		got := Receive(t, other, 1, redelivery+timeout)[0]
		if got.UUID != lost.UUID {
			t.Fatalf("the other member got %s %q, want the stopped member's message", got.UUID, got.Payload)
		}
	})
}

func subscribeGroup(t *testing.T, ctx context.Context, b transports.Broker, topic, group string) <-chan *message.Message {
	t.Helper()
	ch, err := b.SubscribeGroup(ctx, topic, group)
	if err != nil {
		t.Fatalf("SubscribeGroup(%q, %q): %v", topic, group, err)
	}
	return ch
}

// take receives one message without acking it.
func take(t *testing.T, ch <-chan *message.Message, timeout time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("nothing arrived within %v", timeout)
	}
	return nil
}
