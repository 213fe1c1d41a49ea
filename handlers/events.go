package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// Events publishes connection lifecycle events through the router (so they pass the same
// middleware and retries as everything else) without making connections wait: Emit queues,
// one goroutine (Start) submits. When the queue is full an event is dropped and counted.
type Events struct {
	cfg       EventsConfig
	q         chan protocol.Event
	mu        sync.Mutex
	shut      bool // the queue is closed: Emit drops
	closing   bool // Close began: Start starts nothing
	running   bool
	closeOnce sync.Once
	done      chan struct{}
	stopBeat  chan struct{}
	beatDone  chan struct{}
}

// EventsConfig is what Events need.
type EventsConfig struct {
	NodeID         string
	Inbox          Submitter
	Queue          int           // events held for publishing; 0: events disabled
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
	return &Events{cfg: cfg, q: make(chan protocol.Event, cfg.Queue), done: make(chan struct{}),
		stopBeat: make(chan struct{}), beatDone: make(chan struct{})}
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
	select {
	case e.q <- ev:
	default:
		e.cfg.Metrics.EventsDropped.Inc()
	}
}

// Start starts the goroutine that submits queued events until Close. Safe on a nil *Events.
func (e *Events) Start() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.shut && !e.closing && !e.running {
		e.running = true
		go e.run()
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

func (e *Events) run() {
	defer close(e.done)
	for ev := range e.q {
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
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.PublishTimeout)
		if err := e.cfg.Inbox.Submit(ctx, msg); err != nil {
			e.cfg.Metrics.EventsDropped.Inc()
			e.cfg.Log.Debug("lifecycle event not published", "type", ev.Type, "session_id", ev.Session, "error", err)
		}
		cancel()
	}
}

// Close stops accepting events and waits, at most timeout, for the queue to be submitted. Safe
// on a nil *Events, to call twice and concurrently: a later call returns once the first is done.
func (e *Events) Close(timeout time.Duration) {
	if e == nil {
		return
	}
	e.closeOnce.Do(func() { e.close(timeout) })
}

func (e *Events) close(timeout time.Duration) {
	e.mu.Lock()
	e.closing = true
	running := e.running
	e.mu.Unlock()
	if running {
		close(e.stopBeat)
		<-e.beatDone
		e.Emit(protocol.Event{Type: protocol.EventNodeStopped})
	}
	e.mu.Lock()
	if !e.shut {
		e.shut = true
		close(e.q)
	}
	e.mu.Unlock()
	if !running {
		return
	}
	select {
	case <-e.done:
	case <-time.After(timeout):
	}
}
