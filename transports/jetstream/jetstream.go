// Package jetstream is the NATS JetStream broker: channel topics are kept in a bounded stream, so
// a client can resume from a position on any node (transports.History).
//
// Names on the broker, under Config.Prefix (P):
//
//	stream SafeName(P)_channels   subjects P.ch.>              every channel topic, with history
//	stream SafeName(P)_inbound    subjects P.inbound, P.events what services consume
//	core subject P.direct                                      TopicDirect (fan-out, no history)
//	core subject P.control                                     TopicControl (fan-out, no history)
//	core subject P.hooks                                       TopicHooks (queue group per group, nothing kept)
//	core subject P.replies                                     TopicReplies (fan-out, nothing kept)
//	subject P.ch.SafeName(channel)                             one channel topic
//	core subject P.live.SafeName(channel)                      the channel stream's RePublish of it
//	KV bucket SafeName(P)_presence                             presence (presence.go)
//	KV bucket SafeName(P)_control                              control records (control.go)
//
// Publishing goes through watermill-nats (pkg/nats, JetStream on, auto-provisioning off: the
// streams are created by the broker, and every publish carries Nats-Msg-Id = the message UUID so
// the stream drops a retried duplicate). A node reads a channel only while it has a local
// subscriber, through a core NATS subscription on the stream's republication of it, and reads
// the stream itself only to fill a gap (live.go); services compete through a durable consumer per
// group. docs/brokers/jetstream.md describes the names, the encoding, the cost
// of a message and what is left on the broker.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/internal/natsurl"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Defaults of Config.
const (
	DefaultURL              = natsurl.Default
	DefaultPrefix           = protocol.DefaultTopicPrefix
	DefaultMaxAge           = 24 * time.Hour
	DefaultMaxBytes         = 1 << 30
	DefaultReplicas         = 1
	DefaultDuplicateWindow  = 2 * time.Minute
	DefaultPublishTimeout   = transports.DefaultPublishTimeout
	DefaultAckWait          = 30 * time.Second
	DefaultHeartbeat        = 5 * time.Second
	DefaultReconnectWait    = time.Second
	DefaultMaxReconnectWait = 15 * time.Second
	DefaultCheckInterval    = 30 * time.Second
)

// Config of the jetstream broker. The zero value of every field means its default.
type Config struct {
	URL    string // nats.url: comma-separated server URLs; default DefaultURL
	Prefix string // topic_prefix: first token of every subject and stream name; default "ws"
	Name   string // connection name the server shows (the node id); optional

	// Retention of both streams (jetstream.max_age, jetstream.max_bytes); the oldest messages are
	// dropped first. MaxMsgs (default 0, no limit) caps the message count, mostly for tests.
	MaxAge   time.Duration
	MaxBytes int64
	MaxMsgs  int64
	// Replicas of the streams in a cluster (jetstream.replicas); default 1.
	Replicas int
	// DuplicateWindow (jetstream.duplicate_window): a message published again with the same UUID
	// within it is stored once; default 2m, at most MaxAge.
	DuplicateWindow time.Duration

	// PublishTimeout bounds the wait for the PubAck of each message and every other request.
	PublishTimeout time.Duration
	// AckWait is how long a service group's consumer waits for an ack before redelivering.
	AckWait time.Duration
	// Heartbeat is the idle heartbeat of the consumer of a plain (not group) Subscribe on
	// TopicInbound or TopicEvents (channels have no consumer): a subscription whose
	// consumer vanished (broker restart) is recreated after two missed heartbeats.
	Heartbeat time.Duration
	// ReconnectWait is the first delay between reconnect attempts; it doubles up to
	// MaxReconnectWait, with jitter.
	ReconnectWait    time.Duration
	MaxReconnectWait time.Duration
	// CheckInterval is how often the node checks that its streams still exist (and recreates
	// them); they are also checked on every reconnect.
	CheckInterval time.Duration

	// Presence are the settings of the node's presence (transports.Presence), kept in the KV
	// bucket SafeName(Prefix)_presence under the lease of node id Name (a random id when Name
	// is empty).
	Presence transports.PresenceConfig

	// Options are extra nats.go options (credentials, TLS), applied after the broker's own.
	Options []nats.Option
}

func (c *Config) setDefaults() {
	set := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	set(&c.MaxAge, DefaultMaxAge)
	set(&c.DuplicateWindow, min(DefaultDuplicateWindow, c.MaxAge))
	set(&c.PublishTimeout, DefaultPublishTimeout)
	set(&c.AckWait, DefaultAckWait)
	set(&c.Heartbeat, DefaultHeartbeat)
	set(&c.ReconnectWait, DefaultReconnectWait)
	set(&c.MaxReconnectWait, max(DefaultMaxReconnectWait, c.ReconnectWait))
	set(&c.CheckInterval, DefaultCheckInterval)
	set(&c.Presence.Heartbeat, transports.DefaultPresenceHeartbeat)
}

// Check applies the defaults to a copy of c and validates it, as New does, without connecting
// (gateway.Check, for -check-config).
func (c Config) Check() error {
	c.setDefaults()
	return c.Validate()
}

// Validate checks a Config after defaults were applied.
func (c *Config) Validate() error {
	switch {
	case strings.TrimSpace(c.URL) == "":
		return errors.New("jetstream: nats.url must not be empty")
	case natsurl.Check(c.URL) != nil:
		return fmt.Errorf("jetstream: nats.url: %w", natsurl.Check(c.URL))
	case c.Prefix == "" || strings.Trim(c.Prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "":
		return fmt.Errorf("jetstream: topic_prefix %q must be made of [A-Za-z0-9_-]", c.Prefix)
	case c.MaxAge < 0:
		return fmt.Errorf("jetstream: jetstream.max_age (%v) must not be negative", c.MaxAge)
	case c.MaxBytes < 0:
		return fmt.Errorf("jetstream: jetstream.max_bytes (%d) must not be negative", c.MaxBytes)
	case c.MaxMsgs < 0:
		return fmt.Errorf("jetstream: MaxMsgs (%d) must not be negative", c.MaxMsgs)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("jetstream: jetstream.replicas (%d) must be 1 to 5", c.Replicas)
	case c.DuplicateWindow < 0 || c.DuplicateWindow > c.MaxAge:
		return fmt.Errorf("jetstream: jetstream.duplicate_window (%v) must be between 0 and jetstream.max_age (%v)", c.DuplicateWindow, c.MaxAge)
	case c.PublishTimeout <= 0 || c.AckWait <= 0 || c.Heartbeat <= 0 || c.ReconnectWait <= 0 || c.CheckInterval <= 0:
		return errors.New("jetstream: PublishTimeout, AckWait, Heartbeat, ReconnectWait and CheckInterval must be positive")
	case c.Presence.Heartbeat < 10*time.Millisecond:
		return fmt.Errorf("jetstream: presence.heartbeat (%v) must be at least 10ms", c.Presence.Heartbeat)
	case c.MaxReconnectWait < c.ReconnectWait:
		return fmt.Errorf("jetstream: MaxReconnectWait (%v) must not be below ReconnectWait (%v)", c.MaxReconnectWait, c.ReconnectWait)
	}
	return nil
}

// Broker is one node's connection to NATS JetStream. Safe for concurrent use.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	given *nats.Conn // NewWithConn's connection; nil: Start connects

	// Set by Start before started is; read only after started was seen true.
	nc      *nats.Conn
	ownsNC  bool
	js      jetstream.JetStream // stream management, channel subscriptions, history
	pubJS   *wmnats.Publisher   // channel and service topics: JetStream, waits for the PubAck
	pubCore *wmnats.Publisher   // TopicDirect: core NATS
	started atomic.Bool
	startMu sync.Mutex // held by Start, and by Close so that it waits for a Start under way

	wmLog watermill.LoggerAdapter

	channels, inbound string // stream names
	codec             *codec

	ready    atomic.Bool // both streams exist
	kick     chan struct{}
	lineMu   sync.Mutex
	epochs   map[string]streamEpoch   // stream name -> what the node last saw of it
	lineage  map[string]chan struct{} // stream name -> closed when the stream was found recreated
	spans    map[string]time.Duration // stream name -> retentionSpan of its last info
	chStream jetstream.Stream         // the channel stream's handle, once fetched (live.go)

	// Channel subscriptions (live.go): core NATS subscriptions on the republished subjects that
	// share fan, read by the dispatcher.
	fan    chan *nats.Msg
	liveMu sync.Mutex
	live   map[*nats.Subscription]*liveSub
	// dropLive, in tests, drops republished messages before the dispatcher sees them (as core
	// NATS does while the node is disconnected).
	dropLive func(*nats.Msg) bool

	id string   // the node id of the presence lease: Config.Name or a random id
	pr presence // presence.go

	ctl controlBucket // control.go

	listTest listTest // kvlist.go; set by tests only

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	subMu     sync.Mutex     // orders wg.Add of a new subscription before Close's wait
	wg        sync.WaitGroup // the keeper and every subscription
}

var (
	_ transports.Broker  = (*Broker)(nil)
	_ transports.History = (*Broker)(nil)
)

// New returns a Broker that connects to NATS, and owns the connection, once started. It only
// checks cfg: no I/O, no goroutine until Start. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBroker(cfg, logger), nil
}

// NewWithConn returns a Broker over an existing connection, which the Broker does not close.
// The connection should have been made with nats.ReconnectBufSize(-1), or a publish during an
// outage waits PublishTimeout before it fails. Like New it starts nothing; Start chains the
// Broker's reconnect handler with the one already set, so that reconnects are noticed.
func NewWithConn(nc *nats.Conn, cfg Config, logger *slog.Logger) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("jetstream: nil connection")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := newBroker(cfg, logger)
	b.given = nc
	return b, nil
}

func newBroker(cfg Config, logger *slog.Logger) *Broker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:      cfg,
		log:      logger,
		wmLog:    watermill.NewSlogLogger(logger),
		channels: transports.SafeName(cfg.Prefix) + "_channels",
		inbound:  transports.SafeName(cfg.Prefix) + "_inbound",
		kick:     make(chan struct{}, 1),
		epochs:   map[string]streamEpoch{},
		lineage:  map[string]chan struct{}{},
		spans:    map[string]time.Duration{},
		fan:      make(chan *nats.Msg, nats.DefaultMaxChanLen),
		live:     map[*nats.Subscription]*liveSub{},
		ctx:      ctx,
		cancel:   cancel,
	}
	b.codec = &codec{b: b}
	b.id = cfg.Name
	if b.id == "" {
		b.id = randomID()
	}
	b.pr = presence{
		epoch:     randomID(),
		local:     map[string]map[string]protocol.Member{},
		rerecord:  make(chan struct{}, 1),
		activated: make(chan struct{}),
		retryGone: make(chan struct{}, 1),
		gone:      map[string]map[string]struct{}{},
		seen:      map[string]leaseSeen{},
		writers:   make(chan struct{}, maxWriters),
	}
	return b
}

// Start implements transports.Broker: it connects (New's Broker), provisions the streams when
// the server answers within PublishTimeout, and starts the keeper, which provisions them later
// otherwise and checks them every CheckInterval. The server may be down: the Broker reconnects
// by itself (with backoff), reports ErrUnavailable from Ping and Publish meanwhile, and creates
// the streams once it is connected. Start fails when nats.go refuses the connection's options
// (Config.Options: a TLS file that cannot be read).
func (b *Broker) Start(ctx context.Context) error {
	b.startMu.Lock()
	defer b.startMu.Unlock()
	switch {
	case b.closed():
		return transports.ErrClosed
	case b.started.Load():
		return nil
	}
	if nc := b.given; nc != nil {
		prev, prevErr := nc.Opts.ReconnectedCB, nc.Opts.AsyncErrorCB
		nc.SetReconnectHandler(func(c *nats.Conn) {
			if prev != nil {
				prev(c)
			}
			b.onConnect(c, "reconnected")
		})
		nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
			if prevErr != nil {
				prevErr(c, sub, err)
			}
			if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
				b.slowConsumer(sub)
			}
		})
		if err := b.start(ctx, nc, false); err != nil {
			// the caller's connection, as it was
			nc.SetReconnectHandler(prev)
			nc.SetErrorHandler(prevErr)
			return err
		}
		return nil
	}
	opts := []nats.Option{
		nats.Name(b.cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(b.reconnectDelay),
		nats.ReconnectBufSize(-1), // fail publishes at once while disconnected instead of buffering
		nats.Timeout(2 * time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(func(c *nats.Conn) { b.onConnect(c, "connected") }),
		nats.ReconnectHandler(func(c *nats.Conn) { b.onConnect(c, "reconnected") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
				b.slowConsumer(sub) // nats.go dropped republished messages of a channel
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if b.ctx.Err() == nil {
				b.log.Warn("jetstream: disconnected from nats", "error", err)
			}
		}),
	}
	nc, err := nats.Connect(b.cfg.URL, append(opts, b.cfg.Options...)...)
	if err != nil {
		return fmt.Errorf("jetstream: connect: %w", err)
	}
	if err := b.start(ctx, nc, true); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// start makes the JetStream context and the publishers over nc, provisions the streams once if
// nc is connected, and starts the keeper. Nothing runs when it fails.
func (b *Broker) start(ctx context.Context, nc *nats.Conn, owns bool) error {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(b.cfg.PublishTimeout))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	// Auto-provisioning stays off: it names the stream after the topic (a dotted subject is not a
	// legal stream name) and asks for the stream's info before every publish.
	pubCfg := wmnats.PublisherPublishConfig{
		Marshaler:         b.codec,
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream: wmnats.JetStreamConfig{
			TrackMsgId:     true,
			ConnectOptions: []nats.JSOpt{nats.MaxWait(b.cfg.PublishTimeout)},
		},
	}
	pubJS, err := wmnats.NewPublisherWithNatsConn(nc, pubCfg, b.wmLog)
	if err != nil {
		return fmt.Errorf("jetstream: publisher: %w", err)
	}
	pubCfg.JetStream = wmnats.JetStreamConfig{Disabled: true}
	pubCore, err := wmnats.NewPublisherWithNatsConn(nc, pubCfg, b.wmLog)
	if err != nil {
		return fmt.Errorf("jetstream: publisher: %w", err)
	}
	b.nc, b.ownsNC, b.js, b.pubJS, b.pubCore = nc, owns, js, pubJS, pubCore
	if nc.IsConnected() {
		pctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
		stop := context.AfterFunc(ctx, cancel) // Start's ctx bounds it too
		err := b.ensureStreams(pctx)           // and the presence bucket
		stop()
		cancel()
		if err != nil {
			b.log.Warn("jetstream: streams not ready yet, will retry", "error", err)
		}
	}
	b.subMu.Lock()
	defer b.subMu.Unlock()
	if b.closed() { // Close waits for Start, but Close's cancel comes first
		return transports.ErrClosed
	}
	b.wg.Add(5)
	b.started.Store(true)
	go b.dispatch()
	go b.keep()
	go b.renewLoop()
	go b.reapLoop()
	go b.rerecordLoop()
	return nil
}

// reconnectDelay doubles from ReconnectWait to MaxReconnectWait, with ±20% jitter.
func (b *Broker) reconnectDelay(attempts int) time.Duration {
	d := b.cfg.ReconnectWait
	for i := 1; i < attempts && d < b.cfg.MaxReconnectWait; i++ {
		d *= 2
	}
	d = min(d, b.cfg.MaxReconnectWait)
	return d - d/5 + rand.N(d*2/5+1)
}

// onConnect runs on nats.go's callback goroutine, possibly before New has set b.nc.
func (b *Broker) onConnect(nc *nats.Conn, what string) {
	if b.ctx.Err() != nil {
		return
	}
	b.log.Info("jetstream: "+what+" to nats", "url", nc.ConnectedUrlRedacted())
	b.signal()
	if what == "reconnected" && b.started.Load() {
		b.goProbeAll() // what was republished while disconnected is lost: read it from the stream
	}
}

func (b *Broker) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// keep provisions (creates or updates) the streams until they are ready, checks them when the
// connection comes back or a publish found a stream missing, and every CheckInterval, so a stream
// deleted or lost by the broker is recreated and a recreated stream is noticed.
func (b *Broker) keep() {
	defer b.wg.Done()
	failures := 0
	for {
		wait := b.cfg.CheckInterval
		if !b.ready.Load() {
			wait = min(b.cfg.ReconnectWait<<min(failures, 5), b.cfg.MaxReconnectWait)
		}
		t := time.NewTimer(wait)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-b.kick:
		case <-t.C:
		}
		t.Stop()
		if !b.nc.IsConnected() {
			b.ready.Store(false)
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
		var err error
		if !b.ready.Load() {
			err = b.ensureStreams(ctx)
		} else {
			// Provisioned before: a stream info (answered by the stream's leader) tells whether
			// the streams are still there, and creates them again if not. A create or update goes
			// through the cluster's meta leader: after a reconnect caused by a server lost, it
			// may time out while the meta group elects, which must not make a node whose
			// streams work refuse publishes (TestClusterLeaderLoss).
			err = b.checkStreams(ctx)
		}
		cancel()
		switch {
		case err == nil:
			failures = 0
		case b.ctx.Err() != nil:
			return
		default:
			failures++
			if failures == 1 {
				b.log.Warn("jetstream: cannot provision streams, retrying", "error", err)
			}
		}
	}
}

// streamConfigs are the two streams of the prefix.
func (b *Broker) streamConfigs() []jetstream.StreamConfig {
	base := jetstream.StreamConfig{
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     b.cfg.MaxAge,
		MaxBytes:   b.cfg.MaxBytes,
		MaxMsgs:    b.cfg.MaxMsgs,
		Duplicates: b.cfg.DuplicateWindow,
		Replicas:   b.cfg.Replicas,
		Storage:    jetstream.FileStorage,
	}
	if base.MaxMsgs == 0 {
		base.MaxMsgs = -1
	}
	ch, in := base, base
	ch.Name, ch.Subjects = b.channels, []string{b.cfg.Prefix + ".ch.>"}
	ch.Description = "wsgateway channel topics of prefix " + b.cfg.Prefix
	ch.RePublish = b.rePublish() // what nodes read (live.go)
	in.Name, in.Subjects = b.inbound, []string{b.subjectInbound(), b.subjectEvents()}
	in.Description = "wsgateway service topics of prefix " + b.cfg.Prefix
	return []jetstream.StreamConfig{ch, in}
}

// ensureStreams creates both streams, or updates one whose settings differ. A stream that exists
// but cannot be updated to our settings is used as it is, with a warning. Creating a stream that
// exists with the same settings changes nothing on the server; an update always rewrites the
// stream's configuration (and, in nats-server 2.15, races with consumers being created).
// It also creates (or opens) the presence bucket: ready means both streams and the bucket.
func (b *Broker) ensureStreams(ctx context.Context) error {
	for _, sc := range b.streamConfigs() {
		s, err := b.js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = b.js.UpdateStream(ctx, sc)
		}
		if err != nil {
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) {
				b.ready.Store(false)
				return fmt.Errorf("stream %s: %w", sc.Name, err)
			}
			if s, err = b.js.Stream(ctx, sc.Name); err != nil {
				b.ready.Store(false)
				return fmt.Errorf("stream %s: %w", sc.Name, err)
			}
			b.log.Warn("jetstream: stream exists with other settings, using it as it is", "stream", sc.Name, "error", apiErr)
		}
		if sc.RePublish != nil && !b.republishes(s.CachedInfo().Config) {
			// Channel subscriptions need the RePublish: add it to the stream as it is.
			cfg := s.CachedInfo().Config
			cfg.RePublish = sc.RePublish
			if s, err = b.js.UpdateStream(ctx, cfg); err != nil {
				b.ready.Store(false)
				return fmt.Errorf("stream %s does not republish on %s and the server refused to add it (nats-server before 2.10 cannot change a stream's RePublish: remove the stream once, which drops its history, or upgrade the server): %w",
					sc.Name, sc.RePublish.Destination, err)
			}
		}
		b.noteStream(s.CachedInfo())
	}
	// The presence bucket belongs to what must exist before the broker is ready: a node whose
	// Ping answered would otherwise refuse presence joins until a later renewal made it.
	if _, err := b.ensureBucket(ctx); err != nil {
		b.ready.Store(false)
		return err
	}
	if !b.ready.Swap(true) {
		b.log.Info("jetstream: streams ready", "streams", b.channels+","+b.inbound)
	}
	return nil
}

// checkStreams is the periodic check: a stream info each (no update, which in a cluster goes
// through the meta group); a missing stream is created again.
func (b *Broker) checkStreams(ctx context.Context) error {
	for _, name := range []string{b.channels, b.inbound} {
		s, err := b.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.log.Warn("jetstream: stream is gone, creating it again", "stream", name)
			return b.ensureStreams(ctx)
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		if name == b.channels && !b.republishes(s.CachedInfo().Config) {
			// Someone took it away (a node of an earlier build updating the stream to its own
			// settings): messages stored meanwhile were not republished.
			b.log.Warn("jetstream: stream does not republish its messages anymore, updating it", "stream", name)
			if err := b.ensureStreams(ctx); err != nil {
				return err
			}
			b.goProbeAll()
			return nil
		}
		b.noteStream(s.CachedInfo())
	}
	return nil
}

// Subjects of the logical topics.

func (b *Broker) subjectInbound() string { return b.cfg.Prefix + "." + protocol.TopicInbound }
func (b *Broker) subjectEvents() string  { return b.cfg.Prefix + "." + protocol.TopicEvents }
func (b *Broker) subjectDirect() string  { return b.cfg.Prefix + "." + protocol.TopicDirect }

// route maps a logical topic to its subject and to the stream that keeps it ("" for core NATS).
func (b *Broker) route(topic string) (subject, stream string, err error) {
	if ch, ok := protocol.ChannelOf(topic); ok {
		return b.cfg.Prefix + ".ch." + transports.SafeName(ch), b.channels, nil
	}
	switch topic {
	case protocol.TopicInbound:
		return b.subjectInbound(), b.inbound, nil
	case protocol.TopicEvents:
		return b.subjectEvents(), b.inbound, nil
	case protocol.TopicDirect:
		return b.subjectDirect(), "", nil
	case protocol.TopicControl:
		return b.cfg.Prefix + "." + protocol.TopicControl, "", nil
	case protocol.TopicHooks: // worthless after their deadline: a queue group keeps nothing
		return b.cfg.Prefix + "." + protocol.TopicHooks, "", nil
	case protocol.TopicReplies:
		return b.cfg.Prefix + "." + protocol.TopicReplies, "", nil
	}
	return "", "", fmt.Errorf("jetstream: unknown topic %q", topic)
}

func (b *Broker) closed() bool { return b.ctx.Err() != nil }

// unavailable wraps err in transports.ErrUnavailable unless the broker answered it (an API error
// such as a rejected message is not an outage).
func unavailable(what string, err error) error {
	var apiErr *nats.APIError
	var apiErr2 *jetstream.APIError
	if errors.As(err, &apiErr) || errors.As(err, &apiErr2) || errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, errBadHeader) {
		return fmt.Errorf("jetstream: %s: %w", what, err)
	}
	return fmt.Errorf("jetstream: %s: %w: %w", what, transports.ErrUnavailable, err)
}

// usable is nil once Start has run and until Close: ErrNotStarted before, ErrClosed after.
func (b *Broker) usable() error {
	switch {
	case b.closed():
		return transports.ErrClosed
	case !b.started.Load():
		return transports.ErrNotStarted
	}
	return nil
}

func (b *Broker) checkUp() error {
	if err := b.usable(); err != nil {
		return err
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("jetstream: %w: connection %s", transports.ErrUnavailable, st)
	}
	return nil
}

// Publish implements transports.Broker: on a stream it returns after the PubAck of every
// message (at most PublishTimeout each); on TopicDirect after a round trip proving the server
// has the messages.
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	if err := b.checkUp(); err != nil {
		return err
	}
	subject, stream, err := b.route(topic)
	if err != nil {
		return err
	}
	if stream == "" {
		if err := b.pubCore.Publish(subject, msgs...); err != nil {
			return unavailable("publish", err)
		}
		if err := b.nc.FlushTimeout(b.cfg.PublishTimeout); err != nil {
			return unavailable("publish", err)
		}
		return nil
	}
	if !b.ready.Load() {
		b.signal()
		return fmt.Errorf("jetstream: %w: streams not provisioned yet", transports.ErrUnavailable)
	}
	if err := b.pubJS.Publish(subject, msgs...); err != nil {
		if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			b.signal() // the stream is gone: let the keeper recreate it
		}
		return unavailable("publish", err)
	}
	return nil
}

var (
	_ transports.PositionPublisher = (*Broker)(nil)
	_ transports.ReverseHistory    = (*Broker)(nil)
)

// PublishPositions implements transports.PositionPublisher. A channel topic's messages are
// published one by one, each waiting for its PubAck, whose stream sequence is the position (a
// duplicate within the stream's duplicate window gets the sequence of the message it repeats);
// other topics go through Publish.
func (b *Broker) PublishPositions(topic string, msgs ...*message.Message) ([]protocol.Position, error) {
	if !protocol.IsChannelTopic(topic) {
		return nil, b.Publish(topic, msgs...)
	}
	if err := b.checkUp(); err != nil {
		return nil, err
	}
	subject, _, err := b.route(topic)
	if err != nil {
		return nil, err
	}
	if !b.ready.Load() {
		b.signal()
		return nil, fmt.Errorf("jetstream: %w: streams not provisioned yet", transports.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
	defer cancel()
	epoch := b.cachedEpoch(b.channels)
	if epoch == "" {
		if _, epoch, err = b.streamInfo(ctx, b.channels); err != nil {
			return nil, err
		}
	}
	pos := make([]protocol.Position, len(msgs))
	for i, m := range msgs {
		nm, err := b.codec.Marshal(subject, m)
		if err != nil {
			return nil, fmt.Errorf("jetstream: publish: %w", err)
		}
		if m.UUID != "" {
			nm.Header.Set(nats.MsgIdHdr, m.UUID) // as the Watermill publisher's TrackMsgId
		}
		ack, err := b.js.PublishMsg(ctx, nm)
		if err != nil {
			if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
				b.signal()
			}
			return nil, unavailable("publish", err)
		}
		pos[i] = protocol.Position{Epoch: epoch, Lo: ack.Sequence}
	}
	return pos, nil
}

// Ping implements transports.Broker: connected, streams provisioned, and a round trip.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.checkUp(); err != nil {
		return err
	}
	if !b.ready.Load() {
		b.signal()
		return fmt.Errorf("jetstream: %w: streams not provisioned yet", transports.ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close ends every subscription (deleting their consumers when the broker is reachable), stops
// the presence lease renewal and reaper, and closes the connection when the Broker made it. It
// does not remove the node's presence members: a clean shutdown leaves them first (Leave), and
// those of a node that stopped without leaving are reaped by the other nodes once its lease ran
// out. Bounded by about PublishTimeout (twice that when a Start is under way); safe to call
// twice, and before Start.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.subMu.Lock()
		b.cancel()
		b.subMu.Unlock()
		b.endLive()
		b.startMu.Lock() // a Start under way ends (its provisioning was just cancelled)
		defer b.startMu.Unlock()
		if !b.started.Load() {
			return
		}
		done := make(chan struct{})
		go func() { b.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(b.cfg.PublishTimeout + time.Second):
			b.log.Warn("jetstream: subscriptions slow to stop, closing the connection")
		}
		if b.ownsNC {
			b.nc.Close()
		}
		<-done // everything fails fast once the connection is closed
	})
	return nil
}
