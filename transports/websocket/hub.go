// Package websocket is the websocket transport of a node, on melody: it accepts connections,
// keeps the index of channel -> local connections (so a message is never matched against every
// session), asks the broker for a channel only while it has a local subscriber, fans encoded
// frames out to connections, disconnects slow consumers instead of dropping their messages, and
// drains.
//
// What frames mean is not its business: a Handler (package handlers) reads and answers them, and
// every frame the hub sends is encoded by package protocol (the disconnects it sends itself are
// protocol.Disconnect values, opaque to it as Goodbyes).
package websocket

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gws "github.com/gorilla/websocket"
	"github.com/olahol/melody"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Handler is the protocol on top of connections. Open is called once a connection is upgraded,
// Frame for each text frame and Binary for each binary frame, in order, on the connection's read
// goroutine, and Close once after it ended. Implementations must be safe for concurrent use
// across connections.
type Handler interface {
	Open(c *Conn)
	Frame(c *Conn, data []byte)
	Binary(c *Conn)
	Close(c *Conn)
}

// Interest opens the broker subscription of a channel: the hub calls Open when a channel gets
// its first local subscriber and the returned stop when it loses its last one. Open must return
// only once the subscription is established. If the subscription ends by itself (the broker or
// the broker gave it up), the Interest calls lost, and the hub disconnects the channel's local
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
	// LatencyBudget, when above 0, is how long the hub may hold a connection's frames while the
	// node is busy, so that they go out together in one write (budget.go): an idle node writes
	// every frame at once; a busy one writes to a connection at most once per budget. A
	// connection that wrote nothing for a budget gets its next frame at once. The clock that
	// decides and hands held frames over runs from Hub.Start to Hub.Close. 0: every frame is
	// written at once.
	LatencyBudget time.Duration
	// Compression negotiates permessage-deflate with the clients that offer it (RFC 7692, no
	// context takeover): what they receive is compressed, each channel message once per node
	// (deflate.go). CompressionLevel is the flate level, 1 (fastest) to 9 (smallest); 0 means 1.
	Compression      bool
	CompressionLevel int
	// CheckOrigin decides whether a browser's Origin is allowed; nil means same host only.
	// Accept refuses a request it does not allow with ErrOriginRefused, before answering it.
	CheckOrigin func(r *http.Request) bool
}

// ErrOriginRefused is returned by Accept, before anything was written, for a request whose
// Origin Config.CheckOrigin does not allow: the caller answers it (403).
var ErrOriginRefused = errors.New("websocket: origin not allowed")

// melodyQueue is the size of melody's send queue (a channel allocated for every session): it
// holds a connection's lead frame, a disconnect frame and a close frame at most (Conn.enqueue).
const melodyQueue = 4

// Socket buffers. gorilla's read buffer only needs to hold a frame header and small frames
// (larger ones are read through it in pieces). Its write buffers come from a pool, taken for one
// frame and given back: an idle connection holds none. (gorilla writes a frame larger than its
// buffer in two parts, through a slice it allocates; the pool's buffers are large enough for
// most frames.)
const (
	readBufferSize  = 256
	writeBufferSize = 4096
)

var writeBufferPool sync.Pool

const shardCount = 64

// Hub holds the node's connections. Safe for concurrent use.
type Hub struct {
	cfg      Config
	m        *melody.Melody
	handler  Handler
	interest Interest
	log      *slog.Logger
	rlog     *ratelog.Logger // slow-consumer disconnects
	metrics  *metrics.Metrics
	seed     maphash.Seed

	shards [shardCount]shard

	sessMu   sync.RWMutex
	sessions map[string]*Conn

	drainMu  sync.Mutex
	draining bool
	closed   bool           // Close was called: Accept refuses
	served   sync.WaitGroup // the goroutines Accept starts, one per connection; Close waits for them

	budget  *budgetClock // nil without a latency budget; Start starts it, Close stops it
	deflate *deflater    // nil without compression
}

type shard struct {
	mu       sync.RWMutex
	channels map[string]*entry
	peak     int // most channels held since the map was made (transports.Shrink)
}

// forget deletes channel's entry. sh.mu is held.
func (sh *shard) forget(channel string) {
	delete(sh.channels, channel)
	sh.channels = transports.Shrink(sh.channels, &sh.peak)
}

// entry is one channel with local subscribers.
type entry struct {
	members []member      // the local subscribers, in a slice that Deliver walks
	index   map[*Conn]int // position of each in members, once there are more than smallEntry
	ready   chan struct{} // closed once the broker subscription is open (or failed)
	err     error
	stop    func()
}

// member is a subscriber of a channel with its subscription, so that delivering needs no lookup.
type member struct {
	c *Conn
	s *sub
}

// smallEntry is how many subscribers a channel has before it keeps an index of them.
const smallEntry = 8

func (e *entry) find(c *Conn) int {
	if e.index != nil {
		if i, ok := e.index[c]; ok {
			return i
		}
		return -1
	}
	for i, m := range e.members {
		if m.c == c {
			return i
		}
	}
	return -1
}

func (e *entry) add(c *Conn, s *sub) {
	if i := e.find(c); i >= 0 {
		e.members[i].s = s
		return
	}
	e.members = append(e.members, member{c: c, s: s})
	switch {
	case e.index != nil:
		e.index[c] = len(e.members) - 1
	case len(e.members) > smallEntry:
		e.index = make(map[*Conn]int, 2*len(e.members))
		for i, m := range e.members {
			e.index[m.c] = i
		}
	}
}

func (e *entry) remove(c *Conn) bool {
	i := e.find(c)
	if i < 0 {
		return false
	}
	last := len(e.members) - 1
	e.members[i] = e.members[last]
	e.members[last] = member{}
	e.members = e.members[:last]
	if e.index != nil {
		delete(e.index, c)
		if i < last {
			e.index[e.members[i].c] = i
		}
	}
	return true
}

// NewHub makes a hub; it starts nothing. Connections arrive through Accept, once SetHandler has
// been called; with a latency budget, Start must have been called too, or frames held back by
// the budget wait for it.
func NewHub(cfg Config, interest Interest, m *metrics.Metrics, log *slog.Logger) *Hub {
	if cfg.CheckOrigin == nil {
		cfg.CheckOrigin = sameHost
	}
	h := &Hub{cfg: cfg, interest: interest, log: log, rlog: ratelog.New(log, ratelog.DefaultInterval), metrics: m,
		seed: maphash.MakeSeed(), sessions: map[string]*Conn{}}
	if cfg.LatencyBudget > 0 {
		h.budget = newBudgetClock(cfg.LatencyBudget)
		h.budget.onBusy = func(busy bool) {
			if busy {
				m.WriteBusy.Set(1)
			} else {
				m.WriteBusy.Set(0)
			}
		}
	}
	if cfg.Compression {
		h.deflate = newDeflater(max(cfg.CompressionLevel, 1))
	}
	for i := range h.shards {
		h.shards[i].channels = map[string]*entry{}
	}
	mel := melody.New()
	mel.Config.MaxMessageSize = cfg.MaxFrameSize
	mel.Config.MessageBufferSize = melodyQueue
	mel.Config.WriteWait = cfg.WriteTimeout
	mel.Config.PingPeriod = cfg.PingInterval
	mel.Config.PongWait = cfg.PingInterval*2 + cfg.WriteTimeout
	mel.Upgrader = &gws.Upgrader{
		ReadBufferSize:  readBufferSize,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &writeBufferPool,
		CheckOrigin:     func(*http.Request) bool { return true }, // Accept checked it, for the caller to answer 403
		Error:           refuseUpgrade,
		// gorilla only negotiates; it never compresses itself (onConnect): the hub does, once
		// per message (deflate.go).
		EnableCompression: cfg.Compression,
	}
	mel.HandleConnect(h.onConnect)
	mel.HandleDisconnect(h.onDisconnect)
	mel.HandleMessage(func(s *melody.Session, b []byte) {
		if c := connOf(s); c != nil {
			h.metrics.FramesIn.Inc()
			switch {
			case c.Closing(): // the server said goodbye (disconnect, failed frame): nothing more is acted on
			case !utf8.Valid(b): // RFC 6455 8.1: fail the connection with 1007
				c.closeWith(closeInvalidData, reasonInvalidUTF8)
			default:
				h.frame(c, b)
			}
		}
	})
	mel.HandleMessageBinary(func(s *melody.Session, _ []byte) {
		if c := connOf(s); c != nil {
			h.metrics.FramesIn.Inc()
			c.handler.Binary(c)
		}
	})
	mel.HandleSentMessage(func(s *melody.Session, _ []byte) {
		if c := connOf(s); c != nil {
			c.sent()
		}
	})
	mel.HandleError(h.onError)
	h.m = mel
	return h
}

// frame has the handler read one client frame. It runs on a goroutine of its own while the
// connection's read goroutine waits for it, so frames are still handled one at a time and in
// order: decoding and answering a frame (JSON, subscribing) needs a deep stack, and a goroutine
// keeps the largest stack it ever needed, so doing that work on the read goroutine would grow
// the stack every idle connection holds (from 4 to 8 KiB). The transient goroutine's stack goes
// back to the runtime when it ends.
func (h *Hub) frame(c *Conn, b []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.handler.Frame(c, b)
	}()
	<-done
}

// SetHandler sets the protocol handler; call it before the first Accept.
func (h *Hub) SetHandler(handler Handler) { h.handler = handler }

// Start starts what the hub runs besides its connections: the budget clock, when there is a
// latency budget. Close stops it. Calls after the first, and after Close, do nothing.
func (h *Hub) Start() {
	if h.budget == nil {
		return
	}
	h.drainMu.Lock()
	defer h.drainMu.Unlock()
	if !h.closed {
		h.budget.start()
	}
}

// Identity is who a connection is, decided before the upgrade.
type Identity struct {
	Session string
	User    string
	Value   any // the handler's per-connection data (claims)
	// Handler reads the connection's frames instead of the hub's handler (SetHandler), for a
	// connection that speaks another protocol (Pusher's); nil: the hub's.
	Handler Handler
	// Format is the frame format the connection receives channel messages in (Deliver).
	Format Format
}

// Accept upgrades the request and returns once the connection is open (or the upgrade failed);
// the connection is served on a goroutine of its own until it ends. Returning lets net/http
// drop what it keeps for a request (its buffered reader and writers, some 8-10 KiB) for the
// life of the connection. Refusals come back before anything was written, for the caller to
// answer: ErrOriginRefused, ErrHubClosed and *UpgradeError.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, id Identity) error {
	if !h.cfg.CheckOrigin(r) {
		return ErrOriginRefused
	}
	h.drainMu.Lock()
	if h.closed {
		h.drainMu.Unlock()
		return ErrHubClosed
	}
	h.served.Add(1)
	h.drainMu.Unlock()
	c := newConn(h, id)
	c.opened = make(chan error, 1)
	go func() {
		defer h.served.Done()
		hj := &hijacker{ResponseWriter: w, fc: c.fc}
		err := h.m.HandleRequest(hj, r) // connOf finds c through the socket: no Keys map per session
		if hj.refused != nil {
			err = hj.refused
		}
		select {
		case c.opened <- err: // the upgrade failed (or the connection was never opened)
		default:
		}
	}()
	return <-c.opened
}

// Check makes the checks of Accept that cost nothing, without answering: the Origin
// (ErrOriginRefused) and the handshake's headers (an *UpgradeError: Connection and Upgrade
// tokens, Sec-WebSocket-Version 13). A caller checks before its own costly steps (a hook call);
// Accept checks again.
func (h *Hub) Check(r *http.Request) error {
	if !h.cfg.CheckOrigin(r) {
		return ErrOriginRefused
	}
	if !gws.IsWebSocketUpgrade(r) {
		return &UpgradeError{Status: http.StatusBadRequest, Err: errors.New("websocket: not a websocket handshake: 'Connection: upgrade' and 'Upgrade: websocket' are required")}
	}
	if !hasToken(r.Header.Values("Sec-Websocket-Version"), "13") {
		return &UpgradeError{Status: http.StatusBadRequest, Err: errors.New("websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header")}
	}
	return nil
}

// hasToken reports whether one of the comma-separated lists in values holds token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// sameHost allows requests without an Origin (not browsers) and pages served from the host
// the request was sent to.
func sameHost(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// UpgradeError is returned by Accept, before anything was written, for a request gorilla will
// not upgrade (not a WebSocket handshake, a wrong version): the caller answers it with Status.
type UpgradeError struct {
	Status int
	Err    error
}

func (e *UpgradeError) Error() string { return e.Err.Error() }

func (e *UpgradeError) Unwrap() error { return e.Err }

// refuseUpgrade is gorilla's answer to a request it will not upgrade: it answers nothing, and
// hands the status to Accept (through the hijacker, the ResponseWriter gorilla was given), which
// returns it as an *UpgradeError.
func refuseUpgrade(w http.ResponseWriter, _ *http.Request, status int, reason error) {
	if hj, ok := w.(*hijacker); ok {
		hj.refused = &UpgradeError{Status: status, Err: reason}
	}
}

// Draining reports whether Drain has begun.
func (h *Hub) Draining() bool {
	h.drainMu.Lock()
	defer h.drainMu.Unlock()
	return h.draining
}

// connOf is the Conn of a session: gorilla's socket is the Conn's flushConn (hijacker), which
// points back at it. Nothing of the session changes after melody made it, so no lock.
func connOf(s *melody.Session) *Conn {
	if ws := s.WebsocketConnection(); ws != nil {
		if fc, ok := ws.NetConn().(*flushConn); ok {
			return fc.conn
		}
	}
	return nil
}

func (h *Hub) onConnect(s *melody.Session) {
	c := connOf(s)
	c.s = s
	// gorilla would compress every frame again, per connection: the hub hands it frames
	// compressed once (or plain). Before melody's write goroutine starts: no race.
	s.WebsocketConnection().EnableWriteCompression(false)
	c.deflate = h.deflate != nil && c.fc.negotiated
	if c.deflate {
		c.fc.guard = newInflateGuard(h.cfg.MaxFrameSize)
	}
	c.fc.more = c.more // from now on writes are frames: coalesce them
	s.Request = nil    // nothing reads it; keeping it would keep its headers and context
	defer func() { c.opened <- nil }()
	h.opened(c)
}

func (h *Hub) onDisconnect(s *melody.Session) {
	h.ended(connOf(s))
}

func (h *Hub) onError(s *melody.Session, err error) {
	c := connOf(s)
	if c == nil {
		return
	}
	if errors.Is(err, melody.ErrMessageBufferFull) {
		// Cannot happen: the Conn's own queue keeps melody's below its size. melody reports it
		// synchronously from a write made under the Conn's queue lock, so no Disconnect here:
		// close the socket itself.
		h.log.Error("melody's send queue overflowed; closing the connection", "session_id", c.ID)
		_ = s.WebsocketConnection().Close()
		return
	}
	if !errors.Is(err, melody.ErrWriteClosed) && !gws.IsCloseError(err, gws.CloseNormalClosure, gws.CloseGoingAway, gws.CloseNoStatusReceived) {
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
		e = &entry{ready: make(chan struct{})}
		sh.channels[channel] = e
		sh.channels = transports.Shrink(sh.channels, &sh.peak)
	}
	e.add(c, c.addSub(channel))
	sh.mu.Unlock()
	h.metrics.Subscriptions.Inc()

	if first {
		stop, err := h.interest.Open(channel, func() { h.lost(channel, e) })
		sh.mu.Lock()
		e.stop, e.err = stop, err
		if err != nil && sh.channels[channel] == e {
			sh.forget(channel)
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
	if e != nil && e.remove(c) {
		if len(e.members) == 0 {
			sh.forget(channel)
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
		sh.forget(channel)
	}
	conns := make([]*Conn, 0, len(e.members))
	for _, m := range e.members {
		conns = append(conns, m.c)
	}
	sh.mu.Unlock()
	h.log.Warn("broker subscription lost; its subscribers will resume", "channel", channel, "sessions", len(conns))
	for _, c := range conns {
		c.Disconnect(protocol.DisconnectResubscribe)
	}
}

// Format is a frame format: how a channel message is encoded for a connection. The native
// protocol's is the zero value; each other protocol served on the hub (Pusher's) has its own.
type Format uint8

// The frame formats.
const (
	FormatNative Format = iota // the gateway's own protocol (docs/protocol.md)
	FormatPusher               // the Pusher Channels protocol (docs/pusher.md)
	formatCount
)

// Encoded is a channel message encoded in one format for Deliver.
type Encoded struct {
	Frame  []byte // nil: nothing to send in this format
	Except string // a session that is not sent Frame (the sender of a client event); "": none
	// More are frames sent after Frame (the members of a coalesced join, one frame each).
	More []Encoded

	z *lazyFrame // Frame compressed, once per Deliver (set by Deliver)
}

// Encoder encodes a channel message in a format other than the native one. Deliver calls it at
// most once per format and message, on the delivering goroutine, under the channel's read lock
// (so it must not call the hub); it need not be safe for concurrent use.
type Encoder func(f Format) Encoded

// Deliver queues a channel message at pos on channel to every local subscriber: native, its
// native frame (encoded by the caller, once for the node), to a connection of the native format,
// and what other encodes for the connection's format to any other (encoded once per format, on
// the first subscriber of that format; other nil: such connections get nothing). It returns how
// many frames it queued (or held for connections that are replaying).
func (h *Hub) Deliver(channel string, pos protocol.Position, native []byte, other Encoder) int {
	sh := h.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.channels[channel]
	if e == nil {
		return 0
	}
	n := 0
	var memo [formatCount]*Encoded
	nf := lazyFrame{plain: native} // compressed once, for the connections that negotiated it
	for _, m := range e.members {
		if m.c.format == FormatNative {
			if m.c.deliver(m.s, pos, nf.to(m.c)) {
				n++
			}
			continue
		}
		x := memo[m.c.format]
		if x == nil {
			x = &Encoded{}
			if other != nil {
				*x = other(m.c.format)
			}
			memo[m.c.format] = x
		}
		n += deliverEncoded(m, pos, x)
	}
	h.delivered(n)
	return n
}

// delivered counts n frames delivered, for the budget clock's load figure.
func (h *Hub) delivered(n int) {
	if h.budget != nil && n > 0 {
		h.budget.frames.Add(int64(n))
	}
}

// deliverEncoded queues x and what follows it to m; it returns how many frames it queued.
func deliverEncoded(m member, pos protocol.Position, x *Encoded) int {
	n := 0
	if x.Frame != nil && (x.Except == "" || x.Except != m.c.ID) {
		if x.z == nil {
			x.z = &lazyFrame{plain: x.Frame}
		}
		if m.c.deliver(m.s, pos, x.z.to(m.c)) {
			n++
		}
	}
	for i := range x.More {
		n += deliverEncoded(m, pos, &x.More[i])
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

// Broadcast queues frame to every connection of the node of the native format and returns how
// many.
func (h *Hub) Broadcast(frame []byte) int {
	n := 0
	f := lazyFrame{plain: frame}
	for _, c := range h.conns() {
		if c.format == FormatNative && c.send(f.to(c)) {
			n++
		}
	}
	h.delivered(n)
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
				c.Disconnect(protocol.DisconnectShutdown)
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
			c.Disconnect(protocol.DisconnectShutdown)
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
		if c.link != nil {
			c.link.abort()
		} else if c.s != nil {
			_ = c.s.WebsocketConnection().Close()
		}
	}
}

// Close closes every remaining connection at once, waits until their goroutines have ended and
// stops the budget clock. Connections still upgrading are told to go (drain) as they open.
// Safe to call twice.
func (h *Hub) Close() {
	h.drainMu.Lock()
	h.draining = true
	h.closed = true
	h.drainMu.Unlock()
	h.closeAll()
	h.served.Wait()
	if h.budget != nil {
		h.budget.stop()
	}
}

// ErrHubClosed is returned by Accept, before anything was written, once the hub is closed: the
// caller answers it (503).
var ErrHubClosed = errors.New("websocket: the hub is closed")
