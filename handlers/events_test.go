package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/poll"
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

// eventsInbox records the events submitted, in the order their Submit returned, after
// holding each for hold (if set), and counts the submits in flight at once.
type eventsInbox struct {
	mu       sync.Mutex
	got      []protocol.Event
	hold     func(protocol.Event)
	inFlight atomic.Int64
	most     atomic.Int64
}

func (r *eventsInbox) Submit(_ context.Context, msg *message.Message) error {
	var ev protocol.Event
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return err
	}
	n := r.inFlight.Add(1)
	for m := r.most.Load(); n > m && !r.most.CompareAndSwap(m, n); m = r.most.Load() {
	}
	if r.hold != nil {
		r.hold(ev)
	}
	r.inFlight.Add(-1)
	r.mu.Lock()
	r.got = append(r.got, ev)
	r.mu.Unlock()
	return nil
}

func (r *eventsInbox) events() []protocol.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// heldInbox is an eventsInbox whose submits wait for release, but node_stopped's.
func heldInbox(release <-chan struct{}) *eventsInbox {
	return &eventsInbox{hold: func(ev protocol.Event) {
		if ev.Type != protocol.EventNodeStopped {
			<-release
		}
	}}
}

// sessionsInLanes returns two session ids whose events go to different lanes.
func sessionsInLanes(t *testing.T, e *Events) (string, string) {
	t.Helper()
	a := protocol.Event{Session: "a"}
	for i := range 1000 {
		b := protocol.Event{Session: "b" + strconv.Itoa(i)}
		if e.lane(&a) != e.lane(&b) {
			return a.Session, b.Session
		}
	}
	t.Fatal("no two lanes found")
	return "", ""
}

// TestEventsSubmitLanesAtOnce: while one session's event waits for the broker, another
// session's event is submitted (a connect storm's events are not one round trip after another).
// One lane at a time, the first Submit would wait for the second forever.
func TestEventsSubmitLanesAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	inbox := &eventsInbox{}
	e := NewEvents(EventsConfig{NodeID: "n1", Inbox: inbox, Queue: 16, PublishTimeout: time.Minute,
		Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
	a, b := sessionsInLanes(t, e)
	arrived := map[string]chan struct{}{a: make(chan struct{}), b: make(chan struct{})}
	inbox.hold = func(ev protocol.Event) { // each connected event waits for the other's submit to begin
		if ev.Type != protocol.EventConnected {
			return
		}
		close(arrived[ev.Session])
		other := map[string]string{a: b, b: a}[ev.Session]
		select {
		case <-arrived[other]:
		case <-time.After(time.Minute):
			t.Errorf("the event of session %s was not submitted while that of %s waited", other, ev.Session)
		}
	}
	e.Start()
	e.Emit(protocol.Event{Type: protocol.EventConnected, Session: a})
	e.Emit(protocol.Event{Type: protocol.EventConnected, Session: b})
	e.Close(2 * time.Minute)
	if got := inbox.most.Load(); got < 2 {
		t.Errorf("at most %d submits in flight, want 2", got)
	}
	if got := inbox.events(); len(got) != 3 || got[2].Type != protocol.EventNodeStopped {
		t.Errorf("submitted %+v, want both connected events then node_stopped", got)
	}
}

// TestEventsKeepOrder: with submits taking random times in sixteen lanes, the events of each
// session arrive in the order emitted, as do the presence events of each channel, and
// node_stopped comes last.
func TestEventsKeepOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	inbox := &eventsInbox{hold: func(protocol.Event) { time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond) }}
	e := NewEvents(EventsConfig{NodeID: "n1", Inbox: inbox, Queue: 10000, PublishTimeout: time.Minute,
		Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
	e.Start()
	const sessions, channels = 40, 10
	for i := range 20 {
		for s := range sessions {
			// Reason carries the step, per session and per channel.
			e.Emit(protocol.Event{Type: protocol.EventSubscribed, Session: "s" + strconv.Itoa(s), Channel: "c", Reason: strconv.Itoa(i)})
		}
		for c := range channels {
			e.Emit(protocol.Event{Type: protocol.EventMemberJoined, Session: "m" + strconv.Itoa(i), Channel: "p" + strconv.Itoa(c), Reason: strconv.Itoa(i)})
		}
	}
	e.Close(time.Minute)
	got := inbox.events()
	if want := 20*(sessions+channels) + 1; len(got) != want {
		t.Fatalf("%d events submitted, want %d", len(got), want)
	}
	if got[len(got)-1].Type != protocol.EventNodeStopped {
		t.Errorf("last event %+v, want node_stopped", got[len(got)-1])
	}
	next := map[string]int{}
	for _, ev := range got[:len(got)-1] {
		key := "session " + ev.Session
		if ev.Type == protocol.EventMemberJoined {
			key = "channel " + ev.Channel
		}
		if step, _ := strconv.Atoi(ev.Reason); step != next[key] {
			t.Fatalf("%s: step %d submitted when %d was next", key, step, next[key])
		}
		next[key]++
	}
	if inbox.most.Load() < 2 {
		t.Errorf("never more than one submit in flight")
	}
}

// TestEventsQueueLimit: Queue bounds the events waiting and in flight over all lanes; the
// ones past it are dropped and counted; the rest are submitted once the broker answers, and the
// lanes give their memory back once drained.
func TestEventsQueueLimit(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	release := make(chan struct{})
	inbox := heldInbox(release)
	m := metrics.New()
	e := NewEvents(EventsConfig{NodeID: "n1", Inbox: inbox, Queue: 100, PublishTimeout: time.Minute,
		Metrics: m, Log: slog.New(slog.DiscardHandler)})
	e.Start()
	for i := range 130 {
		e.Emit(protocol.Event{Type: protocol.EventConnected, Session: "s" + strconv.Itoa(i)})
	}
	if got := value(m.EventsDropped); got != 30 {
		t.Errorf("%v events dropped, want 30", got)
	}
	if got := gauge(m.EventsQueued); got != 100 {
		t.Errorf("gateway_events_queued %v, want 100", got)
	}
	close(release)
	poll.Until(t, time.Minute, func() error {
		if n := len(inbox.events()); n != 100 {
			return fmt.Errorf("%d events submitted, want 100", n)
		}
		return nil
	})
	for i := range e.lanes {
		l := &e.lanes[i]
		l.mu.Lock()
		if l.q != nil {
			t.Errorf("lane %d holds an array of %d after draining", i, cap(l.q))
		}
		l.mu.Unlock()
	}
	poll.Until(t, time.Minute, func() error {
		if got := gauge(m.EventsQueued); got != 0 {
			return fmt.Errorf("gateway_events_queued %v once every event was submitted", got)
		}
		return nil
	})
	e.Close(time.Minute)
	if got := len(inbox.events()); got != 101 {
		t.Errorf("%d events submitted, want 100 and node_stopped", got)
	}
}

// gauge is a gauge's value.
func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestEventsQueueBytes: however many events.queue allows, the events waiting hold at most
// EventsMaxBytes (made 512 KiB here): Pusher client events of 10 KiB each are dropped past it,
// and counted.
func TestEventsQueueBytes(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	release := make(chan struct{})
	inbox := heldInbox(release)
	m := metrics.New()
	e := NewEvents(EventsConfig{NodeID: "n1", Inbox: inbox, Queue: 1 << 20, PublishTimeout: time.Minute,
		Metrics: m, Log: slog.New(slog.DiscardHandler)})
	e.maxBytes = 512 << 10
	e.Start()
	data := json.RawMessage(`"` + strings.Repeat("x", 10<<10) + `"`)
	per := eventSize(&protocol.Event{Type: protocol.EventPusherClientEvent, Session: "s0000", Node: "n1", Channel: "private-c", Name: "client-x", Data: data})
	fit := e.maxBytes / per
	for i := range fit + 50 {
		e.Emit(protocol.Event{Type: protocol.EventPusherClientEvent, Session: fmt.Sprintf("s%04d", i%10000), Channel: "private-c", Name: "client-x", Data: data})
	}
	if got := value(m.EventsDropped); got != 50 {
		t.Errorf("%v events dropped, want 50 (%d fit in %d bytes)", got, fit, e.maxBytes)
	}
	close(release)
	e.Close(time.Minute)
	if got, want := len(inbox.events()), int(fit)+1; got != want {
		t.Errorf("%d events submitted, want %d", got, want)
	}
	if e.bytes.Load() != 0 || e.queued.Load() != 0 {
		t.Errorf("%d bytes and %d events left counted after every event was submitted", e.bytes.Load(), e.queued.Load())
	}
}
