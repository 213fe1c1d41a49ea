// Package kafka is the Kafka broker of the gateway: watermill-kafka publishes, sarama consumes.
//
// Kafka does not route by subject, so every channel shares one topic with a fixed number of
// partitions that every node reads (see docs/brokers/kafka.md). Names, with p = SafeName(Prefix):
//
//	p.channels  every channel topic; key = channel name, header "channel" = channel name
//	p.direct    TopicDirect (1 partition, every node reads all of it)
//	p.control   TopicControl (1 partition, every node reads all of it)
//	p.hooks     TopicHooks   (ServicePartitions partitions, read in the services' group; short retention)
//	p.replies   TopicReplies (1 partition, every node reads all of it from its newest offset; short retention)
//	p.control-state the control store (1 partition, compacted, read whole: control.go)
//	p.inbound   TopicInbound (ServicePartitions partitions; services read it in groups)
//	p.events    TopicEvents  (ServicePartitions partitions)
//	p.presence  presence: 1 partition, cleanup.policy=compact (presence.go)
//
// A position is the partition offset of the channel's partition: Epoch names the topic, the
// partition and the topic's id (a re-created topic is a new epoch), Lo = offset + 1, so the zero
// Lo of an epoch means "before the first message" and Replay(Last()) returns what comes next.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Defaults of Config.
const (
	DefaultPrefix             = protocol.DefaultTopicPrefix
	DefaultPartitions         = 16
	DefaultServicePartitions  = 1
	DefaultRetention          = 24 * time.Hour
	DefaultReplicationFactor  = 1
	DefaultClientID           = "wsgateway"
	DefaultDialTimeout        = 3 * time.Second
	DefaultPublishTimeout     = transports.DefaultPublishTimeout
	DefaultOperationTimeout   = 10 * time.Second
	DefaultSubscriptionBuffer = 1024
	DefaultSlowTimeout        = time.Second
)

// HookRetention is the longest retention.ms of the hooks and replies topics (Retention when
// shorter): a hook request or reply is worthless after its deadline, seconds away.
const HookRetention = 10 * time.Minute

// maxPartitions bounds Partitions: every node reads every partition of the channel topic.
const maxPartitions = 1024

// lineageInterval is how often a connected node checks that its topics still exist and have
// the same ids.
const lineageInterval = 5 * time.Second

// Config configures the Kafka broker. Zero values take the defaults above.
type Config struct {
	Brokers []string // bootstrap addresses, host:port (kafka.brokers)
	Prefix  string   // GATEWAY_TOPIC_PREFIX; every topic and group is named under it

	Partitions        int           // partitions of <prefix>.channels (kafka.partitions), at most 1024
	ServicePartitions int           // partitions of <prefix>.inbound and <prefix>.events
	Retention         time.Duration // retention.ms of the topics the broker creates (kafka.retention)
	ReplicationFactor int           // of the topics the broker creates (kafka.replication_factor)

	KafkaVersion string // protocol version sarama speaks, e.g. "3.6.0", 0.11.0 or later; empty: sarama's default (2.8.0)
	ClientID     string

	DialTimeout      time.Duration // one TCP connection attempt
	PublishTimeout   time.Duration // longest a Publish call waits before failing with ErrUnavailable
	OperationTimeout time.Duration // bounds Subscribe, SubscribeGroup's wait for assignment, Replay

	// SubscriptionBuffer is how many messages may wait for one subscription of a fan-out topic.
	// When it is full, the partition waits up to SlowTimeout for room (other channels of that
	// partition wait too); then that subscription's channel is closed after what it holds (the
	// subscriber resumes from its last position) and the partition goes on.
	SubscriptionBuffer int
	SlowTimeout        time.Duration

	// NodeID names the node in its presence heartbeats (node_id); a random id when empty.
	NodeID string
	// Presence are the settings of the node's presence (transports.Presence), kept in the
	// compacted topic <prefix>.presence; Heartbeat defaults to transports.DefaultPresenceHeartbeat.
	Presence transports.PresenceConfig
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ServicePartitions == 0 {
		c.ServicePartitions = DefaultServicePartitions
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.OperationTimeout == 0 {
		c.OperationTimeout = DefaultOperationTimeout
	}
	if c.SubscriptionBuffer == 0 {
		c.SubscriptionBuffer = DefaultSubscriptionBuffer
	}
	if c.SlowTimeout == 0 {
		c.SlowTimeout = DefaultSlowTimeout
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

// Validate reports the first setting that cannot work, naming its key.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka.brokers: at least one broker address is required")
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return errors.New("kafka.brokers: empty broker address")
		}
	}
	if c.Partitions < 1 || c.Partitions > maxPartitions {
		return fmt.Errorf("kafka.partitions (%d) must be between 1 and %d", c.Partitions, maxPartitions)
	}
	if c.ServicePartitions < 1 || c.ServicePartitions > 100000 {
		return fmt.Errorf("kafka service partitions (%d) must be between 1 and 100000", c.ServicePartitions)
	}
	if c.Retention < time.Millisecond {
		return fmt.Errorf("kafka.retention (%v) must be at least 1ms", c.Retention)
	}
	if c.ReplicationFactor < 1 || c.ReplicationFactor > 32767 {
		return fmt.Errorf("kafka.replication_factor (%d) must be between 1 and 32767", c.ReplicationFactor)
	}
	// The longest names are <prefix>.channels and <prefix>.presence; Kafka allows 249 characters.
	if n := len(transports.SafeName(c.Prefix)) + len(".channels"); n > 249 {
		return fmt.Errorf("topic_prefix is too long: topic names would have %d characters, Kafka allows 249", n)
	}
	if c.KafkaVersion != "" {
		v, err := sarama.ParseKafkaVersion(c.KafkaVersion)
		if err != nil {
			return fmt.Errorf("kafka version %q: %w", c.KafkaVersion, err)
		}
		if !v.IsAtLeast(sarama.V0_11_0_0) {
			// Metadata travel as record headers, and Replay reads record batches.
			return fmt.Errorf("kafka version %q: 0.11.0 or later is needed (record headers)", c.KafkaVersion)
		}
	}
	for key, d := range map[string]time.Duration{"dial": c.DialTimeout, "publish": c.PublishTimeout, "operation": c.OperationTimeout, "slow": c.SlowTimeout} {
		if d <= 0 {
			return fmt.Errorf("kafka %s timeout (%v) must be positive", key, d)
		}
	}
	if c.SubscriptionBuffer < 1 {
		return fmt.Errorf("kafka subscription buffer (%d) must be positive", c.SubscriptionBuffer)
	}
	if c.Presence.Heartbeat < 10*time.Millisecond {
		return fmt.Errorf("presence.heartbeat (%v) must be at least 10ms", c.Presence.Heartbeat)
	}
	return nil
}

// names are the Kafka names of the logical topics.
type names struct {
	prefix   string // SafeName(Config.Prefix)
	channels string
	direct   string
	control  string
	hooks    string // TopicHooks
	replies  string // TopicReplies
	// controlState is the control store (control.go).
	controlState string
	inbound      string
	events       string
	presence     string
}

func (n names) all() []string {
	return []string{n.channels, n.direct, n.control, n.controlState, n.inbound, n.events, n.presence, n.hooks, n.replies}
}

func newNames(prefix string) names {
	p := transports.SafeName(prefix)
	return names{prefix: p, channels: p + ".channels", direct: p + ".direct", control: p + ".control", controlState: p + ".control-state", inbound: p + ".inbound", events: p + ".events",
		presence: p + ".presence", hooks: p + ".hooks", replies: p + ".replies"}
}

// Broker is one node's connection to a Kafka cluster. Safe for concurrent use.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	wlog    watermill.LoggerAdapter
	version sarama.KafkaVersion
	names   names

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine the broker started

	mu       sync.Mutex // guards the fields below and wg.Add against Close
	started  bool
	closed   bool
	conn     *conn // nil until the first successful connection
	lastErr  error
	readers  map[string]*reader
	topicIDs map[string]string // hex topic id per Kafka topic, "" when the broker does not tell

	firstTry chan struct{} // closed when the first connection attempt has finished
	kick     chan struct{} // asks the connection loop to check the topics again

	// pubMu is held (read) by every Publish in flight and (write) by Close before it closes the
	// publisher: watermill-kafka's Publisher does not synchronize Publish with Close.
	pubMu sync.RWMutex

	ctlMu sync.Mutex // serializes the control store's reads (control.go)

	ping pingFlight

	pr presence // presence.go

	// groupAutoCommit replaces sarama's auto-commit interval (1 s) of SubscribeGroup when set: a
	// test sets it long to see the commit made after each ack.
	groupAutoCommit time.Duration
}

// conn is what a successful connection attempt made. Kafka answers the requests of one
// connection in order, so the long-polling fetches of the live readers have a client of their
// own: metadata, offsets and replays never wait behind them.
type conn struct {
	client     sarama.Client       // metadata, offsets, admin, Ping, Replay (short fetch waits)
	admin      sarama.ClusterAdmin // over client; never closed on its own (that would close client)
	readClient sarama.Client       // the live readers' fetches
	consumer   sarama.Consumer     // over readClient: one fetch per broker for every reader
	pub        *wmkafka.Publisher  // has its own sarama client (SyncProducer)
	records    sarama.SyncProducer // over client: the presence records
}

var (
	_ transports.Broker   = (*Broker)(nil)
	_ transports.History  = (*Broker)(nil)
	_ transports.Presence = (*Broker)(nil)
)

// New returns a broker for cfg. It only checks cfg: no I/O, no goroutine until Start.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	version := sarama.DefaultVersion
	if cfg.KafkaVersion != "" {
		version, _ = sarama.ParseKafkaVersion(cfg.KafkaVersion)
	}
	b := &Broker{
		cfg:      cfg,
		log:      logger.With("broker", "kafka"),
		wlog:     watermill.NewSlogLogger(logger),
		version:  version,
		names:    newNames(cfg.Prefix),
		done:     make(chan struct{}),
		readers:  map[string]*reader{},
		topicIDs: map[string]string{},
		firstTry: make(chan struct{}),
		kick:     make(chan struct{}, 1),
	}
	b.pr.init(cfg.NodeID)
	return b, nil
}

// Start implements transports.Broker: it starts the connection loop. It does not fail when the
// brokers are unreachable: the loop keeps connecting in the background with backoff, Ping
// reports the failure, and Publish and Subscribe fail with ErrUnavailable until the connection
// is made.
func (b *Broker) Start(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return transports.ErrClosed
	case b.started:
		return nil
	}
	b.started = true
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.connectLoop()
	}()
	return nil
}

// goTrack runs fn in a goroutine that Close waits for; false when the broker is closed.
func (b *Broker) goTrack(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
}

func (b *Broker) isClosed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// saramaConfig is the base sarama configuration, tuned for low latency and bounded failures.
func (b *Broker) saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = b.cfg.ClientID
	c.Version = b.version
	c.Net.DialTimeout = b.cfg.DialTimeout
	c.Net.ReadTimeout = 15 * time.Second // above fetch waits, produce acks and group joins
	c.Net.WriteTimeout = 10 * time.Second
	c.Metadata.Retry.Max = 2
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	c.Metadata.Timeout = b.cfg.PublishTimeout
	c.Metadata.RefreshFrequency = time.Minute
	c.Metadata.AllowAutoTopicCreation = false // topics are created with the right partitions
	// Every write waits for the in-sync replicas: a leader failover then cannot take back an
	// acknowledged message, so an offset handed out as a position never names another message.
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Timeout = b.cfg.PublishTimeout
	c.Producer.Retry.Max = 3
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Partitioner = sarama.NewHashPartitioner // FNV-1a of the key; see partitionFor
	c.Consumer.Return.Errors = true
	c.Consumer.MaxWaitTime = 250 * time.Millisecond
	c.Consumer.Retry.BackoffFunc = func(retries int) time.Duration {
		return min(100*time.Millisecond<<min(retries, 5), 2*time.Second)
	}
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	c.Consumer.Group.Rebalance.Retry.Backoff = 250 * time.Millisecond
	c.Consumer.Offsets.Initial = sarama.OffsetNewest
	return c
}

// connectLoop connects with backoff until it succeeds, then re-creates missing topics when asked.
func (b *Broker) connectLoop() {
	var firstOnce sync.Once
	bo := backoff{min: 200 * time.Millisecond, max: 10 * time.Second}
	attempt := 0
	for {
		c, err := b.connect()
		b.mu.Lock()
		if err == nil && !b.closed {
			b.conn, b.lastErr = c, nil
		} else if err == nil {
			err = transports.ErrClosed
		} else {
			b.lastErr = err
		}
		b.mu.Unlock()
		firstOnce.Do(func() { close(b.firstTry) })
		if err == nil {
			b.log.Info("kafka connected", "brokers", strings.Join(b.cfg.Brokers, ","))
			if b.pr.wanted() { // OnReap was set: a gateway node takes part in presence from the start
				b.startPresence()
			}
			break
		}
		if c != nil {
			c.close()
		}
		if b.isClosed() {
			return
		}
		d := bo.next()
		level := slog.LevelWarn
		if attempt++; attempt > 1 {
			level = slog.LevelDebug // said once; the rest is detail
		}
		b.log.Log(context.Background(), level, "kafka unreachable, retrying", "error", err, "retry_in", d, "attempt", attempt)
		if !sleep(d, b.done) {
			return
		}
	}
	// Topics can vanish under a running node (deleted, or a broker that lost its data): every
	// lineageInterval, and when a reader or Publish kicks, the loop checks the topics' ids
	// (one metadata round trip), creates missing topics and tells the readers of re-created ones.
	tick := time.NewTicker(lineageInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-b.kick:
		case <-tick.C:
		}
		c := b.current()
		if _, err := b.refreshTopicIDs(c, b.names.all()...); err != nil {
			if err := b.ensureTopics(c.admin); err != nil {
				b.log.Warn("kafka topics not created", "error", err)
			} else if _, err := b.refreshTopicIDs(c, b.names.all()...); err != nil {
				b.log.Warn("kafka topics not described", "error", err)
			}
		}
		if !sleep(time.Second, b.done) {
			return
		}
	}
}

// connect makes the shared client, the topics and the publisher.
func (b *Broker) connect() (*conn, error) {
	cfg := b.saramaConfig()
	cfg.Consumer.MaxWaitTime = 10 * time.Millisecond // Replay reads what exists: no long poll
	client, err := sarama.NewClient(b.cfg.Brokers, cfg)
	if err != nil {
		return nil, err
	}
	c := &conn{client: client}
	if c.admin, err = sarama.NewClusterAdminFromClient(client); err != nil {
		return c, err
	}
	if err := b.ensureTopics(c.admin); err != nil {
		return c, err
	}
	if _, err := b.refreshTopicIDs(c, b.names.all()...); err != nil {
		return c, err
	}
	if c.readClient, err = sarama.NewClient(b.cfg.Brokers, b.saramaConfig()); err != nil {
		return c, err
	}
	if c.consumer, err = sarama.NewConsumerFromClient(c.readClient); err != nil {
		return c, err
	}
	if c.records, err = sarama.NewSyncProducerFromClient(client); err != nil {
		return c, err
	}
	// The publisher of messages is idempotent: a produce that sarama retries after a lost or
	// failed answer (a leader moved, a broker stopped, NOT_ENOUGH_REPLICAS_AFTER_APPEND) carries
	// the same producer id and sequence, and the leader stores it once, so a message published
	// once has one position. It has its own client, with one request in flight per broker as
	// sarama's idempotent producer requires.
	pubCfg := b.saramaConfig()
	pubCfg.Producer.Idempotent = true
	pubCfg.Net.MaxOpenRequests = 1
	c.pub, err = wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:               b.cfg.Brokers,
		Marshaler:             marshaler{channels: b.names.channels},
		OverwriteSaramaConfig: pubCfg,
	}, b.wlog)
	if err != nil {
		return c, err
	}
	return c, nil
}

func (c *conn) close() {
	if c.pub != nil {
		_ = c.pub.Close()
	}
	if c.consumer != nil {
		_ = c.consumer.Close()
	}
	if c.records != nil {
		_ = c.records.Close()
	}
	if c.readClient != nil {
		_ = c.readClient.Close()
	}
	_ = c.client.Close()
}

// ensureTopics creates the nine topics when missing, with the configured partitions and
// retention (the presence and control-state topics: one partition, compacted; hooks and replies:
// HookRetention at most); existing topics are kept as they are.
func (b *Broker) ensureTopics(admin sarama.ClusterAdmin) error {
	retention := fmt.Sprint(b.cfg.Retention.Milliseconds())
	compact := "compact"
	deleted := map[string]*string{"retention.ms": &retention}
	// Hook requests and replies are worthless after their deadline: kept HookRetention at most.
	brief := fmt.Sprint(min(b.cfg.Retention, HookRetention).Milliseconds())
	short := map[string]*string{"retention.ms": &brief}
	compacted := map[string]*string{"cleanup.policy": &compact}
	// With 3 replicas or more a write needs a majority of them in sync (min.insync.replicas 2
	// of 3, 3 of 5): with acks=all a record acknowledged is then on at least two brokers, and a
	// partition with fewer in sync refuses writes (NOT_ENOUGH_REPLICAS, a Publish that fails)
	// rather than acknowledge what one more failure would lose. Fewer replicas: the broker's default.
	if b.cfg.ReplicationFactor >= 3 {
		insync := fmt.Sprint(b.cfg.ReplicationFactor/2 + 1)
		for _, m := range []map[string]*string{deleted, short, compacted} {
			m["min.insync.replicas"] = &insync
		}
	}
	for _, t := range []struct {
		name       string
		partitions int
		config     map[string]*string
	}{
		{b.names.channels, b.cfg.Partitions, deleted},
		{b.names.direct, 1, deleted},
		{b.names.control, 1, deleted},
		{b.names.inbound, b.cfg.ServicePartitions, deleted},
		{b.names.events, b.cfg.ServicePartitions, deleted},
		{b.names.hooks, b.cfg.ServicePartitions, short},
		{b.names.replies, 1, short},
		{b.names.presence, 1, compacted},
		{b.names.controlState, 1, compacted},
	} {
		err := admin.CreateTopic(t.name, &sarama.TopicDetail{
			NumPartitions:     int32(t.partitions),
			ReplicationFactor: int16(b.cfg.ReplicationFactor),
			ConfigEntries:     t.config,
		}, false)
		switch {
		case err == nil:
			b.log.Info("kafka topic created", "topic", t.name, "partitions", t.partitions)
		case errors.Is(err, sarama.ErrTopicAlreadyExists):
		default:
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
	}
	return nil
}

// kickTopics asks the connection loop to check the topics.
func (b *Broker) kickTopics() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *Broker) current() *conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conn
}

// ready returns the connection, waiting at most wait for the first connection attempt.
func (b *Broker) ready(ctx context.Context, wait time.Duration) (*conn, error) {
	if b.isClosed() {
		return nil, transports.ErrClosed
	}
	b.mu.Lock()
	started := b.started
	b.mu.Unlock()
	if !started {
		return nil, transports.ErrNotStarted
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-b.firstTry:
	case <-t.C:
	case <-ctx.Done():
	case <-b.done:
		return nil, transports.ErrClosed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, transports.ErrClosed
	}
	if b.conn == nil {
		if b.lastErr != nil {
			return nil, fmt.Errorf("%w: kafka %s: %w", transports.ErrUnavailable, strings.Join(b.cfg.Brokers, ","), b.lastErr)
		}
		return nil, fmt.Errorf("%w: kafka %s: still connecting", transports.ErrUnavailable, strings.Join(b.cfg.Brokers, ","))
	}
	return b.conn, nil
}

// kafkaTopic maps a logical topic to its Kafka topic and, for channel topics, the channel.
func (b *Broker) kafkaTopic(topic string) (name, channel string, err error) {
	if ch, ok := protocol.ChannelOf(topic); ok {
		return b.names.channels, ch, nil
	}
	switch topic {
	case protocol.TopicDirect:
		return b.names.direct, "", nil
	case protocol.TopicControl:
		return b.names.control, "", nil
	case protocol.TopicInbound:
		return b.names.inbound, "", nil
	case protocol.TopicEvents:
		return b.names.events, "", nil
	case protocol.TopicHooks:
		return b.names.hooks, "", nil
	case protocol.TopicReplies:
		return b.names.replies, "", nil
	}
	return "", "", fmt.Errorf("kafka: unknown topic %q", topic)
}

// Publish implements transports.Broker: one produce round trip per message (acks from all
// in-sync replicas), failing with ErrUnavailable after at most PublishTimeout.
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	_, err := b.publish(topic, msgs, false)
	return err
}

var (
	_ transports.PositionPublisher = (*Broker)(nil)
	_ transports.ReverseHistory    = (*Broker)(nil)
)

// PublishPositions implements transports.PositionPublisher: for a channel topic, the offset the
// partition gave each record (plus one, as in positions) in the epoch of its partition; nil
// positions for other topics.
func (b *Broker) PublishPositions(topic string, msgs ...*message.Message) ([]protocol.Position, error) {
	return b.publish(topic, msgs, true)
}

// produced is where marshaler.Marshal leaves the record it made for a message whose context
// carries one, so that PublishPositions reads the partition and offset sarama set on it.
type produced struct{ pm *sarama.ProducerMessage }

type producedKey struct{}

func (b *Broker) publish(topic string, msgs []*message.Message, positions bool) ([]protocol.Position, error) {
	kt, channel, err := b.kafkaTopic(topic)
	if err != nil {
		return nil, err
	}
	positions = positions && kt == b.names.channels
	var slots []produced
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.PublishTimeout)
	defer cancel()
	c, err := b.ready(ctx, b.cfg.PublishTimeout)
	if err != nil {
		return nil, err
	}
	// The marshaler takes the routing key from the metadata, so it works on copies: the
	// caller's messages are not modified.
	out := make([]*message.Message, len(msgs))
	if positions {
		slots = make([]produced, len(msgs))
	}
	for i, m := range msgs {
		out[i] = m.Copy()
		if kt == b.names.channels {
			out[i].Metadata.Set(protocol.MetaChannel, channel)
		}
		if positions {
			out[i].SetContext(context.WithValue(context.Background(), producedKey{}, &slots[i]))
		}
	}
	b.pubMu.RLock()
	if b.isClosed() {
		b.pubMu.RUnlock()
		return nil, transports.ErrClosed
	}
	// The read lock goes with the goroutine, so Close waits for it (sarama bounds it) even when
	// the caller gave up at the deadline.
	errc := make(chan error, 1)
	go func() {
		defer b.pubMu.RUnlock()
		errc <- c.pub.Publish(kt, out...)
	}()
	select {
	case err = <-errc:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: kafka publish to %s: no answer within %v", transports.ErrUnavailable, kt, b.cfg.PublishTimeout)
	}
	if err == nil {
		if !positions {
			return nil, nil
		}
		id := b.topicID(kt)
		pos := make([]protocol.Position, len(slots))
		for i, s := range slots {
			if s.pm == nil || s.pm.Offset < 0 {
				return nil, fmt.Errorf("kafka publish to %s: no offset for message %s", kt, msgs[i].UUID)
			}
			pos[i] = protocol.Position{Epoch: epochOf(kt, s.pm.Partition, id), Lo: uint64(s.pm.Offset) + 1}
		}
		return pos, nil
	}
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		b.kickTopics()
	}
	if errors.Is(err, sarama.ErrMessageSizeTooLarge) || errors.Is(err, sarama.ErrInvalidMessage) ||
		errors.Is(err, sarama.ErrInvalidMessageSize) {
		return nil, fmt.Errorf("kafka publish to %s: %w", kt, err)
	}
	return nil, fmt.Errorf("%w: kafka publish to %s: %w", transports.ErrUnavailable, kt, err)
}

// Subscribe implements transports.Broker. Channel topics are read by the node's one reader of
// <prefix>.channels and handed out by channel; the other topics each have one reader per node.
// Every reader starts at the newest offsets of all partitions of its topic before the first
// Subscribe on it returns.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return transports.SubscribeChan(ctx, b, topic)
}

var _ transports.FuncSubscriber = (*Broker)(nil)

// SubscribeFunc implements transports.FuncSubscriber, as Subscribe does. The subscription holds
// no goroutine and no buffer while it has nothing to deliver: the reader queues records on it,
// and the first one queued while none runs starts a goroutine that delivers until the queue is
// empty.
func (b *Broker) SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error {
	kt, channel, err := b.kafkaTopic(topic)
	if err != nil {
		return err
	}
	r, err := b.reader(kt)
	if err != nil {
		return err
	}
	return r.subscribe(ctx, channel, deliver, ended)
}

func (b *Broker) reader(kt string) (*reader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, transports.ErrClosed
	}
	if !b.started {
		return nil, transports.ErrNotStarted
	}
	r := b.readers[kt]
	if r == nil {
		r = &reader{b: b, topic: kt, demux: kt == b.names.channels, history: kt == b.names.channels,
			subs: map[string]map[*subscription]struct{}{}, changed: make(chan struct{}), strays: map[string]struct{}{}}
		b.readers[kt] = r
	}
	return r, nil
}

// Ping implements transports.Broker with one metadata round trip to the cluster.
func (b *Broker) Ping(ctx context.Context) error {
	c, err := b.ready(ctx, 0)
	if err != nil {
		return err
	}
	if err := b.ping.do(ctx, b, func() error { return c.client.RefreshMetadata(b.names.channels) }); err != nil {
		if errors.Is(err, transports.ErrClosed) {
			return err
		}
		return fmt.Errorf("%w: kafka: %w", transports.ErrUnavailable, err)
	}
	return nil
}

// pingFlight lets concurrent Pings share one round trip.
type pingFlight struct {
	mu   sync.Mutex
	wait chan struct{}
	err  error
}

func (p *pingFlight) do(ctx context.Context, b *Broker, fn func() error) error {
	p.mu.Lock()
	w := p.wait
	if w == nil {
		w = make(chan struct{})
		p.wait = w
		if !b.goTrack(func() {
			err := fn()
			p.mu.Lock()
			p.err, p.wait = err, nil
			p.mu.Unlock()
			close(w)
		}) {
			p.wait = nil
			p.mu.Unlock()
			return transports.ErrClosed
		}
	}
	p.mu.Unlock()
	select {
	case <-w:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close implements transports.Broker: it ends every subscription, waits for the goroutines
// the broker started (each bounded by sarama's timeouts) and closes the clients. Safe to call
// twice, and before Start.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.done)
		b.mu.Unlock()
		b.wg.Wait()
		b.mu.Lock()
		readers := b.readers
		b.readers = map[string]*reader{}
		c := b.conn
		b.mu.Unlock()
		for _, r := range readers {
			r.close()
		}
		b.pubMu.Lock() // no Publish in flight
		if c != nil {
			c.close()
		}
		b.pubMu.Unlock()
	})
	return nil
}

// marshaler is watermill-kafka's default encoding (payload as the value, UUID and metadata as
// headers) plus the routing key: the channel for <prefix>.channels (also set as the "channel"
// header by Publish), else the session or the user when there is one.
type marshaler struct {
	wmkafka.DefaultMarshaler
	channels string
}

func (m marshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	pm, err := m.DefaultMarshaler.Marshal(topic, msg)
	if err != nil {
		return nil, err
	}
	if slot, ok := msg.Context().Value(producedKey{}).(*produced); ok {
		slot.pm = pm // PublishPositions reads the partition and offset sarama sets on it
	}
	var key string
	if topic == m.channels {
		key = msg.Metadata.Get(protocol.MetaChannel)
		pm.Key = sarama.StringEncoder(key) // "" too: channel "" is a channel
		return pm, nil
	}
	for _, k := range []string{protocol.MetaSession, protocol.MetaUser} {
		if key = msg.Metadata.Get(k); key != "" {
			pm.Key = sarama.StringEncoder(key)
			break
		}
	}
	return pm, nil
}

// toMessage decodes a consumed record with watermill-kafka's unmarshaler and adds what the
// broker assigned: the position (channel topics) and, for records published without a
// Watermill UUID (a CLI), a UUID derived from topic, partition and offset.
func toMessage(km *sarama.ConsumerMessage, epoch, channel string) *message.Message {
	msg, _ := wmkafka.DefaultMarshaler{}.Unmarshal(km) // never fails
	if msg.UUID == "" {
		msg.UUID = fmt.Sprintf("kafka-%s-%d-%d", km.Topic, km.Partition, km.Offset)
	}
	if epoch != "" {
		msg.Metadata.Set(protocol.MetaPosition, protocol.Position{Epoch: epoch, Lo: uint64(km.Offset) + 1}.String())
		if !km.Timestamp.IsZero() {
			msg.Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(km.Timestamp.UnixMilli(), 10))
		}
		if msg.Metadata.Get(protocol.MetaChannel) == "" {
			msg.Metadata.Set(protocol.MetaChannel, channel)
		}
	}
	return msg
}

// channelOf is the channel of a record of <prefix>.channels: the "channel" header, else the key.
func channelOf(km *sarama.ConsumerMessage) string {
	for _, h := range km.Headers {
		if string(h.Key) == protocol.MetaChannel {
			return string(h.Value)
		}
	}
	return string(km.Key)
}

// backoff is exponential with jitter, between min and max.
type backoff struct{ min, max, cur time.Duration }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d; false when one of (at most three) stop channels closed first.
func sleep(d time.Duration, stop ...<-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var s [3]<-chan struct{}
	copy(s[:], stop)
	select {
	case <-t.C:
		return true
	case <-s[0]:
		return false
	case <-s[1]:
		return false
	case <-s[2]:
		return false
	}
}
