package ws

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"

	"github.com/wsgateway/gateway/internal/protocol"
	"github.com/wsgateway/gateway/transports"
)

var errClosed = errors.New("connection closed")

// WebSocket close codes sent with a disconnect.
const (
	closeGoingAway  = 1001
	closePolicy     = 1008
	closeTryLater   = 1013
	closeNormal     = 1000
	closeTokenError = 4001
)

// Conn is one client connection. Its methods are safe for concurrent use.
type Conn struct {
	hub   *Hub
	s     *melody.Session
	ID    string // session id
	User  string // user id ("" for anonymous)
	Value any    // the handler's data for this connection

	queued  atomic.Int64  // frames handed to melody and not yet written
	closing atomic.Bool   // a disconnect was sent or the socket is gone: send nothing more
	room    chan struct{} // signalled whenever a queued frame was written
	reason  atomic.Value  // string: the disconnect code the server sent, if it closed the connection

	mu   sync.Mutex
	subs map[string]*sub
}

// sub is the state of one channel subscription of a connection.
type sub struct {
	live bool
	held []heldFrame // what arrived while the subscription was replaying
}

type heldFrame struct {
	pos   transports.Position
	frame []byte
}

// slowGrace is how long Send waits for room in a full queue before it counts the connection
// as slow: a broker that delivers in batches (Kafka) can outrun a healthy writer for a moment.
const slowGrace = 100 * time.Millisecond

// Send queues one frame. A connection whose queue stays full for slowGrace is disconnected as a
// slow consumer (it can resume) rather than losing the frame silently. Send reports whether it
// was queued.
func (c *Conn) Send(frame []byte) bool {
	if c.closing.Load() || c.s == nil {
		return false
	}
	if c.queued.Add(1) > int64(c.hub.cfg.SendBuffer) {
		c.queued.Add(-1)
		if !c.waitRoom(int64(c.hub.cfg.SendBuffer), slowGrace) {
			c.slow()
			return false
		}
		c.queued.Add(1)
	}
	if err := c.s.Write(frame); err != nil {
		c.queued.Add(-1)
		return false
	}
	return true
}

// waitRoom waits until fewer than limit frames are queued, at most d; false if they still are.
func (c *Conn) waitRoom(limit int64, d time.Duration) bool {
	if c.queued.Load() < limit {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for c.queued.Load() >= limit {
		if c.closing.Load() {
			return false
		}
		select {
		case <-c.room:
		case <-t.C:
			return c.queued.Load() < limit
		}
	}
	return true
}

// SendWait is Send for bulk sending (a replay): it first waits, at most the write timeout, until
// the queue is below half full, so a long replay paces itself to the client instead of counting
// it as slow. A client that does not read within the write timeout is still disconnected.
func (c *Conn) SendWait(frame []byte) bool {
	c.waitRoom(int64(c.hub.cfg.SendBuffer/2), c.hub.cfg.WriteTimeout)
	return c.Send(frame)
}

func (c *Conn) slow() {
	if c.closing.Load() {
		return
	}
	c.hub.metrics.SlowDisconnects.Inc()
	c.Disconnect(protocol.DisconnectSlowConsumer, "send buffer full", true)
}

// Disconnect sends a disconnect frame and closes the connection; later calls do nothing.
func (c *Conn) Disconnect(code, reason string, reconnect bool) {
	if c.s == nil || !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.reason.Store(code)
	c.hub.metrics.Disconnects.WithLabelValues(code).Inc()
	frame := protocol.Encode(protocol.Disconnect{Type: "disconnect", Code: code, Reason: reason, Reconnect: reconnect})
	c.queued.Add(1)
	_ = c.s.Write(frame)
	closeCode := closeNormal
	switch code {
	case protocol.DisconnectShutdown:
		closeCode = closeGoingAway
	case protocol.DisconnectSlowConsumer:
		closeCode = closeTryLater
	case protocol.DisconnectPolicy:
		closeCode = closePolicy
	case protocol.DisconnectTokenExpired:
		closeCode = closeTokenError
	}
	_ = c.s.CloseWithMsg(melody.FormatCloseMessage(closeCode, code))
}

// Reason is the disconnect code the server closed the connection with, or "closed" when the
// client (or the network) ended it.
func (c *Conn) Reason() string {
	if r, ok := c.reason.Load().(string); ok {
		return r
	}
	return "closed"
}

// Closing reports whether the connection is closing or closed.
func (c *Conn) Closing() bool { return c.closing.Load() }

// Subscribed reports whether c is subscribed to channel (live or replaying).
func (c *Conn) Subscribed(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[channel]
	return ok
}

func (c *Conn) addSub(channel string) {
	c.mu.Lock()
	c.subs[channel] = &sub{}
	c.mu.Unlock()
}

func (c *Conn) removeSub(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[channel]; !ok {
		return false
	}
	delete(c.subs, channel)
	return true
}

func (c *Conn) channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.subs))
	for ch := range c.subs {
		out = append(out, ch)
	}
	return out
}

// deliver queues a channel frame, or holds it while the subscription replays.
func (c *Conn) deliver(channel string, pos transports.Position, frame []byte) bool {
	c.mu.Lock()
	s := c.subs[channel]
	if s == nil {
		c.mu.Unlock()
		return false
	}
	if !s.live {
		if len(s.held) >= c.hub.cfg.SendBuffer {
			c.mu.Unlock()
			c.slow()
			return false
		}
		s.held = append(s.held, heldFrame{pos: pos, frame: frame})
		c.mu.Unlock()
		return true
	}
	c.mu.Unlock()
	return c.Send(frame)
}

// Activate ends the replay of channel: frames held meanwhile are sent, except those at or before
// after (already replayed) when after has the same epoch, and the subscription goes live. The
// first frame, if any, is sent before them (the reply that ends the replay), under the same lock
// so that no live frame overtakes it.
func (c *Conn) Activate(channel string, after transports.Position, first []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first != nil {
		c.Send(first)
	}
	s := c.subs[channel]
	if s == nil {
		return
	}
	for _, h := range s.held {
		if h.pos.Epoch == after.Epoch && h.pos.Epoch != "" && !after.Less(h.pos) {
			continue // replayed already
		}
		c.Send(h.frame)
	}
	s.held = nil
	s.live = true
}
