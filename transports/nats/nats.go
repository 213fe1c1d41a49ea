// Package nats is the core NATS broker: at-most-once, no history.
//
// Every logical topic is one subject under the prefix (see Subject). A node holds one NATS
// subscription per Subscribe call, so the server routes a channel's messages only to the nodes
// that have a local subscriber on it; SubscribeGroup is a NATS queue group. Hook calls: requests
// on P.hooks, consumed by the services' queue group P.hooks (protocol.HooksGroup), and replies on
// P.replies, which every node subscribes to once; nothing is kept, so a request nobody is
// subscribed for is gone at once. Metadata travels in NATS headers, the payload as the message
// body, exactly as watermill-nats' NATSMarshaler writes them, so `nats pub` can talk to the
// gateway. Nothing is stored on the server: the
// broker does not implement transports.History and resuming clients get recovered:false. It
// implements transports.Presence between its nodes, which hold the members (presence.go).
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/internal/natsurl"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Defaults of Config.
const (
	DefaultPrefix          = protocol.DefaultTopicPrefix
	DefaultTimeout         = transports.DefaultPublishTimeout
	DefaultReconnectWait   = 2 * time.Second
	DefaultReconnectJitter = time.Second
	DefaultPingInterval    = 20 * time.Second
	DefaultPendingLimit    = 65536
)

// Config connects a node to NATS.
type Config struct {
	// URL lists the servers, comma-separated ("nats://127.0.0.1:4222"). Required by New.
	URL string
	// Prefix starts every subject and queue group the broker uses (GATEWAY_TOPIC_PREFIX):
	// one or more tokens of [A-Za-z0-9_-] separated by dots. Default "ws".
	Prefix string
	// Name is the connection name the server shows (the node id). Optional.
	Name string
	// Timeout bounds the dial of one server and each wait for the server's confirmation in
	// Publish, Subscribe and Ping. Default 5s.
	Timeout time.Duration
	// ReconnectWait is the pause before the server list is tried again after every server
	// failed; ReconnectJitter adds up to that much at random so nodes do not come back in step.
	// Defaults 2s and 1s. The client reconnects forever.
	ReconnectWait   time.Duration
	ReconnectJitter time.Duration
	// PingInterval is how often the client pings the server; two unanswered pings drop the
	// connection, which then reconnects. Default 20s.
	PingInterval time.Duration
	// PendingLimit is how many messages a fan-out subscription may have waiting for its consumer;
	// one more ends the subscription (slow consumer), so that its clients resume. Default
	// DefaultPendingLimit.
	PendingLimit int
	// Presence are the settings of the node's presence (transports.Presence): its Heartbeat
	// (default transports.DefaultPresenceHeartbeat, at least 10ms). The node's id in presence is
	// Name (a random one when Name is empty).
	Presence transports.PresenceConfig
	// Options are more nats.go options (credentials, TLS), applied after the broker's own (a
	// ClosedHandler given here makes Close wait Timeout for a signal that does not come).
	Options []natsgo.Option
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.ReconnectJitter == 0 {
		c.ReconnectJitter = DefaultReconnectJitter
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PendingLimit == 0 {
		c.PendingLimit = DefaultPendingLimit
	}
	if c.Presence.Heartbeat == 0 {
		c.Presence.Heartbeat = transports.DefaultPresenceHeartbeat
	}
}

// Check applies the defaults to a copy of c and validates it, as New does, without connecting
// (gateway.Check, for -check-config).
func (c Config) Check() error {
	c.setDefaults()
	return c.Validate()
}

// Validate checks the settings, naming the one that is wrong.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.URL) == "" {
		return errors.New("nats: Config.URL must not be empty")
	}
	if err := natsurl.Check(c.URL); err != nil {
		return fmt.Errorf("nats: Config.URL: %w", err)
	}
	return c.validateRest()
}

// validateRest checks everything but URL (NewWithConn has no use for it).
func (c *Config) validateRest() error {
	for _, tok := range strings.Split(c.Prefix, ".") {
		if tok == "" || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			return fmt.Errorf("nats: Config.Prefix %q must be tokens of [A-Za-z0-9_-] separated by dots", c.Prefix)
		}
	}
	if c.Timeout < time.Millisecond {
		return errors.New("nats: Config.Timeout must be at least 1ms")
	}
	if c.ReconnectWait < time.Millisecond {
		return errors.New("nats: Config.ReconnectWait must be at least 1ms (no tight reconnect loop)")
	}
	if c.ReconnectJitter < 0 {
		return errors.New("nats: Config.ReconnectJitter must not be negative")
	}
	if c.PendingLimit < 0 {
		return errors.New("nats: Config.PendingLimit must not be negative")
	}
	if c.PingInterval < 100*time.Millisecond {
		return errors.New("nats: Config.PingInterval must be at least 100ms")
	}
	if c.Presence.Heartbeat < 10*time.Millisecond {
		return fmt.Errorf("nats: presence.heartbeat (%v) must be at least 10ms", c.Presence.Heartbeat)
	}
	return nil
}

// Subject is the NATS subject of a logical topic under prefix: "<prefix>.ch.<SafeName(channel)>"
// for a channel topic (the channel is one token, whatever dots it has), otherwise "<prefix>."
// followed by the topic's dot-separated parts, each mapped with transports.SafeName
// ("ws.direct", "ws.inbound", "ws.events"). The mapping is injective and never yields wildcards.
func Subject(prefix, topic string) string {
	if ch, ok := protocol.ChannelOf(topic); ok {
		return prefix + ".ch." + transports.SafeName(ch)
	}
	parts := strings.Split(topic, ".")
	for i, p := range parts {
		parts[i] = transports.SafeName(p)
	}
	return prefix + "." + strings.Join(parts, ".")
}

// QueueGroup is the NATS queue group of a SubscribeGroup group: "<prefix>.<SafeName(group)>".
func QueueGroup(prefix, group string) string {
	return prefix + "." + transports.SafeName(group)
}

// Broker is one node's connection to NATS. Safe for concurrent use.
type Broker struct {
	cfg         Config
	given       *natsgo.Conn // NewWithConn's connection; nil: Start connects
	unmarshaler wmnats.Unmarshaler
	logger      *slog.Logger

	// Set by Start, before started; read only after started was seen under mu.
	nc         *natsgo.Conn
	owned      bool          // Start made nc: Close closes it, and its handlers are ours
	connClosed chan struct{} // closed by the ClosedHandler of an owned connection
	pub        *wmnats.Publisher
	afterPub   func() // tests only: runs in Publish between the PUBs and the PING

	ctx    context.Context // cancelled by Close; ends every subscription
	cancel context.CancelFunc

	startMu sync.Mutex // held by Start, and by Close so that it waits for a Start under way
	mu      sync.Mutex // guards started, closed and wg.Add against Close
	started bool
	closed  bool
	wg      sync.WaitGroup // the dispatcher, and one per subscription and goroutine

	// Fan-out subscriptions are nats.go channel subscriptions that share fan, read by one
	// dispatcher goroutine, which queues each message on its subscription's relay.
	fan     chan *natsgo.Msg
	fanMu   sync.Mutex
	fanSubs map[*natsgo.Subscription]*funcSub

	// link is cancelled when the connection to the server is lost: core NATS drops what is
	// published meanwhile, so fan-out subscriptions end then, and the node tells its clients
	// (they resume and learn recovered:false) instead of letting them miss messages silently.
	linkMu     sync.Mutex
	link       context.Context
	linkCancel context.CancelFunc

	pr *presence // transports.Presence (presence.go)
}

// linkLost ends the fan-out subscriptions of the connection that was just lost.
func (b *Broker) linkLost() {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	b.linkCancel()
	b.link, b.linkCancel = context.WithCancel(context.Background())
}

func (b *Broker) currentLink() context.Context {
	b.linkMu.Lock()
	defer b.linkMu.Unlock()
	return b.link
}

var (
	_ transports.Broker         = (*Broker)(nil)
	_ transports.FuncSubscriber = (*Broker)(nil)
)

// New returns a Broker that connects to cfg.URL, and owns the connection, once started. It only
// checks cfg: no I/O, no goroutine until Start.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBroker(nil, cfg, logger), nil
}

// NewWithConn returns a Broker over a connection the caller owns and closes (after the
// Broker). cfg.URL is ignored. For Publish to fail fast during an outage the connection should
// not buffer while reconnecting (nats.ReconnectBufSize(-1)); the Broker also checks its status.
// Like New it starts nothing: Start makes the publisher and starts the dispatcher.
func NewWithConn(nc *natsgo.Conn, cfg Config, logger *slog.Logger) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("nats: nil connection")
	}
	cfg.setDefaults()
	if err := cfg.validateRest(); err != nil {
		return nil, err
	}
	return newBroker(nc, cfg, logger), nil
}

func newBroker(given *natsgo.Conn, cfg Config, logger *slog.Logger) *Broker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	link, linkCancel := context.WithCancel(context.Background())
	id := cfg.Name
	if id == "" {
		id = "nats-" + strings.TrimPrefix(natsgo.NewInbox(), natsgo.InboxPrefix)
	}
	return &Broker{
		pr:          newPresence(id, cfg.Presence.Heartbeat),
		cfg:         cfg,
		given:       given,
		unmarshaler: &wmnats.NATSMarshaler{},
		logger:      logger,
		ctx:         ctx,
		cancel:      cancel,
		link:        link,
		linkCancel:  linkCancel,
		fan:         make(chan *natsgo.Msg, natsgo.DefaultMaxChanLen),
		fanSubs:     map[*natsgo.Subscription]*funcSub{},
	}
}

// Start implements transports.Broker: it connects (New's Broker) and starts the dispatcher of
// the fan-out subscriptions. A server that is down is not an error: the client keeps trying
// (ReconnectWait plus jitter between rounds), Ping reports it and Publish fails with
// transports.ErrUnavailable meanwhile. Start fails when nats.go refuses the connection's options
// (Config.Options: a TLS file that cannot be read).
func (b *Broker) Start(ctx context.Context) error {
	b.startMu.Lock()
	defer b.startMu.Unlock()
	b.mu.Lock()
	closed, started := b.closed, b.started
	b.mu.Unlock()
	switch {
	case closed:
		return transports.ErrClosed
	case started:
		return nil
	}
	nc, owned, connClosed := b.given, false, make(chan struct{})
	if nc == nil {
		var err error
		if nc, err = natsgo.Connect(b.cfg.URL, append(b.options(connClosed), b.cfg.Options...)...); err != nil {
			return fmt.Errorf("nats: connect: %w", err)
		}
		owned = true
	}
	pub, err := wmnats.NewPublisherWithNatsConn(nc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         wmnats.JetStreamConfig{Disabled: true},
	}, watermill.NewSlogLogger(b.logger))
	if err != nil {
		if owned {
			closeConn(nc, connClosed, b.cfg.Timeout)
		}
		return fmt.Errorf("nats: publisher: %w", err)
	}
	b.mu.Lock()
	b.nc, b.owned, b.connClosed, b.pub = nc, owned, connClosed, pub
	if err := b.startPresence(); err != nil {
		b.mu.Unlock()
		if owned {
			closeConn(nc, connClosed, b.cfg.Timeout)
		}
		return fmt.Errorf("nats: presence: %w", err)
	}
	b.started = true
	b.wg.Add(1)
	b.mu.Unlock()
	go b.dispatch()
	b.afterStart(ctx)
	return nil
}

// options are the nats.go options of a connection Start makes; connClosed is closed when the
// connection is.
func (b *Broker) options(connClosed chan struct{}) []natsgo.Option {
	cfg, logger := b.cfg, b.logger
	return []natsgo.Option{
		natsgo.Name(cfg.Name),
		natsgo.Timeout(cfg.Timeout),
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(cfg.ReconnectWait),
		natsgo.ReconnectJitter(cfg.ReconnectJitter, cfg.ReconnectJitter),
		// No buffering while disconnected: Publish must fail, not pretend the broker took it.
		natsgo.ReconnectBufSize(-1),
		natsgo.PingInterval(cfg.PingInterval),
		natsgo.MaxPingsOutstanding(2),
		natsgo.ConnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats connected", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.DisconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if !nc.IsClosed() { // Close reports a disconnect too
				logger.Warn("nats disconnected, reconnecting; fan-out subscriptions end", "error", err)
				b.linkLost()
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			if sub != nil {
				logger.Warn("nats subscription error", "subject", sub.Subject, "error", err)
				if errors.Is(err, natsgo.ErrSlowConsumer) {
					b.dropped(sub)
				}
				return
			}
			logger.Warn("nats error", "error", err)
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) { close(connClosed) }),
	}
}

// hbOptions are the nats.go options of the heartbeat connection (presence.go), which a Broker
// that takes part makes as its own: the connection's settings, none of the main connection's
// duties (its loss ends no fan-out subscription); connClosed is closed when it is.
func (b *Broker) hbOptions(connClosed chan struct{}) []natsgo.Option {
	cfg, logger := b.cfg, b.logger.With("connection", "heartbeats")
	return []natsgo.Option{
		natsgo.Name(cfg.Name + " heartbeats"),
		natsgo.Timeout(cfg.Timeout),
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(cfg.ReconnectWait),
		natsgo.ReconnectJitter(cfg.ReconnectJitter, cfg.ReconnectJitter),
		natsgo.ReconnectBufSize(-1),
		natsgo.PingInterval(cfg.PingInterval),
		natsgo.MaxPingsOutstanding(2),
		natsgo.DisconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if !nc.IsClosed() {
				logger.Warn("nats disconnected, reconnecting", "error", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			if sub != nil {
				logger.Warn("nats subscription error", "subject", sub.Subject, "error", err)
				return
			}
			logger.Warn("nats error", "error", err)
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) { close(connClosed) }),
	}
}

// closeConn closes a connection Start made and waits (at most timeout) for the client's
// callback goroutine to report it, so that nothing of it runs or logs after.
func closeConn(nc *natsgo.Conn, connClosed <-chan struct{}, timeout time.Duration) {
	nc.Close()
	wait := time.NewTimer(timeout)
	defer wait.Stop()
	select {
	case <-connClosed:
	case <-wait.C:
	}
}

// usable is nil once Start has run and until Close: ErrNotStarted before, ErrClosed after.
func (b *Broker) usable() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return transports.ErrClosed
	case !b.started:
		return transports.ErrNotStarted
	}
	return nil
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// unavailable wraps err as transports.ErrUnavailable, unless the broker was closed or err is
// about the message rather than the broker.
func (b *Broker) unavailable(what string, err error) error {
	switch {
	case b.isClosed():
		return transports.ErrClosed
	case errors.Is(err, natsgo.ErrMaxPayload), errors.Is(err, natsgo.ErrBadSubject),
		errors.Is(err, natsgo.ErrHeadersNotSupported), errors.Is(err, natsgo.ErrBadQueueName):
		return fmt.Errorf("nats: %s: %w", what, err)
	default:
		return fmt.Errorf("%w: nats: %s: %w", transports.ErrUnavailable, what, err)
	}
}

// Publish implements transports.Broker: one PUB per message through watermill-nats, then one
// PING/PONG round trip, so that nil means the server has read every message. If the connection
// was lost and made again meanwhile, the PONG does not say so, and Publish fails. While the
// client is not connected it fails at once with transports.ErrUnavailable.
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	if err := b.usable(); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if st := b.nc.Status(); st != natsgo.CONNECTED {
		return fmt.Errorf("%w: nats connection is %s", transports.ErrUnavailable, st)
	}
	subject := Subject(b.cfg.Prefix, topic)
	epoch := b.nc.Stats().Reconnects
	if err := b.pub.Publish(subject, msgs...); err != nil {
		return b.unavailable("publish to "+subject, err)
	}
	if b.afterPub != nil {
		b.afterPub()
	}
	if err := b.nc.FlushTimeout(b.cfg.Timeout); err != nil {
		return b.unavailable("confirm publish to "+subject, err)
	}
	if b.nc.Stats().Reconnects != epoch {
		// The PONG came over a newer connection than the PUBs went out on: that one may have
		// been lost before the server read them (a PING written while nats.go reconnects waits
		// in its pending buffer and is answered by the next server).
		return fmt.Errorf("%w: nats: confirm publish to %s: the connection was lost and made again", transports.ErrUnavailable, subject)
	}
	return nil
}

// Subscribe implements transports.Broker with one plain NATS subscription (SubscribeFunc),
// ended when ctx is done. Every subscription of every node gets every message.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return transports.SubscribeChan(ctx, b, topic)
}

// SubscribeFunc implements transports.FuncSubscriber with one nats.go subscription that delivers into
// the node's shared channel: the node's one dispatcher goroutine queues each message on the
// subscription's transports.Relay, which hands it to deliver, the next only after an ack (a
// nack hands it again). An idle subscription holds no goroutine and no buffer. It ends when ctx
// is done, the node closes, the connection to the server is lost (core NATS drops what is
// published meanwhile, see Broker.link), or when it fell too far behind: PendingLimit messages
// waiting for its consumer, or nats.go dropped messages of it (the node's dispatcher fell
// behind). Its consumer then resumes and learns what was lost, instead of missing it.
func (b *Broker) SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error {
	subject := Subject(b.cfg.Prefix, topic)
	h := &funcSub{b: b, topic: topic}
	h.Init(ctx)
	cancel := h.Cancel
	h.relay = transports.NewRelay(h.Context(), cancel, transports.RelayConfig{
		Deliver: deliver, Limit: b.cfg.PendingLimit, WG: &b.wg,
	})
	// The connection this subscription starts on: if it is lost, even before the subscription is
	// fully set up, the subscription ends (see Broker.link).
	link := b.currentLink()
	b.mu.Lock()
	if b.closed || !b.started {
		b.mu.Unlock()
		h.Cancel()
		if b.closed {
			return transports.ErrClosed
		}
		return transports.ErrNotStarted
	}
	b.fanMu.Lock() // the dispatcher finds h for the first message already
	sub, err := b.nc.ChanSubscribe(subject, b.fan)
	if err != nil {
		b.fanMu.Unlock()
		b.mu.Unlock()
		h.Cancel()
		return b.unavailable("subscribe to "+subject, err)
	}
	h.sub = sub
	b.fanSubs[sub] = h
	b.fanMu.Unlock()
	b.wg.Add(1) // done when the subscription ends
	b.mu.Unlock()

	// Wait until the server has the interest, so what is published next is delivered. While
	// disconnected there is no server to ask: nats.go sends the SUB again when it reconnects.
	if b.nc.Status() == natsgo.CONNECTED {
		if err := b.nc.FlushTimeout(b.cfg.Timeout); err != nil && b.nc.Status() == natsgo.CONNECTED {
			h.Cancel()
			h.stop()
			b.wg.Done()
			return b.unavailable("confirm subscription to "+subject, err)
		}
	}
	stopNode := context.AfterFunc(b.ctx, cancel)
	stopLink := context.AfterFunc(link, cancel)
	h.Start(ctx, func() {
		h.stop()
		stopNode()
		stopLink()
		ended()
		b.wg.Done()
	})
	return nil
}

// funcSub is a subscription of SubscribeFunc.
type funcSub struct {
	transports.Ending // Cancel ends the subscription
	b                 *Broker
	relay             *transports.Relay
	sub               *natsgo.Subscription
	topic             string
}

// log is the subscription's logger, made when it has something to say (a lost message, its
// end): a logger with attributes costs a few hundred bytes, which every channel subscription of
// a node would otherwise hold for its life.
func (h *funcSub) log() *slog.Logger {
	return h.b.logger.With("topic", h.topic, "subject", h.sub.Subject) // h.sub is set before any message
}

// dispatch hands each message of the shared channel to its subscription, until Close.
func (b *Broker) dispatch() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case nm := <-b.fan:
			b.fanMu.Lock()
			h := b.fanSubs[nm.Sub]
			b.fanMu.Unlock()
			if h != nil { // else unsubscribed meanwhile
				h.handle(nm)
			}
		}
	}
}

const whyDropped = "nats dropped messages of this subscription (the node fell behind)"

// dropped ends the fan-out subscription sub, of which nats.go dropped messages (slow consumer):
// the error handler of a connection New made reports it at once.
func (b *Broker) dropped(sub *natsgo.Subscription) {
	b.fanMu.Lock()
	h := b.fanSubs[sub]
	b.fanMu.Unlock()
	if h != nil {
		h.end(whyDropped)
	}
}

// handle queues one message of the subscription on its relay.
func (h *funcSub) handle(nm *natsgo.Msg) {
	if h.Context().Err() != nil {
		return
	}
	if !h.b.owned { // no error handler of ours reports drops: look at each message
		if n, _ := h.sub.Dropped(); n > 0 {
			h.end(whyDropped)
			return
		}
	}
	if len(nm.Data) == 0 && nm.Header.Get("Status") == "503" {
		return // a no-responders status, not a publication
	}
	msg, err := h.b.unmarshaler.Unmarshal(nm)
	if err != nil {
		h.log().Warn("nats message dropped: cannot decode headers", "error", err.Error())
		return
	}
	if !h.relay.Offer(msg, 0) {
		h.end(fmt.Sprintf("its consumer let %d messages wait", max(h.b.cfg.PendingLimit, 1)))
	}
}

// end ends the subscription after a loss, so that its clients resume.
func (h *funcSub) end(why string) {
	if h.Context().Err() == nil {
		h.log().Warn("nats subscription ended so that its clients resume: " + why)
		h.Cancel()
	}
}

// stop unsubscribes and waits for the message being delivered, if any: nothing is delivered
// after it returns.
func (h *funcSub) stop() {
	_ = h.sub.Unsubscribe()
	h.b.fanMu.Lock()
	delete(h.b.fanSubs, h.sub)
	h.b.fanMu.Unlock()
	h.relay.Close()
}

// SubscribeGroup implements transports.Broker with a NATS queue group named by QueueGroup.
// Core NATS keeps nothing: what is published while no member is subscribed is lost.
func (b *Broker) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	if group == "" {
		return nil, errors.New("nats: empty group")
	}
	return b.subscribe(ctx, topic, QueueGroup(b.cfg.Prefix, group))
}

// subscribe is SubscribeGroup's: a queue subscription that nats.go buffers, read by a goroutine
// of its own. It reads with nats.go directly and decodes with watermill-nats' NATSMarshaler. The
// watermill-nats subscriber does not fit core NATS here: it drops a nacked message (Nack needs a
// JetStream reply subject), never confirms its SUB with a flush, and can send on its closed
// output channel when a subscription ends while a message is being handed over.
func (b *Broker) subscribe(ctx context.Context, topic, queue string) (<-chan *message.Message, error) {
	subject := Subject(b.cfg.Prefix, topic)
	b.mu.Lock()
	if b.closed || !b.started {
		b.mu.Unlock()
		if b.closed {
			return nil, transports.ErrClosed
		}
		return nil, transports.ErrNotStarted
	}
	sub, err := b.nc.QueueSubscribeSync(subject, queue)
	if err != nil {
		b.mu.Unlock()
		return nil, b.unavailable("subscribe to "+subject, err)
	}
	b.wg.Add(1)
	b.mu.Unlock()

	// Wait until the server has the interest, so what is published next is delivered. While
	// disconnected there is no server to ask: nats.go sends the SUB again when it reconnects.
	if b.nc.Status() == natsgo.CONNECTED {
		if err := b.nc.FlushTimeout(b.cfg.Timeout); err != nil && b.nc.Status() == natsgo.CONNECTED {
			_ = sub.Unsubscribe()
			b.wg.Done()
			return nil, b.unavailable("confirm subscription to "+subject, err)
		}
	}

	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	out := make(chan *message.Message)
	go func() {
		defer b.wg.Done()
		defer close(out)
		defer cancel()
		defer stop()
		defer func() { _ = sub.Unsubscribe() }()
		b.run(sctx, sub, out, b.logger.With("topic", topic, "subject", subject))
	}()
	return out, nil
}

// run hands the subscription's messages to out one at a time until ctx is done.
func (b *Broker) run(ctx context.Context, sub *natsgo.Subscription, out chan<- *message.Message, log *slog.Logger) {
	for {
		nm, err := sub.NextMsgWithContext(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, natsgo.ErrSlowConsumer):
			log.Warn("nats dropped messages of a slow subscription")
			continue
		case errors.Is(err, natsgo.ErrNoResponders):
			// An empty message with a 503 status line: nats.go consumed it; not ours to end on.
			log.Warn("nats message dropped: no-responders status")
			continue
		case err != nil:
			log.Warn("nats subscription ended", "error", err)
			return
		}
		msg, err := b.unmarshaler.Unmarshal(nm)
		if err != nil {
			log.Warn("nats message dropped: cannot decode headers", "error", err.Error())
			continue
		}
		send := func(c *message.Message) bool {
			select {
			case out <- c:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if transports.DeliverUntilAcked(ctx, msg, send) != transports.Acked {
			return
		}
	}
}

// Ping implements transports.Broker: the connection is up and the server answers a PING, and
// the heartbeat connection of a node that takes part in presence is up.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.usable(); err != nil {
		return err
	}
	if st := b.nc.Status(); st != natsgo.CONNECTED {
		return fmt.Errorf("%w: nats connection is %s", transports.ErrUnavailable, st)
	}
	if hc := b.pr.hbc.Load(); hc != nil && hc.Status() != natsgo.CONNECTED {
		return fmt.Errorf("%w: nats heartbeat connection is %s", transports.ErrUnavailable, hc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return b.unavailable("ping", err)
	}
	return nil
}

// Close ends every subscription and closes the connection if the Broker owns it. Safe to call
// twice, and before Start; bounded by Config.Timeout, after a Start under way, whose first dial
// takes at most Config.Timeout per server of the URL.
func (b *Broker) Close() error {
	b.startMu.Lock() // a Start under way finishes first (bounded by Config.Timeout)
	defer b.startMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	b.cancel()
	if !started {
		return nil
	}
	b.closePresence()

	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		close(done)
	}()
	deadline := time.NewTimer(b.cfg.Timeout)
	defer deadline.Stop()
	select {
	case <-done:
	case <-deadline.C:
		b.logger.Warn("nats subscriptions did not stop in time", "timeout", b.cfg.Timeout)
	}
	if b.owned {
		// What the node published last (a backup copy of its last join) reaches the server
		// before the socket closes: a socket closed with unread data sends a reset, and the
		// server may lose what it had not yet read.
		if b.nc.Status() == natsgo.CONNECTED {
			_ = b.nc.FlushTimeout(b.cfg.Timeout)
		}
		closeConn(b.nc, b.connClosed, b.cfg.Timeout)
	}
	b.closeHeartbeatConn()
	return nil
}
