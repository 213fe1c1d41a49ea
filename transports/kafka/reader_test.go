package kafka

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestNackDelay: a nacked record comes again, the same message, after nackDelay.
func TestNackDelay(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	topic := protocol.ChannelTopic("n")
	ch := subscribe(t, b, topic)
	for _, p := range []string{"0", "1"} {
		if err := b.Publish(topic, transporttest.NewMessage(p)); err != nil {
			t.Fatal(err)
		}
	}
	next := func() *message.Message {
		t.Helper()
		select {
		case m := <-ch:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("nothing delivered")
			return nil
		}
	}
	first := next()
	nacked := time.Now()
	first.Nack()
	again := next()
	if d := time.Since(nacked); d < nackDelay {
		t.Fatalf("delivered again %v after the nack, want at least %v", d, nackDelay)
	}
	if again.UUID != first.UUID || again.Metadata.Get(protocol.MetaPosition) != first.Metadata.Get(protocol.MetaPosition) {
		t.Fatalf("after a nack got %s at %s, want %s at %s", again.UUID, again.Metadata.Get(protocol.MetaPosition),
			first.UUID, first.Metadata.Get(protocol.MetaPosition))
	}
	again.Ack()
	if m := next(); string(m.Payload) != "1" {
		t.Fatalf("after the ack got %q, want 1", m.Payload)
	}
}

// TestIdleSubscriptionsHoldNoGoroutine: a channel subscription with nothing to deliver holds no
// goroutine; one that delivers holds one only while it does.
func TestIdleSubscriptionsHoldNoGoroutine(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	subscribe(t, b, protocol.ChannelTopic("warm")) // starts the reader
	const n = 200
	base := runtime.NumGoroutine()
	for i := range n {
		subscribe(t, b, protocol.ChannelTopic(fmt.Sprint("idle", i)))
	}
	if g := runtime.NumGoroutine(); g > base+n/10 {
		t.Fatalf("%d goroutines for %d idle subscriptions, %d before", g, n, base)
	}
}

// TestSubscribeFuncRefused: a deliver that does not take a message ends the subscription, and
// ended is called once.
func TestSubscribeFuncRefused(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	topic := protocol.ChannelTopic("r")
	ended := make(chan struct{})
	err := b.SubscribeFunc(context.Background(), topic, func(*message.Message) bool { return false }, func() { close(ended) })
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(topic, transporttest.NewMessage("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("a refused message did not end the subscription")
	}
	r, err := b.reader(b.names.channels)
	if err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if k := len(r.subs); k != 0 {
			return fmt.Errorf("%d keys still subscribed", k)
		}
		return nil
	})
}
