package wsclient

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/protocol"
)

// Defaults of Options.
const (
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 10 * time.Second
	DefaultAckTimeout       = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultPingInterval     = 20 * time.Second
	DefaultMaxRetries       = 5
	DefaultBufferSize       = 256
	DefaultMaxFrameSize     = 64 << 10
)

// Options configure a Client. URL (or URLs) is required; the rest has defaults.
type Options struct {
	// URL is the base URL of a gateway node or of a load balancer: http, https, ws or wss. The
	// client connects to its path plus "/ws" (unless it already ends with "/ws").
	URL string
	// URLs, when set, replaces URL: each connection attempt takes the next one, round-robin,
	// so a client whose node died goes on with the next node.
	URLs []string

	// Token is sent as "Authorization: Bearer <token>". TokenFunc, when set, is called before
	// each connection attempt instead, so an expired token is replaced by a fresh one. A token
	// Client.Refresh got accepted replaces Token for every later connection, and with TokenFunc
	// is the token of the next connection attempt (TokenFunc gives those after it).
	Token     string
	TokenFunc func(ctx context.Context) (string, error)
	// Header is added to the upgrade request of every connection.
	Header http.Header
	// Dialer makes the connections (TLS settings, proxy, socket options). Default: a dialer
	// with the environment's proxy and HandshakeTimeout.
	Dialer *websocket.Dialer

	// MinBackoff and MaxBackoff bound the delay between connection attempts: attempt n waits a
	// random time in [0, min(MaxBackoff, MinBackoff*2^n)) ("full jitter"). A connection that
	// lasted MaxBackoff resets n; a `disconnect` frame with reconnect true is followed by a
	// delay in [0, MinBackoff).
	MinBackoff time.Duration // default 100ms
	MaxBackoff time.Duration // default 10s

	// AckTimeout is how long Publish and Send wait for the reply of an attempt before they send
	// again, and Unsubscribe and Ping for theirs. (Subscribe waits as long as its ctx allows.)
	AckTimeout time.Duration // default 10s
	// HandshakeTimeout bounds the upgrade and the wait for the welcome frame.
	HandshakeTimeout time.Duration // default 10s
	// WriteTimeout bounds the write of one frame.
	WriteTimeout time.Duration // default 10s
	// PingInterval is how often the client sends a `ping` frame; a connection on which nothing
	// arrived for PingInterval+AckTimeout is considered dead and replaced. Negative: never.
	PingInterval time.Duration // default 20s
	// MaxRetries is how many times Publish and Send send a message again (same msg_id) after a
	// lost connection, a missing ack or an `unavailable` / `rate_limited` error. 0 means
	// DefaultMaxRetries; negative means none.
	MaxRetries int
	// MaxFrameSize: Publish and Send refuse (CodeTooLarge) a frame larger than this, which the
	// server would answer by closing the connection. 0 means DefaultMaxFrameSize (the server's
	// default); negative disables the check.
	MaxFrameSize int

	// BufferSize is the capacity of each subscription's channel and of the Direct channel.
	BufferSize int // default 256
	// IgnoreDirect drops messages addressed to the session or broadcast instead of delivering
	// them on Direct (whose buffer, like a subscription's, blocks the reader when full).
	IgnoreDirect bool

	// Logger receives the client's log (default: none).
	Logger *slog.Logger
	// OnState is called on every change of state, in order.
	OnState func(State)
	// OnDisconnect is called when a connection ends: err is a *DisconnectError when the server
	// said why, else the transport error.
	OnDisconnect func(err error)
	// OnResubscribed is called after a reconnect for every channel resubscribed: recovered
	// false means messages may have been missed (the next message has Gap set).
	OnResubscribed func(channel string, recovered bool)
}

// State is the connection state of a Client.
type State int

// States. A Client goes Connecting -> Connected -> Disconnected -> Connecting ... and ends
// Closed (Close, or a refusal it cannot recover from: see Client.Err).
const (
	StateConnecting State = iota
	StateConnected
	StateDisconnected
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Client is a connection to the gateway that survives connection losses. Its methods are safe
// for concurrent use.
type Client struct {
	opts   Options
	urls   []string
	next   int // index of the next URL to try; used by Dial, then by the supervisor only
	log    *slog.Logger
	dialer *websocket.Dialer

	ctx    context.Context // ends when the client closes
	cancel context.CancelFunc
	done   chan struct{} // closed once every goroutine is gone

	ids atomic.Uint64

	mu       sync.Mutex
	state    State
	conn     *conn         // the live connection, nil while there is none
	connWait chan struct{} // closed when the next connection is live
	subs     map[string]*Subscription
	closed   bool // no more subscriptions (set when shutting down)
	err      error
	welcome  welcome
	// token is the token of the next connection attempt when TokenFunc is nil or useToken is
	// set (a refreshed token, used once before TokenFunc again).
	token    string
	useToken bool

	direct       chan Message
	directMu     sync.Mutex
	directClosed bool
}

type welcome struct {
	session, node, user string
	data                json.RawMessage
}

// Dial connects to the gateway and returns once the welcome frame arrived. It tries each URL
// once and returns the last error when none accepts (a *HandshakeError for a refused
// upgrade). From then on the client reconnects by itself until Close.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	c, err := newClient(opts)
	if err != nil {
		return nil, err
	}
	c.setState(StateConnecting)
	var cn *conn
	for range c.urls {
		if cn, err = c.connect(ctx); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		c.cancel()
		close(c.done)
		return nil, err
	}
	c.activate(cn)
	go c.supervise(cn)
	return c, nil
}

func newClient(opts Options) (*Client, error) {
	raw := opts.URLs
	if len(raw) == 0 {
		if opts.URL == "" {
			return nil, errors.New("wsclient: Options.URL is required")
		}
		raw = []string{opts.URL}
	}
	urls := make([]string, len(raw))
	for i, u := range raw {
		var err error
		if urls[i], err = wsURL(u); err != nil {
			return nil, err
		}
	}
	setDefault(&opts.MinBackoff, DefaultMinBackoff)
	setDefault(&opts.MaxBackoff, DefaultMaxBackoff)
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	setDefault(&opts.AckTimeout, DefaultAckTimeout)
	setDefault(&opts.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&opts.WriteTimeout, DefaultWriteTimeout)
	setDefault(&opts.PingInterval, DefaultPingInterval)
	setDefault(&opts.MaxRetries, DefaultMaxRetries)
	opts.MaxRetries = max(opts.MaxRetries, 0)
	setDefault(&opts.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&opts.BufferSize, DefaultBufferSize)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dialer := opts.Dialer
	if dialer == nil {
		dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: opts.HandshakeTimeout}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		opts: opts, urls: urls, log: log, dialer: dialer,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		state:    -1, // so that Dial reports StateConnecting
		connWait: make(chan struct{}), subs: map[string]*Subscription{},
		direct: make(chan Message, opts.BufferSize),
		token:  opts.Token,
	}, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// wsURL turns a base URL into the URL of the WebSocket endpoint.
func wsURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("wsclient: URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	case "ws", "wss":
	default:
		return "", fmt.Errorf("wsclient: URL %q: scheme must be http, https, ws or wss", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("wsclient: URL %q has no host", raw)
	}
	p := strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(p, "/ws") {
		p += "/ws"
	}
	u.Path, u.RawPath = p, ""
	return u.String(), nil
}

// Session is the session id of the current (or last) connection.
func (c *Client) Session() string { c.mu.Lock(); defer c.mu.Unlock(); return c.welcome.session }

// Node is the id of the node of the current (or last) connection.
func (c *Client) Node() string { c.mu.Lock(); defer c.mu.Unlock(); return c.welcome.node }

// User is the user id the server gave the connection (the token's sub; "" if anonymous).
func (c *Client) User() string { c.mu.Lock(); defer c.mu.Unlock(); return c.welcome.user }

// WelcomeData is the data of the welcome of the current (or last) connection: what the server's
// connect hook gave the client (docs/hooks.md); nil without one.
func (c *Client) WelcomeData() json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome.data
}

// State is the current state.
func (c *Client) State() State { c.mu.Lock(); defer c.mu.Unlock(); return c.state }

// Done is closed once the client is closed and all its goroutines are gone.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client closed: ErrClosed after Close, a *DisconnectError when the server said
// not to reconnect, a *HandshakeError when it refused the upgrade for good (401 without
// TokenFunc, 403). nil while the client runs.
func (c *Client) Err() error { c.mu.Lock(); defer c.mu.Unlock(); return c.err }

// Direct delivers the messages addressed to this session (To "session") or to everyone (To
// "all"). It is closed when the client closes. See Options.IgnoreDirect.
func (c *Client) Direct() <-chan Message { return c.direct }

// Close closes the connection, ends every subscription (their channels are closed) and
// returns once all the client's goroutines are gone. It is safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = ErrClosed
	}
	cn := c.conn
	c.mu.Unlock()
	c.cancel()
	if cn != nil {
		cn.shutdown()
	}
	<-c.done
	return nil
}

func (c *Client) setState(s State) {
	c.mu.Lock()
	changed := c.state != s
	c.state = s
	c.mu.Unlock()
	if changed && c.opts.OnState != nil {
		c.opts.OnState(s)
	}
}

func (c *Client) nextID() string { return strconv.FormatUint(c.ids.Add(1), 10) }

func newMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// backoff is the delay before attempt n (0 for the first retry).
func (c *Client) backoff(n int) time.Duration {
	d := c.opts.MinBackoff
	for i := 0; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	return jitter(min(d, c.opts.MaxBackoff))
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(d)))
}

// sleep waits d or until the client closes; it reports whether d passed.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// connect makes one connection attempt to the next URL and waits for the welcome frame.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	u := c.urls[c.next%len(c.urls)]
	c.next++
	header := http.Header{}
	for k, v := range c.opts.Header {
		header[k] = append([]string(nil), v...)
	}
	c.mu.Lock()
	token, useToken := c.token, c.useToken
	c.useToken = false
	c.mu.Unlock()
	if c.opts.TokenFunc != nil && !useToken {
		var err error
		if token, err = c.opts.TokenFunc(ctx); err != nil {
			return nil, fmt.Errorf("wsclient: token: %w", err)
		}
	}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	ws, resp, err := c.dialer.DialContext(dctx, u, header)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			he := &HandshakeError{URL: u, Status: resp.StatusCode}
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if json.NewDecoder(resp.Body).Decode(&body) == nil {
				he.Code, he.Message = body.Error.Code, body.Error.Message
			}
			return nil, he
		}
		return nil, fmt.Errorf("wsclient: dial %s: %w", u, err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	_, b, err := ws.ReadMessage()
	stopped := stop()
	if err != nil || !stopped {
		ws.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("wsclient: waiting for welcome from %s: %w", u, err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil || f.Type != protocol.TypeWelcome {
		ws.Close()
		if f.Type == protocol.TypeDisconnect {
			return nil, &DisconnectError{Code: f.Code, Reason: f.Reason, Reconnect: f.Reconnect}
		}
		return nil, fmt.Errorf("wsclient: %s sent %.200q instead of welcome", u, b)
	}
	_ = ws.SetReadDeadline(time.Time{})
	c.log.Info("connected", "url", u, "node", f.Node, "session", f.Session)
	return newConn(c, ws, u, welcome{session: f.Session, node: f.Node, user: f.User, data: f.Data}), nil
}

// permanent reports whether a failed reconnect cannot succeed by trying again.
func (c *Client) permanent(err error) bool {
	var he *HandshakeError
	if errors.As(err, &he) {
		switch he.Status {
		case http.StatusUnauthorized:
			return c.opts.TokenFunc == nil // a static token stays wrong
		case http.StatusForbidden:
			return true
		}
	}
	var de *DisconnectError
	return errors.As(err, &de) && !de.Reconnect
}

// activate makes cn the live connection: it starts its reader and writer and (re)subscribes
// every channel not yet subscribed on it.
func (c *Client) activate(cn *conn) {
	c.mu.Lock()
	c.conn = cn
	c.welcome = cn.welcome
	close(c.connWait)
	c.connWait = make(chan struct{})
	var subs []*Subscription
	for _, s := range c.subs {
		if s.sentOn != cn {
			s.sentOn = cn
			subs = append(subs, s)
		}
	}
	c.mu.Unlock()
	cn.start()
	c.setState(StateConnected)
	for _, s := range subs {
		c.sendSubscribe(cn, s, false)
	}
}

// supervise runs the connections one after the other until the client closes.
func (c *Client) supervise(cn *conn) {
	defer c.finish()
	attempt := 0
	for {
		select {
		case <-cn.done:
		case <-c.ctx.Done():
			cn.shutdown()
		}
		cn.wg.Wait()
		c.mu.Lock()
		if c.conn == cn {
			c.conn = nil
		}
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		cause := cn.cause()
		c.log.Info("connection lost", "url", cn.url, "session", cn.welcome.session, "error", cause)
		if c.opts.OnDisconnect != nil {
			c.opts.OnDisconnect(cause)
		}
		var de *DisconnectError
		told := errors.As(cause, &de)
		if told && !de.Reconnect {
			c.fail(cause)
			return
		}
		c.setState(StateDisconnected)
		if told || time.Since(cn.started) >= c.opts.MaxBackoff {
			attempt = 0
		}
		delay := c.backoff(attempt)
		if told { // shutdown, slow_consumer, token_expired: at once, spread by the jitter
			delay = jitter(c.opts.MinBackoff)
		}
		for {
			if !c.sleep(delay) {
				return
			}
			c.setState(StateConnecting)
			next, err := c.connect(c.ctx)
			if err == nil {
				cn = next
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			if c.permanent(err) {
				c.log.Warn("giving up", "error", err)
				c.fail(err)
				return
			}
			c.log.Warn("reconnect failed", "attempt", attempt+1, "error", err)
			attempt++
			delay = c.backoff(attempt)
		}
		attempt++
		c.activate(cn)
	}
}

// fail closes the client because of err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.cancel()
}

// finish runs when the supervisor ends: the client is closed.
func (c *Client) finish() {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	cn := c.conn
	c.conn = nil
	subs := c.subs
	c.subs = map[string]*Subscription{}
	err := c.err
	c.mu.Unlock()
	if cn != nil {
		cn.shutdown()
		cn.wg.Wait()
	}
	for _, s := range subs {
		s.close(err)
	}
	c.directMu.Lock()
	c.directClosed = true
	close(c.direct)
	c.directMu.Unlock()
	c.setState(StateClosed)
	close(c.done)
}

// current waits for a live connection.
func (c *Client) current(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.ctx.Err() != nil {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		cn, wait := c.conn, c.connWait
		c.mu.Unlock()
		if cn != nil && !cn.isDone() {
			return cn, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// deliverDirect hands a message addressed to the session (or broadcast) to the application.
func (c *Client) deliverDirect(m Message) {
	if c.opts.IgnoreDirect {
		return
	}
	c.directMu.Lock()
	defer c.directMu.Unlock()
	if c.directClosed {
		return
	}
	select {
	case c.direct <- m:
	case <-c.ctx.Done():
	}
}

// Ping sends a `ping` frame and returns the time until its `pong`.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	f, err := c.roundTrip(ctx, cn, outFrame{Type: protocol.TypePing})
	if err != nil {
		return 0, err
	}
	if f.Type != protocol.TypePong {
		return 0, fmt.Errorf("wsclient: ping answered by %q", f.Type)
	}
	return time.Since(start), nil
}

// roundTrip sends one request on cn and waits for its reply (AckTimeout at most); an `error`
// reply is returned as an *Error.
func (c *Client) roundTrip(ctx context.Context, cn *conn, f outFrame) (*frame, error) {
	f.ID = c.nextID()
	reply := cn.expect(f.ID)
	defer cn.forget(f.ID)
	if !cn.enqueue(ctx, encode(f)) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrConnectionLost
	}
	r, err := c.await(ctx, cn, reply)
	if err == nil && r.Type == protocol.TypeError {
		return r, &Error{Code: r.Code, Message: r.Text}
	}
	return r, err
}
