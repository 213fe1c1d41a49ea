package handlers

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// countingInbox accepts every message at once and counts them.
type countingInbox struct{ n atomic.Int64 }

func (c *countingInbox) Submit(context.Context, *message.Message) error { c.n.Add(1); return nil }

func newTestEvents(inbox Submitter) *Events {
	return NewEvents(EventsConfig{NodeID: "n1", Inbox: inbox, Queue: 16, Heartbeat: time.Hour, PublishTimeout: time.Second,
		Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
}

// TestEventsCloseTwice: Close may be called twice, and from several goroutines at once, whether
// the events were started or not; it never panics, every goroutine Start started ends, the
// node_stopped event is submitted once, and Start after Close starts nothing.
func TestEventsCloseTwice(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, started := range []bool{false, true} {
		inbox := &countingInbox{}
		e := newTestEvents(inbox)
		if started {
			e.Start()
		}
		e.Close(time.Minute) // returns once the queue is submitted, long before the minute
		e.Close(time.Minute)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() { defer wg.Done(); e.Close(time.Minute) }()
		}
		wg.Wait()
		e.Emit(protocol.Event{Type: protocol.EventConnected}) // dropped, no panic
		e.Start()                                             // starts nothing after Close
		// started: the first heartbeat and node_stopped; never started: nothing was submitted.
		if got, want := inbox.n.Load(), map[bool]int64{false: 0, true: 2}[started]; got != want {
			t.Errorf("started=%v: %d events submitted, want %d", started, got, want)
		}
	}
}

// TestEventsConcurrentClose: Close called from several goroutines at once, on started events.
func TestEventsConcurrentClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newTestEvents(&countingInbox{})
	e.Start()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); e.Close(time.Minute) }()
	}
	wg.Wait()
	var nilEvents *Events
	nilEvents.Close(time.Minute) // disabled events: no-op
}
