package handlers

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// EventLanes is how many events a node submits at once: each lane submits its events one after
// the other, and an event's lane is that of its session (a channel's, for the presence events of
// a channel), so the events of one session (connected, subscribed, …, disconnected) and those of
// one presence channel (channel_occupied, member_joined, member_left, channel_vacated) keep their
// order, while a connect storm's events go to the broker sixteen at a time instead of one round
// trip after another.
const EventLanes = 16

// EventsMaxBytes bounds the memory of the events waiting, whatever events.queue allows: a Pusher
// client event carries up to its app's max_event_size of data.
const EventsMaxBytes = 64 << 20

// eventSize is about what ev holds in memory while it waits.
func eventSize(ev *protocol.Event) int64 {
	return int64(unsafe.Sizeof(*ev)) + int64(len(ev.Type)+len(ev.User)+len(ev.Session)+len(ev.Node)+
		len(ev.Channel)+len(ev.Reason)+len(ev.Name)+len(ev.Data))
}

// Events publishes connection lifecycle events through the router (so they pass the same
// middleware and retries as everything else) without making connections wait: Emit queues, one
// goroutine per lane (Start) submits. The queues hold at most cfg.Queue events, and
// EventsMaxBytes, in all, in memory taken as they fill and given back as they drain; past that
// an event is dropped and counted.
type Events struct {
	cfg       EventsConfig
	lanes     [EventLanes]lane
	seed      maphash.Seed
	queued    atomic.Int64 // events in the lanes' queues or being submitted
	bytes     atomic.Int64 // their eventSize
	maxBytes  int64        // EventsMaxBytes; smaller in tests
	mu        sync.Mutex
	shut      bool // the queues are closed: Emit drops
	closing   bool // Close began: Start starts nothing
	running   bool
	closeOnce sync.Once
	submitted sync.WaitGroup // the lanes' goroutines
	done      chan struct{}  // closed once every lane is submitted
	stopBeat  chan struct{}
	beatDone  chan struct{}
}

// lane is a queue of events submitted one after the other by its goroutine.
type lane struct {
	mu     sync.Mutex
	q      []protocol.Event // oldest first
	closed bool
	wake   chan struct{} // one token: q grew or closed
}

func (l *lane) push(ev protocol.Event) {
	l.mu.Lock()
	l.q = append(l.q, ev)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lane) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pop waits for the oldest event; false once the lane is closed and empty.
func (l *lane) pop() (protocol.Event, bool) {
	for {
		l.mu.Lock()
		if len(l.q) > 0 {
			ev := l.q[0]
			l.q[0] = protocol.Event{}
			if l.q = l.q[1:]; len(l.q) == 0 {
				l.q = nil // the array goes once drained
			}
			l.mu.Unlock()
			return ev, true
		}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return protocol.Event{}, false
		}
		<-l.wake
	}
}

// EventsConfig is what Events need.
type EventsConfig struct {
	NodeID         string
	Inbox          Submitter
	Queue          int           // most events waiting to be submitted, over all lanes; 0: events disabled
	Heartbeat      time.Duration // 0: no node_alive heartbeat
	PublishTimeout time.Duration // of each event's submit
	Metrics        *metrics.Metrics
	Log            *slog.Logger
}

// NewEvents makes the publisher; nil when cfg.Queue is 0 (disabled).
func NewEvents(cfg EventsConfig) *Events {
	if cfg.Queue == 0 {
		return nil
	}
	e := &Events{cfg: cfg, seed: maphash.MakeSeed(), maxBytes: EventsMaxBytes, done: make(chan struct{}),
		stopBeat: make(chan struct{}), beatDone: make(chan struct{})}
	for i := range e.lanes {
		e.lanes[i].wake = make(chan struct{}, 1)
	}
	return e
}

// lane is the lane of ev: its channel's for a presence channel's events, its session's for the
// others, the first for the node's own.
func (e *Events) lane(ev *protocol.Event) *lane {
	key := ev.Session
	switch ev.Type {
	case protocol.EventChannelOccupied, protocol.EventChannelVacated, protocol.EventMemberJoined, protocol.EventMemberLeft:
		key = ev.Channel
	}
	if key == "" {
		return &e.lanes[0]
	}
	return &e.lanes[maphash.String(e.seed, key)%EventLanes]
}

// Emit queues an event, from this node unless ev.Node names another (a node_lost disconnect
// names the session's node, which died). Safe on a nil *Events (disabled) and after Close.
func (e *Events) Emit(ev protocol.Event) {
	if e == nil {
		return
	}
	if ev.Node == "" {
		ev.Node = e.cfg.NodeID
	}
	ev.At = time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.shut {
		return
	}
	size := eventSize(&ev)
	n, bytes := e.queued.Add(1), e.bytes.Add(size)
	if n > int64(e.cfg.Queue) || bytes > e.maxBytes {
		e.queued.Add(-1)
		e.bytes.Add(-size)
		e.cfg.Metrics.EventsDropped.Inc()
		return
	}
	e.cfg.Metrics.EventsQueued.Inc()
	e.lane(&ev).push(ev)
}

// Start starts the goroutines that submit queued events until Close. Safe on a nil *Events.
func (e *Events) Start() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.shut && !e.closing && !e.running {
		e.running = true
		e.submitted.Add(EventLanes)
		for i := range e.lanes {
			go e.run(&e.lanes[i])
		}
		go func() { e.submitted.Wait(); close(e.done) }()
		go e.beat()
	}
}

// beat emits the heartbeat until Close.
func (e *Events) beat() {
	defer close(e.beatDone)
	if e.cfg.Heartbeat <= 0 {
		<-e.stopBeat
		return
	}
	t := time.NewTicker(e.cfg.Heartbeat)
	defer t.Stop()
	e.Emit(protocol.Event{Type: protocol.EventNodeAlive})
	for {
		select {
		case <-t.C:
			e.Emit(protocol.Event{Type: protocol.EventNodeAlive})
		case <-e.stopBeat:
			return
		}
	}
}

// run submits a lane's events, one after the other, until its queue is closed.
func (e *Events) run(l *lane) {
	defer e.submitted.Done()
	for {
		ev, ok := l.pop()
		if !ok {
			return
		}
		e.submit(ev, e.cfg.PublishTimeout)
		e.queued.Add(-1)
		e.bytes.Add(-eventSize(&ev))
		e.cfg.Metrics.EventsQueued.Dec()
	}
}

func (e *Events) submit(ev protocol.Event, timeout time.Duration) {
	payload, _ := json.Marshal(ev)
	msg := message.NewMessage(watermill.NewUUID(), payload)
	md := msg.Metadata
	md.Set(protocol.MetaKind, protocol.KindEvent)
	md.Set(protocol.MetaTarget, protocol.TargetEvents)
	md.Set(protocol.MetaUser, ev.User)
	md.Set(protocol.MetaSession, ev.Session)
	md.Set(protocol.MetaNode, ev.Node)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	if ev.Channel != "" {
		md.Set(protocol.MetaChannel, ev.Channel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := e.cfg.Inbox.Submit(ctx, msg); err != nil {
		e.cfg.Metrics.EventsDropped.Inc()
		e.cfg.Log.Debug("lifecycle event not published", "type", ev.Type, "session_id", ev.Session, "error", err)
	}
}

// Close stops accepting events and waits, at most timeout, for the queues to be submitted, then
// submits node_stopped, the node's last event. Safe on a nil *Events, to call twice and
// concurrently: a later call returns once the first is done.
func (e *Events) Close(timeout time.Duration) {
	if e == nil {
		return
	}
	e.closeOnce.Do(func() { e.close(timeout) })
}

func (e *Events) close(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	e.mu.Lock()
	e.closing = true
	running := e.running
	e.mu.Unlock()
	if running {
		close(e.stopBeat)
		<-e.beatDone
	}
	e.mu.Lock()
	if !e.shut {
		e.shut = true
		for i := range e.lanes {
			e.lanes[i].close()
		}
	}
	e.mu.Unlock()
	if !running {
		return
	}
	select {
	case <-e.done:
	case <-time.After(time.Until(deadline)):
		return
	}
	if left := time.Until(deadline); left > 0 {
		e.submit(protocol.Event{Type: protocol.EventNodeStopped, Node: e.cfg.NodeID, At: time.Now().UTC()},
			min(left, e.cfg.PublishTimeout))
	}
}
