package websocket

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olahol/melody"

	"github.com/wsgateway/gateway/protocol"
)

var errClosed = errors.New("connection closed")

// closeInvalidData fails a connection that sent a text frame that is not UTF-8 (RFC 6455 8.1);
// no last frame comes before it.
const closeInvalidData = 1007

// Goodbye is how the server ends a connection (protocol.Disconnect): a last frame, sent behind
// what is queued, then a WebSocket close with a code and a reason. The reason is also what
// Conn.Reason reports and the label of the disconnect metric.
type Goodbye interface {
	Frame() []byte // nil: none
	CloseCode() int
	CloseReason() string
}

// Translator is implemented by a Handler whose connections speak another protocol: Disconnect
// hands it every Goodbye (protocol.Disconnect values: shutdown, slow consumer...) for a
// connection it reads, and sends the one it returns instead.
type Translator interface {
	Goodbye(c *Conn, g Goodbye) Goodbye
}

// logSlowConsumer is the ratelog kind of slow-consumer disconnects.
const logSlowConsumer = "slow_consumer"

// reasonInvalidUTF8 is the close reason with closeInvalidData, and the connection's Reason.
const reasonInvalidUTF8 = "invalid_utf8"

// Conn is one client connection. Its methods are safe for concurrent use.
type Conn struct {
	hub   *Hub
	s     *melody.Session // the WebSocket; nil for a stream connection, and until it is open
	link  *streamLink     // a stream connection's (Hub.Serve); nil for a WebSocket
	fc    *flushConn
	ID    string // session id
	User  string // user id ("" for anonymous)
	Value any    // the handler's data for this connection

	handler Handler // reads its frames: Identity.Handler, or the hub's
	format  Format  // of the channel messages it receives (Hub.Deliver)
	deflate bool    // it negotiated permessage-deflate with a hub that compresses (set before it opens)

	queued  atomic.Int64  // frames queued and not yet handed to the socket: the lead and pending
	waiters atomic.Int32  // Sends waiting for room
	closing atomic.Bool   // a disconnect was sent or the socket is gone: send nothing more
	room    chan struct{} // signalled when a frame was written while a Send waits
	reason  atomic.Value  // string: the disconnect code the server sent, if it closed the connection
	opened  chan error    // Accept waits on it: nil once open, or the upgrade's error

	// The send queue. The first frame of a burst, the lead, goes through melody's queue; the
	// frames queued behind it wait in pending, and melody's write goroutine writes them itself
	// once the lead is written (sent). pending holds memory only while the connection is behind.
	qmu       sync.Mutex
	lead      bool   // a frame is in melody's queue or being written
	pending   ring   // frames behind the lead (or, held by the latency budget, waiting for it), in order
	closeMsg  []byte // close frame to hand melody once pending is written (a disconnect is in it)
	lastLead  int64  // with a latency budget: the budget clock's tick when the last lead was handed over
	scheduled bool   // with a latency budget: the clock will hand over the first pending frame

	mu   sync.Mutex
	subs map[string]*sub
}

func newConn(h *Hub, id Identity) *Conn {
	c := &Conn{hub: h, ID: id.Session, User: id.User, Value: id.Value, subs: map[string]*sub{}, room: make(chan struct{}, 1),
		handler: id.Handler, format: id.Format}
	if c.handler == nil {
		c.handler = h.handler
	}
	c.fc = &flushConn{conn: c, timeout: h.cfg.WriteTimeout}
	c.lastLead = math.MinInt64 / 2 // long ago: the first frame goes out at once
	return c
}

// sub is the state of one channel subscription of a connection.
type sub struct {
	live atomic.Bool // set (under Conn.mu) once the replay ended and held frames were sent
	held []heldFrame // what arrived while the subscription was replaying, under Conn.mu
	// after is the position the replay ended at (set under Conn.mu before live; once live,
	// read and cleared by deliver, which the hub calls under the channel's shard lock): a frame
	// at or before it that reaches the node late (it was on its way from the broker while the
	// replay read it from the history) is dropped even once live. It is cleared at the first
	// frame after it, since frames come in position order.
	after protocol.Position
}

// replayed reports whether a frame at pos was replayed already: at or before the position
// the replay ended at, in the same epoch.
func (s *sub) replayed(pos protocol.Position) bool {
	return pos.Epoch == s.after.Epoch && pos.Epoch != "" && !s.after.Less(pos)
}

type heldFrame struct {
	pos   protocol.Position
	frame qframe
}

// slowGrace is how long Send waits for room in a full queue before it counts the connection
// as slow: a broker that delivers in batches (Kafka) can outrun a healthy writer for a moment.
const slowGrace = 100 * time.Millisecond

// Send queues one frame. A connection whose queue stays full (SendBuffer frames) for slowGrace
// is disconnected as a slow consumer (it can resume) rather than losing the frame silently.
// Send reports whether it was queued.
func (c *Conn) Send(frame []byte) bool {
	if c.closing.Load() || !c.open() {
		return false
	}
	f := qframe{b: frame}
	if c.deflate {
		f = c.hub.deflate.frame(frame)
	}
	return c.send(f)
}

// send is Send of a frame ready for c (compressed or not).
func (c *Conn) send(frame qframe) bool {
	if c.closing.Load() || !c.open() {
		return false
	}
	limit := int64(c.hub.cfg.SendBuffer)
	c.qmu.Lock()
	if c.queued.Load() >= limit {
		c.qmu.Unlock()
		if !c.waitRoom(limit, slowGrace) {
			c.slow()
			return false
		}
		c.qmu.Lock()
	}
	if c.closing.Load() { // a disconnect is queued: nothing goes after it
		c.qmu.Unlock()
		return false
	}
	ok := c.enqueue(frame)
	c.qmu.Unlock()
	return ok
}

// enqueue queues frame behind what is queued; c.qmu is held.
func (c *Conn) enqueue(frame qframe) bool {
	if c.link != nil { // Serve's goroutine writes it
		c.pending.push(frame)
		c.queued.Add(1)
		c.link.signal()
		return true
	}
	switch d := c.hub.budget; {
	case c.lead:
		c.pending.push(frame)
	case c.pending.len() == 0 && (d == nil || d.due(c.lastLead)):
		if !c.giveLead(frame) {
			return false
		}
	default: // the node is busy and the connection wrote less than a budget ago: wait for the clock
		c.pending.push(frame)
		if !c.scheduled {
			c.scheduled = true
			d.schedule(c)
		}
	}
	c.queued.Add(1)
	return true
}

// giveLead gives melody frame as the lead; c.qmu is held. melody reports a full or closed queue
// to the error handler, which takes no lock of the connection; its queue holds at most a lead, a
// disconnect and a close frame.
func (c *Conn) giveLead(frame qframe) bool {
	c.fc.leadDeflated.Store(frame.z) // read when gorilla writes it, after melody took it from its queue
	if err := c.s.Write(frame.b); err != nil {
		return false
	}
	c.setLead()
	if d := c.hub.budget; d != nil {
		c.lastLead = d.now()
	}
	return true
}

// setLead marks a frame handed to melody; c.qmu is held.
func (c *Conn) setLead() {
	if !c.lead {
		c.lead = true
		if d := c.hub.budget; d != nil {
			d.addLead()
		}
	}
}

// endLead marks the lead written, or gone with the connection; c.qmu is held.
func (c *Conn) endLead() {
	if c.lead {
		c.lead = false
		if d := c.hub.budget; d != nil {
			d.leads.Add(-1)
		}
	}
}

// kick hands the first pending frame over as the lead, at tick now of the budget clock. It
// reports whether c is to be kicked again later (it wrote less than a budget ago).
func (c *Conn) kick(now int64) (later bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.lead || c.pending.len() == 0 { // already on its way, or the connection ended
		c.scheduled = false
		return false
	}
	if now-c.lastLead < c.hub.budget.ticks {
		return true
	}
	c.scheduled = false
	if !c.giveLead(c.pending.pop()) {
		c.queued.Add(-int64(c.pending.len()) - 1)
		c.pending.reset()
	}
	return false
}

// sent is melody's report, on its write goroutine, that the lead was written. That goroutine
// then writes the frames queued behind it, straight into the socket's buffer, and flushes them
// (one write for up to maxCoalesce bytes), until none is left; frames queued meanwhile are
// written in the same round.
func (c *Conn) sent() {
	c.queued.Add(-1)
	n := 1
	for {
		c.qmu.Lock()
		if c.pending.len() == 0 && n == 1 {
			// A lone frame: it was not held back (nothing was queued behind it when it was
			// written, or the connection ended since), so there is nothing to flush.
			c.endBurst()
			c.qmu.Unlock()
			break
		}
		if c.pending.len() == 0 {
			c.qmu.Unlock()
			if err := c.fc.flushAll(); err != nil {
				c.writeFailed()
				break
			}
			c.qmu.Lock()
			if c.pending.len() == 0 { // still nothing: the burst is over
				c.endBurst()
				c.qmu.Unlock()
				break
			}
		}
		frame := c.pending.pop()
		c.qmu.Unlock()
		if err := c.fc.writeFrame(frame.b, frame.z); err != nil {
			c.writeFailed()
			break
		}
		c.queued.Add(-1)
		n++
		if c.waiters.Load() > 0 {
			select {
			case c.room <- struct{}{}:
			default:
			}
		}
	}
	c.hub.metrics.FramesOut.Add(float64(n))
	if c.waiters.Load() > 0 {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
}

// endBurst marks the lead written and nothing queued behind it, and hands melody the close frame
// a disconnect left behind; c.qmu is held.
func (c *Conn) endBurst() {
	c.endLead()
	if c.closeMsg != nil {
		_ = c.s.CloseWithMsg(c.closeMsg)
		c.closeMsg = nil
	}
}

// writeFailed ends a connection whose socket refused a write (the client is gone, or did not
// read within the write timeout): nothing more is sent, and closing the socket ends melody's
// loops.
func (c *Conn) writeFailed() {
	c.closing.Store(true)
	c.qmu.Lock()
	c.queued.Add(-int64(c.pending.len()))
	c.pending.reset()
	c.qmu.Unlock()
	_ = c.s.WebsocketConnection().Close()
}

// more reports whether another frame is queued behind the one being written (flushConn).
func (c *Conn) more() bool { return c.queued.Load() > 1 }

// idle reports whether everything queued to c was written to the socket.
func (c *Conn) idle() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return !c.lead && c.queued.Load() == 0
}

// waitRoom waits until fewer than limit frames are queued, at most d; false if they still are.
func (c *Conn) waitRoom(limit int64, d time.Duration) bool {
	if c.queued.Load() < limit {
		return true
	}
	c.waiters.Add(1)
	defer c.waiters.Add(-1)
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
	c.hub.rlog.Info(logSlowConsumer, "slow consumer disconnected", "session_id", c.ID, "send_buffer", c.hub.cfg.SendBuffer)
	c.Disconnect(protocol.DisconnectSlowConsumer)
}

// Disconnect queues g's last frame, behind what is queued, and closes the connection after it
// with g's close code and reason; later calls do nothing.
func (c *Conn) Disconnect(g Goodbye) {
	if !c.open() || c.closing.Load() { // ended already: encode nothing
		return
	}
	if t, ok := c.handler.(Translator); ok {
		g = t.Goodbye(c, g)
	}
	reason := g.CloseReason()
	c.end(reason, g.Frame(), melody.FormatCloseMessage(g.CloseCode(), reason))
}

// closeWith closes the connection with a WebSocket close code and reason, behind what is queued,
// without a disconnect frame: for a client that broke the WebSocket protocol itself (RFC 6455
// says to fail the connection). Nothing is sent after it; later calls and Disconnects do nothing.
func (c *Conn) closeWith(code int, reason string) {
	c.end(reason, nil, melody.FormatCloseMessage(code, reason))
}

// end sends frame (none when nil) and then closeMsg behind what is queued, once: later calls do
// nothing. reason is what Reason reports and the label of the disconnect metric.
func (c *Conn) end(reason string, frame, closeMsg []byte) {
	if !c.open() || !c.closing.CompareAndSwap(false, true) {
		return
	}
	c.reason.Store(reason)
	c.hub.metrics.Disconnects.WithLabelValues(reason).Inc()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.link != nil { // a stream: the frame is its last, then the response ends
		if frame != nil {
			c.pending.push(qframe{b: frame})
			c.queued.Add(1)
		}
		c.link.finish = true
		c.link.signal()
		return
	}
	if c.lead || c.pending.len() > 0 { // behind what is queued; the close once it is written
		if frame != nil {
			c.pending.push(qframe{b: frame})
			c.queued.Add(1)
		}
		c.closeMsg = closeMsg
		return
	}
	c.fc.leadDeflated.Store(false)               // the last frame goes plain
	if frame != nil && c.s.Write(frame) == nil { // melody's queue has room for these two
		c.setLead()
		c.queued.Add(1)
	}
	_ = c.s.CloseWithMsg(closeMsg)
}

// open reports whether the connection is open: a stream, or a WebSocket once upgraded.
func (c *Conn) open() bool { return c.s != nil || c.link != nil }

// dropQueue forgets what is still queued, once the connection ended.
func (c *Conn) dropQueue() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.queued.Add(-int64(c.pending.len()))
	c.pending.reset()
	c.closeMsg = nil
	c.endLead() // melody will not report it written
}

// ring is a FIFO of frames that grows as needed and gives its memory back once empty: its
// first buffer (ringMin frames) goes back to ringPool, whence the connection's next burst, or
// another connection's, takes it. A busy node writes to a connection once per latency budget
// (13 times a second at 75 ms), emptying its ring each time: allocating the buffer anew each
// time was two thirds of the bytes a fan-out node allocated.
type ring struct {
	buf  []qframe
	head int
	n    int
}

// ringMin is the frames of a ring's first buffer.
const ringMin = 16

// ringPool holds empty (cleared) first buffers of rings.
var ringPool = sync.Pool{New: func() any { return new([ringMin]qframe) }}

func (r *ring) len() int { return r.n }

func (r *ring) push(b qframe) {
	if r.n == len(r.buf) {
		var nb []qframe
		if len(r.buf) == 0 {
			nb = ringPool.Get().(*[ringMin]qframe)[:]
		} else {
			nb = make([]qframe, 2*len(r.buf))
			for i := range r.n {
				nb[i] = r.buf[(r.head+i)%len(r.buf)]
			}
			r.release()
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = b
	r.n++
}

func (r *ring) pop() qframe {
	b := r.buf[r.head]
	r.buf[r.head] = qframe{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.reset() // caught up: give the memory back
	}
	return b
}

// reset drops what the ring holds and gives its memory back.
func (r *ring) reset() {
	r.release()
	*r = ring{}
}

// release clears the ring's buffer and puts it in ringPool if it is a first buffer (a larger one
// is left to the collector).
func (r *ring) release() {
	if len(r.buf) != ringMin {
		return
	}
	clear(r.buf) // no frame stays reachable from the pool
	ringPool.Put((*[ringMin]qframe)(r.buf))
}

// Reason is the close reason the server ended the connection with (a Goodbye's, the disconnect
// code), or "closed" when the client (or the network) ended it.
func (c *Conn) Reason() string {
	if r, ok := c.reason.Load().(string); ok {
		return r
	}
	return "closed"
}

// Format is the frame format of the channel messages c receives.
func (c *Conn) Format() Format { return c.format }

// Closing reports whether the connection is closing or closed.
func (c *Conn) Closing() bool { return c.closing.Load() }

// Subscribed reports whether c is subscribed to channel (live or replaying).
func (c *Conn) Subscribed(channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[channel]
	return ok
}

// Subscriptions is how many channels c is subscribed to (live or replaying).
func (c *Conn) Subscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

func (c *Conn) addSub(channel string) *sub {
	s := &sub{}
	c.mu.Lock()
	c.subs[channel] = s
	c.mu.Unlock()
	return s
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

// deliver queues a channel frame for subscription s, or holds it while s replays. The hub
// calls it under the channel's shard lock, so s is still c's subscription.
func (c *Conn) deliver(s *sub, pos protocol.Position, frame qframe) bool {
	if s.live.Load() { // live for good: Activate sent what was held before setting it
		if s.after.Epoch != "" {
			if s.replayed(pos) {
				return true
			}
			if pos.Epoch == s.after.Epoch {
				s.after = protocol.Position{} // past the replay for good: no more checks
			}
		}
		return c.send(frame)
	}
	c.mu.Lock()
	if !s.live.Load() {
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
	if s.replayed(pos) {
		return true
	}
	return c.send(frame)
}

// Activate ends the replay of channel: frames held meanwhile are sent, except those at or before
// after (already replayed) when after has the same epoch, and the subscription goes live (a
// frame at or before after that reaches the node later is dropped too). The
// first frame, if any, is sent before them (the reply that ends the replay), under the same lock
// so that no live frame overtakes it.
func (c *Conn) Activate(channel string, after protocol.Position, first []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if first != nil {
		c.Send(first)
	}
	s := c.subs[channel]
	if s == nil {
		return
	}
	s.after = after
	for _, h := range s.held {
		if s.replayed(h.pos) {
			continue // replayed already
		}
		c.send(h.frame)
	}
	s.held = nil
	s.live.Store(true)
}
