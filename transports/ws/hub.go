// Package ws is the WebSocket side of a node, on melody: it accepts connections, keeps the index
// of channel -> local connections (so a message is never matched against every session), asks
// the broker for a channel only while it has a local subscriber, fans encoded frames out to
// connections, disconnects slow consumers instead of dropping their messages, and drains.
//
// What frames mean is not its business: a Handler (package handlers) reads and answers them.
package ws

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Handler is the protocol on top of connections. Open is called once a connection is upgraded,
// Frame for each text frame, in order, on the connection's read goroutine, and Close once after
// it ended. Implementations must be safe for concurrent use across connections.
type Handler interface {
	Open(c *Conn)
	Frame(c *Conn, data []byte)
	Close(c *Conn)
}

// Interest opens the broker subscription of a channel: the hub calls Open when a channel gets
// its first local subscriber and the returned stop when it loses its last one. Open must return
// only once the subscription is established. If the subscription ends by itself (the broker or
// the backend gave it up), the Interest calls lost, and the hub disconnects the channel's local
// subscribers so that they resume from their positions rather than silently miss messages.
type Interest interface {
	Open(channel string, lost func()) (stop func(), err error)
}

// Config sets the connections. See configs.WebSocketConfig for the meaning of each field.
type Config struct {
	MaxFrameSize int64
	SendBuffer   int
	WriteTimeout time.Duration
	PingInterval time.Duration
	// CheckOrigin decides whether a browser's Origin is allowed; nil means same host only.
	CheckOrigin func(r *http.Request) bool
}

// reserve is room kept in melody's buffer above SendBuffer, for the disconnect and close frames
// and for deliveries racing with the decision that a connection is slow.
const reserve = 64

const shardCount = 64

// Hub holds the node's connections. Safe for concurrent use.
type Hub struct {
	cfg      Config
	m        *melody.Melody
	handler  Handler
	interest Interest
	log      *slog.Logger
	metrics  *metrics.Metrics
	seed     maphash.Seed

	shards [shardCount]shard

	sessMu   sync.RWMutex
	sessions map[string]*Conn

	drainMu  sync.Mutex
	draining bool
}

type shard struct {
	mu       sync.RWMutex
	channels map[string]*entry
}

// entry is one channel with local subscribers.
type entry struct {
	conns map[*Conn]struct{}
	ready chan struct{} // closed once the broker subscription is open (or failed)
	err   error
	stop  func()
}

func (e *entry) has(c *Conn) bool {
	_, ok := e.conns[c]
	return ok
}

// NewHub makes a hub. It starts nothing: connections arrive through Accept, once SetHandler
// has been called.
func NewHub(cfg Config, interest Interest, m *metrics.Metrics, log *slog.Logger) *Hub {
	h := &Hub{cfg: cfg, interest: interest, log: log, metrics: m, seed: maphash.MakeSeed(), sessions: map[string]*Conn{}}
	for i := range h.shards {
		h.shards[i].channels = map[string]*entry{}
	}
	mel := melody.New()
	mel.Config.MaxMessageSize = cfg.MaxFrameSize
	mel.Config.MessageBufferSize = cfg.SendBuffer + reserve
	mel.Config.WriteWait = cfg.WriteTimeout
	mel.Config.PingPeriod = cfg.PingInterval
	mel.Config.PongWait = cfg.PingInterval*2 + cfg.WriteTimeout
	mel.Upgrader = &websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     cfg.CheckOrigin,
	}
	mel.HandleConnect(h.onConnect)
	mel.HandleDisconnect(h.onDisconnect)
	mel.HandleMessage(func(s *melody.Session, b []byte) {
		if c := connOf(s); c != nil {
			h.metrics.FramesIn.Inc()
			h.handler.Frame(c, b)
		}
	})
	mel.HandleMessageBinary(func(s *melody.Session, _ []byte) {
		if c := connOf(s); c != nil {
			h.metrics.FramesIn.Inc()
			c.Send(protocol.ErrorReply("", protocol.Errorf(protocol.CodeBadRequest, "frames must be JSON text frames")))
		}
	})
	mel.HandleSentMessage(func(s *melody.Session, _ []byte) {
		if c := connOf(s); c != nil {
			c.queued.Add(-1)
			select {
			case c.room <- struct{}{}:
			default:
			}
			h.metrics.FramesOut.Inc()
		}
	})
	mel.HandleError(h.onError)
	h.m = mel
	return h
}

// SetHandler sets the protocol handler; call it before the first Accept.
func (h *Hub) SetHandler(handler Handler) { h.handler = handler }

// Identity is who a connection is, decided before the upgrade.
type Identity struct {
	Session string
	User    string
	Value   any // the handler's per-connection data (claims)
}

// Accept upgrades the request and serves the connection until it ends.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, id Identity) error {
	c := &Conn{hub: h, ID: id.Session, User: id.User, Value: id.Value, subs: map[string]*sub{}, room: make(chan struct{}, 1)}
	return h.m.HandleRequestWithKeys(w, r, map[string]any{connKey: c})
}

// Draining reports whether Drain has begun.
func (h *Hub) Draining() bool {
	h.drainMu.Lock()
	defer h.drainMu.Unlock()
	return h.draining
}

const connKey = "conn"

func connOf(s *melody.Session) *Conn {
	v, ok := s.Get(connKey)
	if !ok {
		return nil
	}
	return v.(*Conn)
}

func (h *Hub) onConnect(s *melody.Session) {
	c := connOf(s)
	c.s = s
	h.sessMu.Lock()
	h.sessions[c.ID] = c
	h.sessMu.Unlock()
	h.metrics.Connections.Inc()
	h.handler.Open(c) // the welcome frame comes first, even on a node that started draining
	if h.Draining() {
		c.Disconnect(protocol.DisconnectShutdown, "node is shutting down", true)
	}
}

func (h *Hub) onDisconnect(s *melody.Session) {
	c := connOf(s)
	c.closing.Store(true)
	for _, ch := range c.channels() {
		h.Leave(c, ch)
	}
	h.sessMu.Lock()
	delete(h.sessions, c.ID)
	h.sessMu.Unlock()
	h.metrics.Connections.Dec()
	h.handler.Close(c)
}

func (h *Hub) onError(s *melody.Session, err error) {
	c := connOf(s)
	if c == nil {
		return
	}
	if errors.Is(err, melody.ErrMessageBufferFull) {
		if c.closing.Load() {
			// Even the disconnect frame found no room: close the socket itself.
			_ = s.WebsocketConnection().Close()
			return
		}
		c.slow()
		return
	}
	if !errors.Is(err, melody.ErrWriteClosed) && !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
		h.log.Debug("connection error", "session_id", c.ID, "error", err)
	}
}

func (h *Hub) shard(channel string) *shard {
	return &h.shards[maphash.String(h.seed, channel)%shardCount]
}

// Join subscribes c to channel. Messages for the channel are held for c until Activate, so that
// the caller can first replay history. When the channel has no other local subscriber, Join opens
// the broker subscription and returns once it is established; concurrent joiners wait for it.
func (h *Hub) Join(ctx context.Context, c *Conn, channel string) error {
	sh := h.shard(channel)
	sh.mu.Lock()
	if c.closing.Load() {
		sh.mu.Unlock()
		return errClosed
	}
	e := sh.channels[channel]
	first := e == nil
	if first {
		e = &entry{conns: map[*Conn]struct{}{}, ready: make(chan struct{})}
		sh.channels[channel] = e
	}
	e.conns[c] = struct{}{}
	c.addSub(channel)
	sh.mu.Unlock()
	h.metrics.Subscriptions.Inc()

	if first {
		stop, err := h.interest.Open(channel, func() { h.lost(channel, e) })
		sh.mu.Lock()
		e.stop, e.err = stop, err
		if err != nil && sh.channels[channel] == e {
			delete(sh.channels, channel)
		}
		orphan := err == nil && sh.channels[channel] != e // every subscriber left meanwhile
		close(e.ready)
		sh.mu.Unlock()
		if orphan {
			stop()
		}
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		h.Leave(c, channel)
		return ctx.Err()
	}
	if e.err != nil {
		h.metrics.BrokerErrors.Inc()
		h.Leave(c, channel)
		return e.err
	}
	return nil
}

// Leave unsubscribes c from channel, closing the broker subscription after the last local
// subscriber. It reports whether c was subscribed.
func (h *Hub) Leave(c *Conn, channel string) bool {
	sh := h.shard(channel)
	sh.mu.Lock()
	if !c.removeSub(channel) {
		sh.mu.Unlock()
		return false
	}
	h.metrics.Subscriptions.Dec()
	e := sh.channels[channel]
	var stop func()
	if e != nil && e.has(c) {
		delete(e.conns, c)
		if len(e.conns) == 0 {
			delete(sh.channels, channel)
			select {
			case <-e.ready:
				stop = e.stop // nil when the open failed
			default: // the first joiner is still opening it and will stop it (orphan)
			}
		}
	}
	sh.mu.Unlock()
	if stop != nil {
		stop()
	}
	return true
}

// lost handles a broker subscription that ended by itself: its subscribers are disconnected
// (they resume from their positions) and the next subscriber opens a new one.
func (h *Hub) lost(channel string, e *entry) {
	sh := h.shard(channel)
	sh.mu.Lock()
	if sh.channels[channel] == e {
		delete(sh.channels, channel)
	}
	conns := make([]*Conn, 0, len(e.conns))
	for c := range e.conns {
		conns = append(conns, c)
	}
	sh.mu.Unlock()
	h.log.Warn("broker subscription lost; its subscribers will resume", "channel", channel, "sessions", len(conns))
	for _, c := range conns {
		c.Disconnect(protocol.DisconnectResubscribe, "the node lost its broker subscription; resume", true)
	}
}

// Deliver queues frame, the encoded message at pos on channel, to every local subscriber. It
// returns how many connections it was queued to (or held for, during a replay).
func (h *Hub) Deliver(channel string, pos transports.Position, frame []byte) int {
	sh := h.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.channels[channel]
	if e == nil {
		return 0
	}
	n := 0
	for c := range e.conns {
		if c.deliver(channel, pos, frame) {
			n++
		}
	}
	return n
}

// Session returns the connection with session id, if it is on this node.
func (h *Hub) Session(id string) (*Conn, bool) {
	h.sessMu.RLock()
	defer h.sessMu.RUnlock()
	c, ok := h.sessions[id]
	return c, ok
}

// Broadcast queues frame to every connection of the node and returns how many.
func (h *Hub) Broadcast(frame []byte) int {
	n := 0
	for _, c := range h.conns() {
		if c.Send(frame) {
			n++
		}
	}
	return n
}

// Len is the number of open connections.
func (h *Hub) Len() int {
	h.sessMu.RLock()
	defer h.sessMu.RUnlock()
	return len(h.sessions)
}

func (h *Hub) conns() []*Conn {
	h.sessMu.RLock()
	defer h.sessMu.RUnlock()
	out := make([]*Conn, 0, len(h.sessions))
	for _, c := range h.sessions {
		out = append(out, c)
	}
	return out
}

// Drain refuses new connections and disconnects every connection with "shutdown", spread evenly
// over period so that clients do not all reconnect at once, then waits until they are gone or
// ctx ends.
func (h *Hub) Drain(ctx context.Context, period time.Duration) {
	h.drainMu.Lock()
	h.draining = true
	h.drainMu.Unlock()

	conns := h.conns()
	if len(conns) > 0 {
		const tick = 10 * time.Millisecond
		steps := max(int(period/tick), 1)
		perStep := (len(conns) + steps - 1) / steps
		t := time.NewTicker(tick)
	spread:
		for i := 0; i < len(conns); i += perStep {
			for _, c := range conns[i:min(i+perStep, len(conns))] {
				c.Disconnect(protocol.DisconnectShutdown, "node is shutting down", true)
			}
			if i+perStep >= len(conns) {
				break
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				break spread
			}
		}
		t.Stop()
	}
	// Whatever connected meanwhile is told too; then wait for the sockets to close.
	wait := time.NewTicker(10 * time.Millisecond)
	defer wait.Stop()
	for h.Len() > 0 {
		for _, c := range h.conns() {
			c.Disconnect(protocol.DisconnectShutdown, "node is shutting down", true)
		}
		select {
		case <-wait.C:
		case <-ctx.Done():
			h.closeAll()
			return
		}
	}
}

// closeAll closes every socket at once (when draining ran out of time).
func (h *Hub) closeAll() {
	for _, c := range h.conns() {
		if c.s != nil {
			_ = c.s.WebsocketConnection().Close()
		}
	}
}

// Close closes every remaining connection at once. Safe to call twice.
func (h *Hub) Close() {
	h.drainMu.Lock()
	h.draining = true
	h.drainMu.Unlock()
	h.closeAll()
}
