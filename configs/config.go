// Package configs owns every setting of the gateway: one root Config of nested structs, read from
// a YAML file and then from GATEWAY_* environment variables (the environment wins), completed with
// defaults and checked by Validate, whose errors name the key. Nothing else reads the environment.
package configs

import (
	"os"
	"strings"
	"time"

	"github.com/wsgateway/gateway/internal/natsurl"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Defaults of the gateway's settings, which SetDefaults applies. The settings of the broker
// sections that only the broker uses have their defaults in the broker packages.
const (
	DefaultAddr         = ":8080"
	DefaultBroker       = BrokerMemory
	DefaultNATSURL      = natsurl.Default
	DefaultRedisAddr    = "127.0.0.1:6379"
	DefaultRedisMode    = "single"
	RedisModeSentinel   = "sentinel" // redis.mode of a primary found through Sentinels
	RedisModeCluster    = "cluster"  // redis.mode of a Redis Cluster found from redis.cluster_addrs
	DefaultKafkaBrokers = "127.0.0.1:9092"
	DefaultTopicPrefix  = protocol.DefaultTopicPrefix
	DefaultMaxFrameSize = 64 << 10
	DefaultSendBuffer   = 256
	DefaultWriteTimeout = 10 * time.Second
	// DefaultLatencyBudget is how long a busy node may hold a connection's frames to write them
	// together (websocket.latency_budget). A busy node writes to a connection once per budget:
	// at 50 msg/s, about 4 frames per write where writing at once made 2, which takes the CPU
	// per delivery to about 0.6× (docs/performance.md); a shorter budget saves little (50 ms:
	// 2.5 frames per write).
	DefaultLatencyBudget    = 75 * time.Millisecond
	DefaultPingInterval     = 25 * time.Second
	DefaultCompressionLevel = 1
	DefaultPublishTimeout   = transports.DefaultPublishTimeout
	DefaultHistorySize      = 1000
	DefaultHistoryTTL       = 10 * time.Minute
	DefaultHistoryMaxBytes  = 256 << 20
	DefaultMaxReplay        = 1000
	DefaultDedupeWindow     = 2 * time.Minute
	DefaultDedupeStore      = "auto"
	DefaultBreakerFailures  = 20
	DefaultBreakerOpenFor   = 5 * time.Second
	DefaultEventsHeartbeat  = 5 * time.Second
	DefaultDrainPeriod      = 10 * time.Second
	DefaultEventsQueue      = 100000
	DefaultStreamHeartbeat  = 15 * time.Second
	DefaultStreamChannels   = 32
	DefaultRetryAttempts    = 3
	DefaultRetryInitial     = 50 * time.Millisecond
	DefaultRetryMaxElapsed  = 3 * time.Second
	DefaultLogLevel         = "info"
	DefaultLogFormat        = "text"

	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultIdleTimeout       = 120 * time.Second

	DefaultRequireExp  = true
	DefaultJWKSRefresh = time.Hour
	DefaultJWKSTimeout = 5 * time.Second
	// JWKSUnknownKIDEvery is the least time between two JWKS fetches caused by tokens whose kid
	// is not in the cached set (a key rotation); tokens with unknown kids in between are refused
	// without a fetch, so they cannot make the node hammer the identity provider.
	JWKSUnknownKIDEvery = 10 * time.Second
	// DefaultBrokerConnectTimeout 0: a starting node waits for its broker for ever.
	DefaultBrokerConnectTimeout time.Duration = 0
	// Per-connection limits (limits.*), chosen so that a legitimate client never meets them: a
	// chat client publishes about once a second, a game 30 to 60 times; wsclient resends its
	// unacknowledged publishes at once after a reconnect; a dashboard subscribes hundreds of
	// channels on connect, and a reconnect resubscribes everything at once.
	DefaultPublishRate                = 100  // publish/send frames per second per connection
	DefaultPublishBurst               = 1000 // taken at once: an outbox flushed after a reconnect
	DefaultSubscriptionsPerConnection = 1024
	DefaultSubscribeRate              = 50 // subscribe frames per second per connection
	// DefaultSubscribeBurst is twice the subscriptions a connection may hold by default: it
	// can subscribe everything, drop it all and subscribe it all again at once.
	DefaultSubscribeBurst = 2 * DefaultSubscriptionsPerConnection
	// DefaultRPCRate and DefaultRPCBurst bound the rpc and refresh frames of a connection (each
	// may call a hook): a client calls a few methods on a page load, then now and then.
	DefaultRPCRate               = 20 // rpc and refresh frames per second per connection
	DefaultRPCBurst              = 100
	DefaultRateLimitedDisconnect = 100 // rate_limited answers within the window before a disconnect
	DefaultRateLimitedWindow     = 10 * time.Second

	// DefaultPresenceMaxMembers is the most members a channel may have for `presence` to list
	// them; beyond it, it answers the counts only.
	DefaultPresenceMaxMembers = 10000
	// DefaultPresenceHeartbeat is the presence heartbeat (the broker's
	// transports.DefaultPresenceHeartbeat; leases are renewed twice per heartbeat): a node that
	// dies loses its members within 2 of them.
	DefaultPresenceHeartbeat = 5 * time.Second
	// DefaultPresenceCoalesce is the window for which a node gathers the joins and leaves it
	// announces in a channel (presence.coalesce): short enough that a member list lags by less
	// than people notice, long enough that a storm of N joins a second sends about 10 messages a
	// second instead of N.
	DefaultPresenceCoalesce = 100 * time.Millisecond

	// NoLimit turns off a limit whose zero value means its default.
	NoLimit = -1
)

// Broker names.
const (
	BrokerMemory    = "memory"
	BrokerNATS      = "nats"
	BrokerJetStream = "jetstream"
	BrokerRedis     = "redis"
	BrokerKafka     = "kafka"
)

// Config is the root of all settings. The yaml tag is the key in the file; the env tag, after the
// GATEWAY_ prefix (and the prefixes of enclosing structs), is the environment variable.
type Config struct {
	Addr        string `yaml:"addr" env:"ADDR"`                 // listen address
	NodeID      string `yaml:"node_id" env:"NODE_ID"`           // unique in the cluster; default host name + random suffix
	Broker      string `yaml:"broker" env:"BROKER"`             // memory, nats, jetstream, redis or kafka
	TopicPrefix string `yaml:"topic_prefix" env:"TOPIC_PREFIX"` // prefix of every broker name the gateway uses
	// BrokerConnectTimeout is how long a starting node waits for its broker before it gives up
	// (exit 1); 0 waits for ever, retrying with backoff while /readyz says 503.
	BrokerConnectTimeout time.Duration `yaml:"broker_connect_timeout" env:"BROKER_CONNECT_TIMEOUT"`

	NATS      NATSConfig      `yaml:"nats" envPrefix:"NATS_"`
	JetStream JetStreamConfig `yaml:"jetstream" envPrefix:"JETSTREAM_"`
	Redis     RedisConfig     `yaml:"redis" envPrefix:"REDIS_"`
	Kafka     KafkaConfig     `yaml:"kafka" envPrefix:"KAFKA_"`

	Auth      AuthConfig      `yaml:"auth"`
	API       APIConfig       `yaml:"api"`
	WebSocket WebSocketConfig `yaml:"websocket"`
	History   HistoryConfig   `yaml:"history" envPrefix:"HISTORY_"`
	Router    RouterConfig    `yaml:"router" envPrefix:"ROUTER_"`
	Limits    LimitsConfig    `yaml:"limits" envPrefix:"LIMITS_"`
	Drain     DrainConfig     `yaml:"drain" envPrefix:"DRAIN_"`
	Events    EventsConfig    `yaml:"events" envPrefix:"EVENTS_"`
	Presence  PresenceConfig  `yaml:"presence" envPrefix:"PRESENCE_"`
	Webhooks  WebhooksConfig  `yaml:"webhooks" envPrefix:"WEBHOOKS_"`
	Hooks     HooksConfig     `yaml:"hooks" envPrefix:"HOOKS_"`
	Pusher    PusherConfig    `yaml:"pusher" envPrefix:"PUSHER_"`
	Stream    StreamConfig    `yaml:"stream" envPrefix:"STREAM_"`
	Log       LogConfig       `yaml:"log" envPrefix:"LOG_"`
	TLS       TLSConfig       `yaml:"tls" envPrefix:"TLS_"`
	HTTP      HTTPConfig      `yaml:"http" envPrefix:"HTTP_"`
	Admin     AdminConfig     `yaml:"admin" envPrefix:"ADMIN_"`

	// Development is set by Load when no way to authenticate clients is configured
	// (AuthConfig.Configured) and the broker is the embedded memory broker, where one node is
	// the whole cluster: the node then makes up a JWT secret and says so. On a shared broker
	// each node would make up its own secret and refuse the others' tokens, so there it is an
	// error instead.
	Development bool `yaml:"-" env:"-"`
}

// NATSConfig is for the nats and jetstream brokers.
type NATSConfig struct {
	URL string `yaml:"url" env:"URL"` // comma-separated server URLs
}

// JetStreamConfig bounds the stream the jetstream broker creates. 0 is the broker's default
// (package transports/jetstream), which also checks the values.
type JetStreamConfig struct {
	MaxAge     time.Duration `yaml:"max_age" env:"MAX_AGE"`                   // 0: jetstream.DefaultMaxAge
	MaxBytes   int64         `yaml:"max_bytes" env:"MAX_BYTES"`               // 0: jetstream.DefaultMaxBytes
	Replicas   int           `yaml:"replicas" env:"REPLICAS"`                 // 0: jetstream.DefaultReplicas
	DupeWindow time.Duration `yaml:"duplicate_window" env:"DUPLICATE_WINDOW"` // 0: jetstream.DefaultDuplicateWindow, at most max_age
}

// RedisConfig is for the redis broker. Shards and MaxLen 0 are the broker's defaults (package
// transports/redis), which also checks the values.
type RedisConfig struct {
	Mode             string   `yaml:"mode" env:"MODE"`                           // single (Addr), sentinel (MasterName, SentinelAddrs) or cluster (ClusterAddrs)
	Addr             string   `yaml:"addr" env:"ADDR"`                           // single mode
	MasterName       string   `yaml:"master_name" env:"MASTER_NAME"`             // sentinel mode: the primary's name at the Sentinels
	SentinelAddrs    []string `yaml:"sentinel_addrs" env:"SENTINEL_ADDRS"`       // sentinel mode: the Sentinels, host:port
	SentinelPassword string   `yaml:"sentinel_password" env:"SENTINEL_PASSWORD"` // sentinel mode: the Sentinels' password
	ClusterAddrs     []string `yaml:"cluster_addrs" env:"CLUSTER_ADDRS"`         // cluster mode: some nodes of the Redis Cluster, host:port
	MinReplicas      int      `yaml:"min_replicas" env:"MIN_REPLICAS"`           // a publish is acked once this many replicas have it (WAIT); 0: once the primary has it
	Password         string   `yaml:"password" env:"PASSWORD"`
	DB               int      `yaml:"db" env:"DB"`
	Shards           int      `yaml:"shards" env:"SHARDS"`   // channel streams every node reads; 0: redis.DefaultShards
	MaxLen           int64    `yaml:"max_len" env:"MAX_LEN"` // approximate entries kept per stream; 0: redis.DefaultMaxLen
}

// KafkaConfig is for the kafka broker. Partitions, Retention and Replicas 0 are the broker's
// defaults (package transports/kafka), which also checks the values.
type KafkaConfig struct {
	Brokers    []string      `yaml:"brokers" env:"BROKERS"`
	Partitions int           `yaml:"partitions" env:"PARTITIONS"`                 // partitions of the channel topic; 0: kafka.DefaultPartitions
	Retention  time.Duration `yaml:"retention" env:"RETENTION"`                   // 0: kafka.DefaultRetention
	Replicas   int           `yaml:"replication_factor" env:"REPLICATION_FACTOR"` // 0: kafka.DefaultReplicationFactor
}

// AuthConfig says who may connect and what they may do.
type AuthConfig struct {
	JWTSecret        string   `yaml:"jwt_secret" env:"JWT_SECRET"`               // HS256 key
	JWTPublicKey     string   `yaml:"jwt_public_key" env:"JWT_PUBLIC_KEY"`       // path of a PEM public key (RS256, ES256, EdDSA)
	AllowAnonymous   bool     `yaml:"allow_anonymous" env:"ALLOW_ANONYMOUS"`     // connect without a token, user id empty
	PublicChannels   []string `yaml:"public_channels" env:"PUBLIC_CHANNELS"`     // channels anyone may subscribe to ("news", "room:*")
	AnonymousPublish []string `yaml:"anonymous_publish" env:"ANONYMOUS_PUBLISH"` // channels anonymous clients may publish to
	// RequireExp refuses tokens without exp ("token has no expiry"); default true (nil: default).
	RequireExp  *bool    `yaml:"require_exp" env:"REQUIRE_EXP"`
	Audience    []string `yaml:"audience" env:"AUDIENCE"`         // when set, a token's aud must hold one of them
	Issuer      string   `yaml:"issuer" env:"ISSUER"`             // when set, a token's iss must be it
	DefaultSend bool     `yaml:"default_send" env:"DEFAULT_SEND"` // tokens without a send claim, and anonymous clients, may send
	// JWKSURL is an identity provider's JWK Set (http or https), whose RS/PS/ES/EdDSA keys verify
	// tokens; fetched at start, every JWKSRefresh, and on a token with an unknown kid.
	JWKSURL     string        `yaml:"jwks_url" env:"JWKS_URL"`
	JWKSRefresh time.Duration `yaml:"jwks_refresh" env:"JWKS_REFRESH"` // default 1h
	JWKSTimeout time.Duration `yaml:"jwks_timeout" env:"JWKS_TIMEOUT"` // longest one fetch may take; default 5s
}

// ExpRequired is require_exp with its default applied.
func (a AuthConfig) ExpRequired() bool {
	if a.RequireExp == nil {
		return DefaultRequireExp
	}
	return *a.RequireExp
}

// Configured reports whether a way to authenticate clients is configured: a JWT secret, a JWT
// public key, a JWKS URL, or anonymous connections. Without one, Load runs the memory broker in
// development mode and Validate refuses every other broker. Every new way to authenticate belongs here.
func (a AuthConfig) Configured() bool {
	return a.JWTSecret != "" || a.JWTPublicKey != "" || a.JWKSURL != "" || a.AllowAnonymous
}

// APIConfig is the HTTP API for services.
type APIConfig struct {
	Key string `yaml:"key" env:"API_KEY"` // bearer key; empty turns the API off
}

// WebSocketConfig sets the client connections.
type WebSocketConfig struct {
	AllowedOrigins []string      `yaml:"allowed_origins" env:"ALLOWED_ORIGINS"`  // "*" allows all; empty: same host only
	MaxFrameSize   int64         `yaml:"max_frame_size" env:"WS_MAX_FRAME_SIZE"` // bytes; larger frames close with 1009
	SendBuffer     int           `yaml:"send_buffer" env:"WS_SEND_BUFFER"`       // frames queued per connection before it counts as slow
	WriteTimeout   time.Duration `yaml:"write_timeout" env:"WS_WRITE_TIMEOUT"`
	// LatencyBudget is how long the node may hold a connection's frames, while it is busy, to
	// write them together in one write; an idle node writes every frame at once. nil: the
	// default (DefaultLatencyBudget); 0: every frame is written at once, busy or not.
	LatencyBudget *time.Duration `yaml:"latency_budget" env:"WS_LATENCY_BUDGET"`
	// WriteDelay was a fixed least time between two writes to one connection, replaced by
	// LatencyBudget: anything but 0 is refused with a message that says so.
	//
	// Deprecated: use LatencyBudget.
	WriteDelay time.Duration `yaml:"write_delay" env:"WS_WRITE_DELAY"`
	// Compression negotiates permessage-deflate with clients that offer it; CompressionLevel is
	// the flate level (1 fastest to 9 smallest). Frames under 128 bytes always go plain.
	Compression      bool          `yaml:"compression" env:"WS_COMPRESSION"`
	CompressionLevel int           `yaml:"compression_level" env:"WS_COMPRESSION_LEVEL"`
	PingInterval     time.Duration `yaml:"ping_interval" env:"WS_PING_INTERVAL"`
	PublishTimeout   time.Duration `yaml:"publish_timeout" env:"WS_PUBLISH_TIMEOUT"` // longest wait for the broker before `unavailable`
}

// Budget is websocket.latency_budget with its default applied.
func (w WebSocketConfig) Budget() time.Duration {
	if w.LatencyBudget == nil {
		return DefaultLatencyBudget
	}
	return *w.LatencyBudget
}

// StreamConfig sets the one-way transports, Server-Sent Events (GET /sse) and NDJSON streaming
// (GET /stream); their send buffer, write timeout and limits are the WebSocket connections'.
type StreamConfig struct {
	Heartbeat   time.Duration `yaml:"heartbeat" env:"HEARTBEAT"`       // a keep-alive (SSE comment, heartbeat line) every this long
	MaxChannels int           `yaml:"max_channels" env:"MAX_CHANNELS"` // most channels one stream names (this bounds its event id)
}

// HistoryConfig bounds what the embedded broker keeps per channel, what one subscribe replays,
// and, per channel pattern, how far back a resume may reach on any broker.
type HistoryConfig struct {
	Size      int           `yaml:"size" env:"SIZE"`             // messages kept per channel (memory broker)
	TTL       time.Duration `yaml:"ttl" env:"TTL"`               // how long they are kept (memory broker)
	MaxReplay int           `yaml:"max_replay" env:"MAX_REPLAY"` // most messages one subscribe replays; beyond, recovered:false
	// MaxBytes bounds the history the memory broker keeps in all (payloads, ids and metadata);
	// beyond it the oldest messages go first, across channels. -1: no bound.
	MaxBytes int64 `yaml:"max_bytes" env:"MAX_BYTES"`
	// Channels bounds history per channel pattern (count and age); the first matching rule wins.
	// On the memory broker it sets what is kept; on the others it bounds what a resume may reach
	// (the broker's own retention stays the outer bound). See HistoryRule.
	Channels []HistoryRule `yaml:"channels" env:"CHANNELS"`
}

// RouterConfig sets the Watermill router's middleware.
type RouterConfig struct {
	DedupeWindow     time.Duration `yaml:"dedupe_window" env:"DEDUPE_WINDOW"`
	DedupeStore      string        `yaml:"dedupe_store" env:"DEDUPE_STORE"`     // auto (redis with the redis broker, else memory), memory or redis
	RetryAttempts    int           `yaml:"retry_attempts" env:"RETRY_ATTEMPTS"` // broker publish attempts after the first
	RetryInitial     time.Duration `yaml:"retry_initial" env:"RETRY_INITIAL"`
	RetryMaxElapsed  time.Duration `yaml:"retry_max_elapsed" env:"RETRY_MAX_ELAPSED"`
	Timeout          time.Duration `yaml:"timeout" env:"TIMEOUT"`                     // longest one broker publish attempt may take; default publish_timeout
	PoisonTopic      string        `yaml:"poison_topic" env:"POISON_TOPIC"`           // logical topic for what failed for good; empty: none
	BreakerFailures  int           `yaml:"breaker_failures" env:"BREAKER_FAILURES"`   // consecutive failed publishes that open the circuit breaker; default 20
	BreakerOpenFor   time.Duration `yaml:"breaker_open_for" env:"BREAKER_OPEN_FOR"`   // how long it stays open before one trial; default 5s
	SigningKeys      []string      `yaml:"signing_keys" env:"SIGNING_KEYS"`           // "id:secret" HMAC keys; the first signs, all verify
	RequireSignature bool          `yaml:"require_signature" env:"REQUIRE_SIGNATURE"` // drop unsigned service messages to the poison topic
}

// LimitsConfig bounds what one client may do. Where 0 means the default, -1 (NoLimit) turns the
// limit off.
type LimitsConfig struct {
	PublishRate        float64 `yaml:"publish_rate" env:"PUBLISH_RATE"`           // publish/send per second per connection; default 100; -1: no limit
	PublishBurst       int     `yaml:"publish_burst" env:"PUBLISH_BURST"`         // default 1000 with the default rate, else the rate rounded up, at least 1
	UserPublishRate    float64 `yaml:"user_publish_rate" env:"USER_PUBLISH_RATE"` // per user, over all its connections on a node; 0: no limit
	UserPublishBurst   int     `yaml:"user_publish_burst" env:"USER_PUBLISH_BURST"`
	ConnectionsPerNode int     `yaml:"connections_per_node" env:"CONNECTIONS_PER_NODE"` // 0: no limit; beyond, upgrades get 503
	ConnectionsPerUser int     `yaml:"connections_per_user" env:"CONNECTIONS_PER_USER"` // on one node; 0: no limit; beyond, upgrades get 429
	// SubscriptionsPerConnection: beyond it a subscribe gets `limit_exceeded` (the connection
	// stays); default 1024; -1: no limit.
	SubscriptionsPerConnection int     `yaml:"subscriptions_per_connection" env:"SUBSCRIPTIONS_PER_CONNECTION"`
	SubscribeRate              float64 `yaml:"subscribe_rate" env:"SUBSCRIBE_RATE"`   // subscribe frames per second per connection; default 50; -1: no limit
	SubscribeBurst             int     `yaml:"subscribe_burst" env:"SUBSCRIBE_BURST"` // default twice subscriptions_per_connection (2048); at least subscriptions_per_connection
	// RPCRate bounds the rpc and refresh frames of a connection (taken before any hook call;
	// over: `rate_limited`); default 20 per second; -1: no limit.
	RPCRate  float64 `yaml:"rpc_rate" env:"RPC_RATE"`
	RPCBurst int     `yaml:"rpc_burst" env:"RPC_BURST"` // default 100 with the default rate, else the rate rounded up, at least 1
	// RateLimitedDisconnect is the strikes of a connection: each `rate_limited` answer takes one,
	// they come back at this many per RateLimitedWindow, and a connection answered `rate_limited`
	// with none left is disconnected (`rate_limited`, close 1008); default 100; -1: never.
	RateLimitedDisconnect int           `yaml:"rate_limited_disconnect" env:"RATE_LIMITED_DISCONNECT"`
	RateLimitedWindow     time.Duration `yaml:"rate_limited_window" env:"RATE_LIMITED_WINDOW"` // default 10s
}

// DrainConfig sets the shutdown on SIGTERM.
type DrainConfig struct {
	Period time.Duration `yaml:"period" env:"PERIOD"` // disconnects are spread over it
}

// EventsConfig sets the connection lifecycle events published for services.
type EventsConfig struct {
	Disabled bool `yaml:"disabled" env:"DISABLED"` // publish no lifecycle events
	Queue    int  `yaml:"queue" env:"QUEUE"`       // events waiting for the broker (memory taken as they come) before new ones are dropped; default 100000
	// Heartbeat is how often the node publishes a node_alive event, so services notice a node
	// that died without saying goodbye; default 5s.
	Heartbeat time.Duration `yaml:"heartbeat" env:"HEARTBEAT"`
	// NodeLost records every connection in the broker's presence, so that when a node dies
	// without a word one surviving node tells a disconnected event (reason node_lost) for each of
	// its connections. Needs a broker that keeps presence.
	NodeLost bool `yaml:"node_lost" env:"NODE_LOST"`
}

// PresenceConfig sets presence (who is in a channel: docs/presence.md), per channel pattern.
// Patterns are as in auth.public_channels: a channel name, a prefix ending in *, or *.
type PresenceConfig struct {
	Channels []string `yaml:"channels" env:"CHANNELS"` // channels whose subscribers are members; empty: presence off
	// JoinLeave are the channels whose subscribers also get join and leave frames, carried in
	// the channel's stream; only channels that are presence channels too.
	JoinLeave []string `yaml:"join_leave" env:"JOIN_LEAVE"`
	// MaxMembers is the most members a channel may have for `presence` (frame and API) to list
	// them; beyond it the answer has the counts only, no members. Default 10000; -1: no cap.
	MaxMembers int           `yaml:"max_members" env:"MAX_MEMBERS"`
	Heartbeat  time.Duration `yaml:"heartbeat" env:"HEARTBEAT"` // the presence heartbeat (members renewed twice per heartbeat); default 5s
	// Coalesce is the window for which a node gathers the joins and leaves it announces in a
	// channel and publishes them as few messages (docs/presence.md); default 100ms (nil:
	// default), 0: each join and leave its own message, at once.
	Coalesce *time.Duration `yaml:"coalesce" env:"COALESCE"`
}

// CoalesceWindow is presence.coalesce with its default applied.
func (p PresenceConfig) CoalesceWindow() time.Duration {
	if p.Coalesce == nil {
		return DefaultPresenceCoalesce
	}
	return *p.Coalesce
}

// LogConfig sets the structured log.
type LogConfig struct {
	Level  string `yaml:"level" env:"LEVEL"`   // debug, info, warn, error
	Format string `yaml:"format" env:"FORMAT"` // text or json
}

// TLSConfig turns on TLS on the listener (https and wss) when both files are set.
type TLSConfig struct {
	CertFile string `yaml:"cert_file" env:"CERT_FILE"` // PEM certificate chain, leaf first
	KeyFile  string `yaml:"key_file" env:"KEY_FILE"`   // PEM private key of the leaf
}

// HTTPConfig sets the timeouts of the HTTP server of the listener (WebSocket connections, once
// upgraded, are kept alive by pings and websocket.write_timeout instead).
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" env:"READ_HEADER_TIMEOUT"` // longest wait for a request's headers; default 10s
	// ReadTimeout bounds the reading of a whole request, headers and body; default 30s. It does not
	// apply to WebSocket connections once upgraded.
	ReadTimeout time.Duration `yaml:"read_timeout" env:"READ_TIMEOUT"`
	IdleTimeout time.Duration `yaml:"idle_timeout" env:"IDLE_TIMEOUT"` // keep-alive connection idle before it is closed; default 120s
}

// AdminConfig is the optional admin listener: net/http/pprof under /debug/pprof/ and /metrics,
// on an address of its own, never on the main listener.
type AdminConfig struct {
	Addr string `yaml:"addr" env:"ADDR"` // host:port; empty: no admin listener
}

// SetDefaults fills every zero setting with its default, but for the settings of the broker
// sections that only the broker uses (jetstream.*, redis.shards, redis.max_len,
// kafka.partitions, kafka.retention, kafka.replication_factor): their 0 means the broker
// package's default (jetstream.DefaultMaxAge, redis.DefaultShards, kafka.DefaultPartitions, ...).
func (c *Config) SetDefaults() {
	setDefault(&c.Addr, DefaultAddr)
	setDefault(&c.Broker, DefaultBroker)
	setDefault(&c.TopicPrefix, DefaultTopicPrefix)
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	setDefault(&c.NATS.URL, DefaultNATSURL)
	// Of the broker sections only the addresses have defaults here: the node uses them outside
	// the broker too (the dedupe store, the log while it waits for the broker). The other
	// settings stay 0, which the broker package's Config reads as its own default.
	setDefault(&c.Redis.Addr, DefaultRedisAddr)
	setDefault(&c.Redis.Mode, DefaultRedisMode)
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = strings.Split(DefaultKafkaBrokers, ",")
	}
	setDefault(&c.WebSocket.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&c.WebSocket.SendBuffer, DefaultSendBuffer)
	setDefault(&c.WebSocket.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.WebSocket.PingInterval, DefaultPingInterval)
	setDefault(&c.WebSocket.CompressionLevel, DefaultCompressionLevel)
	setDefault(&c.WebSocket.PublishTimeout, DefaultPublishTimeout)
	setDefault(&c.Stream.Heartbeat, DefaultStreamHeartbeat)
	setDefault(&c.Stream.MaxChannels, DefaultStreamChannels)
	setDefault(&c.History.Size, DefaultHistorySize)
	setDefault(&c.History.TTL, DefaultHistoryTTL)
	setDefault(&c.History.MaxReplay, DefaultMaxReplay)
	setDefault(&c.History.MaxBytes, DefaultHistoryMaxBytes)
	setDefault(&c.Router.DedupeWindow, DefaultDedupeWindow)
	setDefault(&c.Router.RetryAttempts, DefaultRetryAttempts)
	setDefault(&c.Router.RetryInitial, DefaultRetryInitial)
	setDefault(&c.Router.RetryMaxElapsed, DefaultRetryMaxElapsed)
	setDefault(&c.Router.DedupeStore, DefaultDedupeStore)
	setDefault(&c.Router.Timeout, c.WebSocket.PublishTimeout)
	setDefault(&c.Router.BreakerFailures, DefaultBreakerFailures)
	setDefault(&c.Router.BreakerOpenFor, DefaultBreakerOpenFor)
	c.Limits.setDefaults()
	setDefault(&c.Drain.Period, DefaultDrainPeriod)
	setDefault(&c.Events.Queue, DefaultEventsQueue)
	setDefault(&c.Events.Heartbeat, DefaultEventsHeartbeat)
	setDefault(&c.Presence.MaxMembers, DefaultPresenceMaxMembers)
	setDefault(&c.Presence.Heartbeat, DefaultPresenceHeartbeat)
	c.Webhooks.setDefaults()
	c.Hooks.setDefaults()
	c.Pusher.setDefaults()
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.HTTP.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&c.HTTP.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.HTTP.ReadTimeout, DefaultReadTimeout)
	setDefault(&c.Auth.JWKSRefresh, DefaultJWKSRefresh)
	setDefault(&c.Auth.JWKSTimeout, DefaultJWKSTimeout)
}

// setDefaults fills the limits: the publish burst follows the rate, but is DefaultPublishBurst
// with the default rate (given or not); the subscribe burst is twice the subscriptions a
// connection may hold.
func (l *LimitsConfig) setDefaults() {
	setDefault(&l.PublishRate, DefaultPublishRate)
	if l.PublishBurst == 0 {
		switch {
		case l.PublishRate == DefaultPublishRate: // written out or not, the same default
			l.PublishBurst = DefaultPublishBurst
		case l.PublishRate > 0:
			l.PublishBurst = max(1, int(l.PublishRate+0.999))
		}
	}
	if l.UserPublishRate > 0 && l.UserPublishBurst == 0 {
		l.UserPublishBurst = max(1, int(l.UserPublishRate+0.999))
	}
	setDefault(&l.SubscriptionsPerConnection, DefaultSubscriptionsPerConnection)
	setDefault(&l.SubscribeRate, DefaultSubscribeRate)
	if l.SubscribeBurst == 0 {
		l.SubscribeBurst = DefaultSubscribeBurst
		if l.SubscriptionsPerConnection > 0 {
			l.SubscribeBurst = 2 * l.SubscriptionsPerConnection
		}
	}
	setDefault(&l.RPCRate, DefaultRPCRate)
	if l.RPCBurst == 0 {
		switch {
		case l.RPCRate == DefaultRPCRate:
			l.RPCBurst = DefaultRPCBurst
		case l.RPCRate > 0:
			l.RPCBurst = max(1, int(l.RPCRate+0.999))
		}
	}
	setDefault(&l.RateLimitedDisconnect, DefaultRateLimitedDisconnect)
	setDefault(&l.RateLimitedWindow, DefaultRateLimitedWindow)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func defaultNodeID() string {
	host, _ := os.Hostname()
	return nodeIDFor(host)
}

// nodeIDFor is host plus a random suffix, within the 64 characters Validate allows (host names
// reach 64 characters themselves).
func nodeIDFor(host string) string {
	if host == "" {
		host = "node"
	}
	const maxHost = 64 - 1 - 6 // "-" and the 6 hex digits of the suffix
	if len(host) > maxHost {
		host = host[:maxHost]
	}
	return host + "-" + randomSuffix()
}
