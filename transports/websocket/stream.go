package websocket

import (
	"context"
	"net/http"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// Stream carries the frames of a connection that is not a WebSocket: a one-way HTTP response
// the hub writes frames to (Server-Sent Events, NDJSON: package transports/stream). The hub
// calls its methods from one goroutine, never concurrently; a method that returns an error ends
// the connection, except Abort, which may be called at any time.
type Stream interface {
	// Write puts one frame (a JSON frame of the connection's format, as a WebSocket would get
	// it) into the response's buffer.
	Write(frame []byte) error
	// Heartbeat puts a keep-alive into the response's buffer (an SSE comment, an empty line).
	Heartbeat() error
	// Flush sends what is buffered to the client, within the write timeout.
	Flush() error
	// Abort makes a write or Flush under way, and every later one, fail at once (Hub.Close).
	Abort()
}

// streamLink is what a stream connection has that a WebSocket one has not. Its queue is the
// Conn's (pending, queued, under qmu): Send and Deliver treat both kinds alike, with the same
// slow-consumer rule; Serve's goroutine writes it out.
type streamLink struct {
	s      Stream
	wake   chan struct{}      // a frame was queued, or the connection ends
	finish bool               // under Conn.qmu: a disconnect was queued; the stream ends after it
	kill   context.CancelFunc // ends Serve's loop (Hub.closeAll)
}

// abort ends the connection at once: Serve's loop stops, and a write under way fails.
func (l *streamLink) abort() {
	l.kill()
	l.s.Abort()
}

// signal wakes Serve's loop.
func (l *streamLink) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// CheckOrigin reports whether the request's Origin is allowed (Config.CheckOrigin), for a
// transport that is not upgraded to a WebSocket and answers 403 itself.
func (h *Hub) CheckOrigin(r *http.Request) bool { return h.cfg.CheckOrigin(r) }

// Serve serves a connection carried by s on the calling goroutine (the request's) until it ends:
// the client went (ctx ended), a write failed, or the hub disconnected it (the last frame is
// written, then Serve returns). frames are handled as if the client had sent them, in order,
// once the connection is open, while Serve writes (a stream's subscriptions). Every heartbeat
// (0: never) the stream gets a Heartbeat. It returns ErrHubClosed, before
// anything was written to s, once the hub is closed; otherwise nil.
func (h *Hub) Serve(ctx context.Context, s Stream, id Identity, frames [][]byte, heartbeat time.Duration) error {
	h.drainMu.Lock()
	if h.closed {
		h.drainMu.Unlock()
		return ErrHubClosed
	}
	h.served.Add(1)
	h.drainMu.Unlock()
	defer h.served.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := newConn(h, id)
	c.link = &streamLink{s: s, wake: make(chan struct{}, 1), kill: cancel}
	h.opened(c)

	handled := make(chan struct{})
	go func() { // the connection's "read goroutine": its frames, one at a time, then nothing
		defer close(handled)
		for _, f := range frames {
			if c.Closing() {
				return
			}
			h.metrics.FramesIn.Inc()
			c.handler.Frame(c, f)
		}
	}()

	h.writeStream(ctx, c, heartbeat)
	c.closing.Store(true)
	select { // a Send waiting for room (a replay's) sees the connection is closing
	case c.room <- struct{}{}:
	default:
	}
	<-handled
	h.ended(c)
	return nil
}

// writeStream writes c's queue to its stream until the connection ends.
func (h *Hub) writeStream(ctx context.Context, c *Conn, heartbeat time.Duration) {
	l := c.link
	var beat <-chan time.Time
	if heartbeat > 0 {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		beat = t.C
	}
	var batch []qframe
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat:
			if l.s.Heartbeat() != nil || l.s.Flush() != nil {
				return
			}
			continue
		case <-l.wake:
		}
		for {
			c.qmu.Lock()
			batch = batch[:0]
			for c.pending.len() > 0 {
				batch = append(batch, c.pending.pop())
			}
			finish := l.finish && len(batch) == 0
			c.qmu.Unlock()
			if finish {
				return
			}
			if len(batch) == 0 {
				break
			}
			for i, f := range batch {
				batch[i] = qframe{}
				if l.s.Write(f.b) != nil {
					return
				}
			}
			if l.s.Flush() != nil {
				return
			}
			c.queued.Add(-int64(len(batch)))
			h.metrics.FramesOut.Add(float64(len(batch)))
			if c.waiters.Load() > 0 {
				select {
				case c.room <- struct{}{}:
				default:
				}
			}
		}
	}
}

// opened registers a connection that is open and has the handler greet it.
func (h *Hub) opened(c *Conn) {
	h.sessMu.Lock()
	h.sessions[c.ID] = c
	h.sessMu.Unlock()
	h.metrics.Connections.Inc()
	c.handler.Open(c) // the welcome frame comes first, even on a node that started draining
	if h.Draining() {
		c.Disconnect(protocol.DisconnectShutdown)
	}
}

// ended forgets a connection that ended: it leaves its channels and the handler is told.
func (h *Hub) ended(c *Conn) {
	c.closing.Store(true)
	c.dropQueue()
	for _, ch := range c.channels() {
		h.Leave(c, ch)
	}
	h.sessMu.Lock()
	delete(h.sessions, c.ID)
	h.sessMu.Unlock()
	h.metrics.Connections.Dec()
	c.handler.Close(c)
}
