package transports

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// chanRelay is a relay whose Deliver puts messages on a channel, as SubscribeChan does; cfg
// gives the rest of its configuration.
func chanRelay(t *testing.T, cfg RelayConfig) (*Relay, <-chan *message.Message, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan *message.Message)
	cfg.Deliver = func(m *message.Message) bool {
		select {
		case out <- m:
			return true
		case <-m.Context().Done():
			return false
		}
	}
	r := NewRelay(ctx, cancel, cfg)
	t.Cleanup(func() { cancel(); r.Close() })
	return r, out, cancel
}

func next(t *testing.T, out <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m := <-out:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered")
		return nil
	}
}

func TestRelayOrderAckNack(t *testing.T) {
	r, out, _ := chanRelay(t, RelayConfig{Limit: 10})
	for i := range 3 {
		if !r.Offer(message.NewMessage(strconv.Itoa(i), []byte(strconv.Itoa(i))), 0) {
			t.Fatal("offer refused with room left")
		}
	}
	m := next(t, out)
	if string(m.Payload) != "0" {
		t.Fatalf("first %q", m.Payload)
	}
	m.Nack()
	if m = next(t, out); string(m.Payload) != "0" {
		t.Fatalf("after a nack %q, want 0 again", m.Payload)
	}
	m.Ack()
	for _, want := range []string{"1", "2"} {
		if m = next(t, out); string(m.Payload) != want {
			t.Fatalf("got %q, want %s", m.Payload, want)
		}
		m.Ack()
	}
	// The drain goroutine ended with the queue; the next offer starts another.
	r.Offer(message.NewMessage("3", []byte("3")), 0)
	if m = next(t, out); string(m.Payload) != "3" {
		t.Fatalf("got %q, want 3", m.Payload)
	}
	m.Ack()
}

func TestRelayFull(t *testing.T) {
	r, out, _ := chanRelay(t, RelayConfig{Limit: 2})
	// One message is being handed over (nobody reads out), two wait: the queue is full.
	r.Offer(message.NewMessage("0", nil), 0)
	first := next(t, out)
	r.Offer(message.NewMessage("1", nil), 0)
	r.Offer(message.NewMessage("2", nil), 0)
	if r.Offer(message.NewMessage("3", nil), 0) {
		t.Fatal("offer to a full queue without waiting accepted")
	}
	if r.Offer(message.NewMessage("3", nil), 20*time.Millisecond) {
		t.Fatal("offer to a full queue that stays full accepted")
	}
	// Room comes while an offer waits: it is taken.
	var wg sync.WaitGroup
	wg.Add(1)
	var ok bool
	go func() {
		defer wg.Done()
		ok = r.Offer(message.NewMessage("3", nil), time.Minute)
	}()
	first.Ack() // the drain takes "1": room for one
	wg.Wait()
	if !ok {
		t.Fatal("offer that got room refused")
	}
	for _, want := range []string{"1", "2", "3"} {
		m := next(t, out)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		m.Ack()
	}
}

func TestRelayClose(t *testing.T) {
	r, out, cancel := chanRelay(t, RelayConfig{Limit: 10})
	r.Offer(message.NewMessage("0", nil), 0)
	r.Offer(message.NewMessage("1", nil), 0)
	next(t, out) // "0" is handed over; "1" waits
	cancel()
	r.Close() // returns once the drain has
	select {
	case m2 := <-out:
		t.Fatalf("%s delivered after Close", m2.UUID)
	default:
	}
	if !r.Offer(message.NewMessage("2", nil), 0) {
		t.Fatal("a closed relay must take (and drop) what it is offered")
	}
}

func TestRelayRefused(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := NewRelay(ctx, cancel, RelayConfig{Deliver: func(*message.Message) bool { return false }, Limit: 10})
	r.Offer(message.NewMessage("0", nil), 0)
	select {
	case <-ctx.Done(): // the relay ended the subscription
	case <-time.After(10 * time.Second):
		t.Fatal("a refused message did not end the subscription")
	}
	r.Close()
}

func TestRelayFinish(t *testing.T) {
	r, out, _ := chanRelay(t, RelayConfig{Limit: 2})
	r.Offer(message.NewMessage("0", nil), 0)
	first := next(t, out) // "0" is handed over
	r.Offer(message.NewMessage("1", nil), 0)
	r.Offer(message.NewMessage("2", nil), 0)
	// An offer waiting for room when Finish comes takes nothing.
	waited := make(chan bool)
	go func() { waited <- r.Offer(message.NewMessage("x", nil), time.Minute) }()
	waitOfferWaits(t, r)
	r.Finish()
	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("an offer to a finishing relay reported a slow consumer")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting offer did not return on Finish")
	}
	if !r.Offer(message.NewMessage("y", nil), 0) {
		t.Fatal("a finishing relay must take (and drop) what it is offered")
	}
	first.Nack() // still delivered again: the subscription goes on until the queue is empty
	for _, want := range []string{"0", "1", "2"} {
		m := next(t, out)
		if m.UUID != want {
			t.Fatalf("got %s, want %s", m.UUID, want)
		}
		if r.ctx.Err() != nil {
			t.Fatal("the subscription ended before the queue was delivered")
		}
		m.Ack()
	}
	select {
	case <-r.ctx.Done(): // the relay ended the subscription once the queue was empty
	case <-time.After(10 * time.Second):
		t.Fatal("a finished relay did not end the subscription")
	}
	select {
	case m := <-out:
		t.Fatalf("%s delivered after the queue of a finished relay", m.UUID)
	default:
	}
}

// waitOfferWaits waits until an Offer waits for room on r.
func waitOfferWaits(t *testing.T, r *Relay) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		waiting := r.space != nil
		r.mu.Unlock()
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no offer waits for room")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRelayFinishIdle(t *testing.T) {
	r, _, _ := chanRelay(t, RelayConfig{Limit: 2})
	r.Finish() // nothing queued, no drain running: the subscription ends at once
	select {
	case <-r.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("finishing an idle relay did not end the subscription")
	}
}

func TestRelayNackDelay(t *testing.T) {
	const delay = 50 * time.Millisecond
	r, out, cancel := chanRelay(t, RelayConfig{Limit: 10, NackDelay: delay})
	r.Offer(message.NewMessage("0", nil), 0)
	m := next(t, out)
	nacked := time.Now()
	m.Nack()
	m = next(t, out)
	if d := time.Since(nacked); d < delay {
		t.Fatalf("delivered again %v after the nack, want at least %v", d, delay)
	}
	if m.UUID != "0" {
		t.Fatalf("got %s after a nack, want 0 again", m.UUID)
	}
	// A subscription that ends during the wait gets nothing more.
	m.Nack()
	cancel()
	r.Close()
	select {
	case m := <-out:
		t.Fatalf("%s delivered again after the subscription ended", m.UUID)
	default:
	}
}

// TestRelayQueueOfOneAllocatesNothing: a message offered to an idle relay, the usual case, is
// queued without allocating an array (the drain goroutine is left out here: busy is set).
func TestRelayQueueOfOneAllocatesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewRelay(ctx, cancel, RelayConfig{Deliver: func(*message.Message) bool { return true }, Limit: 10})
	r.busy = true
	m := message.NewMessage("1", nil)
	if n := testing.AllocsPerRun(100, func() {
		if !r.Offer(m, 0) {
			t.Fatal("refused")
		}
		if got, ok, _ := r.take(); !ok || got != m {
			t.Fatal("not queued")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per message queued and taken, want 0", n)
	}
	// Two queued: in order, and nothing kept once taken.
	m2 := message.NewMessage("2", nil)
	r.Offer(m, 0)
	r.Offer(m2, 0)
	if a, _, _ := r.take(); a != m {
		t.Fatal("out of order")
	}
	if b, _, _ := r.take(); b != m2 {
		t.Fatal("out of order")
	}
	if r.items != nil || r.one[0] != nil {
		t.Fatal("an empty queue keeps an array or a message")
	}
}
