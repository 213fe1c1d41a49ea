package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// groupWait bounds each wait for a group delivery in these tests.
const groupWait = 15 * time.Second

// TestGroupRebalanceKeepsHeld: a member joining the group takes nothing from the member that
// holds the partition: the message it holds (longer than holdGrace) goes to no one else and
// does not come again, and the holder goes on after its ack. Then the holder's broker closes
// right after two acks: the member that takes the partition over starts after them.
func TestGroupRebalanceKeepsHeld(t *testing.T) {
	cl := newCluster(t)
	prefix := transporttest.Prefix(t)
	a := newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
	topic := protocol.TopicEvents
	holder := subscribeGroup(t, a, topic, "hold")
	m1, m2 := transporttest.NewMessage("m1"), transporttest.NewMessage("m2")
	publish(t, a, topic, m1, m2)
	held := take(t, holder)
	if held.UUID != m1.UUID {
		t.Fatalf("holder got %q, want m1", held.Payload)
	}
	other := subscribeGroup(t, b, topic, "hold") // returns once the rebalance gave it its (empty) share
	// Hold m1 past holdGrace: an eager rebalance would have given it up by then.
	hold := time.NewTimer(holdGrace + time.Second)
	defer hold.Stop()
	select {
	case m := <-holder:
		t.Fatalf("the holder got %q while it held m1", payload(m))
	case m := <-other:
		t.Fatalf("the member that joined got %q while the holder held m1", payload(m))
	case <-hold.C:
	}
	held.Ack()
	if m := take(t, holder); m.UUID != m2.UUID {
		t.Fatalf("after the ack the holder got %q, want m2", m.Payload)
	} else {
		m.Ack()
	}
	// The acks were committed before the partition left with the closing broker (sarama's
	// auto-commit is every second: this is the commit on giving the partition up).
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	m3 := transporttest.NewMessage("m3")
	publish(t, b, topic, m3)
	if m := take(t, other); m.UUID != m3.UUID {
		t.Fatalf("the member that took the partition over got %q first, want m3", m.Payload)
	}
}

// TestGroupAckWhileStopping: an ack given while the member stops (its subscription ends, its
// broker closes) is committed: the next member does not get the message again. A message never
// acked goes to the next member (at least once).
func TestGroupAckWhileStopping(t *testing.T) {
	cl := newCluster(t)
	for _, tc := range []struct {
		name string
		ack  bool
		stop func(cancel context.CancelFunc, b *Broker) (wait func())
	}{
		{"subscription ends", true, func(cancel context.CancelFunc, _ *Broker) func() { cancel(); return func() {} }},
		{"broker closes", true, func(_ context.CancelFunc, b *Broker) func() {
			done := make(chan struct{})
			go func() { _ = b.Close(); close(done) }()
			<-b.done // Close has begun: the ack comes after
			return func() { <-done }
		}},
		{"no ack", false, func(cancel context.CancelFunc, _ *Broker) func() { cancel(); return func() {} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := transporttest.Prefix(t)
			a := newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ch, err := a.SubscribeGroup(ctx, protocol.TopicEvents, "stop")
			if err != nil {
				t.Fatal(err)
			}
			m1 := transporttest.NewMessage("m1")
			publish(t, a, protocol.TopicEvents, m1)
			held := take(t, ch)
			wait := tc.stop(cancel, a)
			if tc.ack {
				held.Ack()
			}
			wait()
			for range ch { // closed once the member left the group
			}
			b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
			next := subscribeGroup(t, b, protocol.TopicEvents, "stop")
			m2 := transporttest.NewMessage("m2")
			publish(t, b, protocol.TopicEvents, m2)
			want := m2
			if !tc.ack {
				want = m1
			}
			m := take(t, next)
			if m.UUID != want.UUID {
				t.Fatalf("the next member got %q first, want %q", m.Payload, want.Payload)
			}
		})
	}
}

// TestGroupCommitsEachAck: an ack is committed at once (with sarama's periodic auto-commit
// set to an hour here), so a member that dies loses the commit of no ack made before its
// last commit began.
func TestGroupCommitsEachAck(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	b.groupAutoCommit = time.Hour
	admin, err := sarama.NewClusterAdmin(cl.addrs(), b.saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	ch := subscribeGroup(t, b, protocol.TopicEvents, "commits")
	group := b.names.prefix + ".commits"
	for i := range 3 {
		publish(t, b, protocol.TopicEvents, transporttest.NewMessage(fmt.Sprint("m", i)))
		take(t, ch).Ack()
		transporttest.WaitFor(t, groupWait, func() error {
			resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{b.names.events: {0}})
			if err != nil {
				return err
			}
			if blk := resp.GetBlock(b.names.events, 0); blk == nil || blk.Offset != int64(i+1) {
				return fmt.Errorf("committed offset %+v after %d acks", blk, i+1)
			}
			return nil
		})
	}
}

func subscribeGroup(t *testing.T, b *Broker, topic, group string) <-chan *message.Message {
	t.Helper()
	ch, err := b.SubscribeGroup(t.Context(), topic, group)
	if err != nil {
		t.Fatalf("SubscribeGroup(%q, %q): %v", topic, group, err)
	}
	return ch
}

func publish(t *testing.T, b *Broker, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := b.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

// take receives one message without acking it.
func take(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(groupWait):
		t.Fatalf("nothing arrived within %v", groupWait)
	}
	return nil
}

func payload(m *message.Message) string {
	if m == nil {
		return "(subscription closed)"
	}
	return string(m.Payload)
}
