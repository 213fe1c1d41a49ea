// Package configs owns every setting of the gateway: one root Config of nested structs, read from
// a YAML file and then from GATEWAY_* environment variables (the environment wins), completed with
// defaults and checked by Validate, whose errors name the key. Nothing else reads the environment.
package configs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// Defaults.
const (
	DefaultAddr            = ":8080"
	DefaultBroker          = BrokerMemory
	DefaultNATSURL         = "nats://127.0.0.1:4222"
	DefaultRedisAddr       = "127.0.0.1:6379"
	DefaultKafkaBrokers    = "127.0.0.1:9092"
	DefaultTopicPrefix     = "ws"
	DefaultMaxFrameSize    = 64 << 10
	DefaultSendBuffer      = 256
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 25 * time.Second
	DefaultPublishTimeout  = 5 * time.Second
	DefaultHistorySize     = 1000
	DefaultHistoryTTL      = 10 * time.Minute
	DefaultHistoryMaxBytes = 256 << 20
	DefaultMaxReplay       = 1000
	DefaultDedupeWindow    = 2 * time.Minute
	DefaultDrainPeriod     = 10 * time.Second
	DefaultEventsQueue     = 10000
	DefaultRetryAttempts   = 3
	DefaultRetryInitial    = 50 * time.Millisecond
	DefaultRetryMaxElapsed = 3 * time.Second
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"

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
	DefaultSubscribeBurst        = 2 * DefaultSubscriptionsPerConnection
	DefaultRateLimitedDisconnect = 100 // rate_limited answers within the window before a disconnect
	DefaultRateLimitedWindow     = 10 * time.Second

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

// JetStreamConfig bounds the stream the jetstream broker creates.
type JetStreamConfig struct {
	MaxAge     time.Duration `yaml:"max_age" env:"MAX_AGE"`                   // default 24h
	MaxBytes   int64         `yaml:"max_bytes" env:"MAX_BYTES"`               // default 1 GiB
	Replicas   int           `yaml:"replicas" env:"REPLICAS"`                 // default 1
	DupeWindow time.Duration `yaml:"duplicate_window" env:"DUPLICATE_WINDOW"` // default 2m
}

// RedisConfig is for the redis broker.
type RedisConfig struct {
	Addr     string `yaml:"addr" env:"ADDR"`
	Password string `yaml:"password" env:"PASSWORD"`
	DB       int    `yaml:"db" env:"DB"`
	Shards   int    `yaml:"shards" env:"SHARDS"`   // channel streams every node reads; default 16
	MaxLen   int64  `yaml:"max_len" env:"MAX_LEN"` // approximate entries kept per stream; default 100000
}

// KafkaConfig is for the kafka broker.
type KafkaConfig struct {
	Brokers    []string      `yaml:"brokers" env:"BROKERS"`
	Partitions int           `yaml:"partitions" env:"PARTITIONS"`                 // partitions of the channel topic; default 16
	Retention  time.Duration `yaml:"retention" env:"RETENTION"`                   // default 24h
	Replicas   int           `yaml:"replication_factor" env:"REPLICATION_FACTOR"` // default 1
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
	WriteDelay     time.Duration `yaml:"write_delay" env:"WS_WRITE_DELAY"` // least time between two writes to one connection (0: none)
	PingInterval   time.Duration `yaml:"ping_interval" env:"WS_PING_INTERVAL"`
	PublishTimeout time.Duration `yaml:"publish_timeout" env:"WS_PUBLISH_TIMEOUT"` // longest wait for the broker before `unavailable`
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
	Queue    int  `yaml:"queue" env:"QUEUE"`       // events waiting for the broker before new ones are dropped; default 10000
	// Heartbeat is how often the node publishes a node_alive event, so services notice a node
	// that died without saying goodbye; default 5s.
	Heartbeat time.Duration `yaml:"heartbeat" env:"HEARTBEAT"`
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

// SetDefaults fills every zero setting with its default.
func (c *Config) SetDefaults() {
	setDefault(&c.Addr, DefaultAddr)
	setDefault(&c.Broker, DefaultBroker)
	setDefault(&c.TopicPrefix, DefaultTopicPrefix)
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	setDefault(&c.NATS.URL, DefaultNATSURL)
	setDefault(&c.JetStream.MaxAge, 24*time.Hour)
	setDefault(&c.JetStream.MaxBytes, 1<<30)
	setDefault(&c.JetStream.Replicas, 1)
	setDefault(&c.JetStream.DupeWindow, DefaultDedupeWindow)
	setDefault(&c.Redis.Addr, DefaultRedisAddr)
	setDefault(&c.Redis.Shards, 16)
	setDefault(&c.Redis.MaxLen, 100000)
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = strings.Split(DefaultKafkaBrokers, ",")
	}
	setDefault(&c.Kafka.Partitions, 16)
	setDefault(&c.Kafka.Retention, 24*time.Hour)
	setDefault(&c.Kafka.Replicas, 1)
	setDefault(&c.WebSocket.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&c.WebSocket.SendBuffer, DefaultSendBuffer)
	setDefault(&c.WebSocket.WriteTimeout, DefaultWriteTimeout)
	setDefault(&c.WebSocket.PingInterval, DefaultPingInterval)
	setDefault(&c.WebSocket.PublishTimeout, DefaultPublishTimeout)
	setDefault(&c.History.Size, DefaultHistorySize)
	setDefault(&c.History.TTL, DefaultHistoryTTL)
	setDefault(&c.History.MaxReplay, DefaultMaxReplay)
	setDefault(&c.History.MaxBytes, DefaultHistoryMaxBytes)
	setDefault(&c.Router.DedupeWindow, DefaultDedupeWindow)
	setDefault(&c.Router.RetryAttempts, DefaultRetryAttempts)
	setDefault(&c.Router.RetryInitial, DefaultRetryInitial)
	setDefault(&c.Router.RetryMaxElapsed, DefaultRetryMaxElapsed)
	setDefault(&c.Router.DedupeStore, "auto")
	setDefault(&c.Router.Timeout, c.WebSocket.PublishTimeout)
	setDefault(&c.Router.BreakerFailures, 20)
	setDefault(&c.Router.BreakerOpenFor, 5*time.Second)
	c.Limits.setDefaults()
	setDefault(&c.Drain.Period, DefaultDrainPeriod)
	setDefault(&c.Events.Queue, DefaultEventsQueue)
	setDefault(&c.Events.Heartbeat, 5*time.Second)
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

// KeyError is a setting that is not valid: Key is its YAML path, Env its variable.
type KeyError struct {
	Key, Env, Reason string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("invalid setting %s (%s): %s", e.Key, e.Env, e.Reason)
}

// noAuthReason says why a node without a way to authenticate clients is refused, and what to set.
const noAuthReason = "no way to authenticate clients: set auth.jwt_secret (GATEWAY_JWT_SECRET), auth.jwt_public_key " +
	"(GATEWAY_JWT_PUBLIC_KEY), auth.jwks_url (GATEWAY_JWKS_URL) or auth.allow_anonymous (GATEWAY_ALLOW_ANONYMOUS=true); development mode, which makes up " +
	"a secret, runs only on the embedded memory broker (GATEWAY_BROKER=memory), since nodes sharing a broker would each make up their own"

func bad(key, env, format string, args ...any) error {
	return &KeyError{Key: key, Env: "GATEWAY_" + env, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks every setting and returns the first that is wrong, naming its key.
func (c *Config) Validate() error {
	if !hostPort(c.Addr) {
		return bad("addr", "ADDR", "%q is not host:port", c.Addr)
	}
	if c.NodeID == "" || len(c.NodeID) > 64 || strings.ContainsAny(c.NodeID, " \t\n") {
		return bad("node_id", "NODE_ID", "must be 1 to 64 characters without spaces")
	}
	switch c.Broker {
	case BrokerMemory, BrokerNATS, BrokerJetStream, BrokerRedis, BrokerKafka:
	default:
		return bad("broker", "BROKER", "%q is not one of memory, nats, jetstream, redis, kafka", c.Broker)
	}
	if c.BrokerConnectTimeout < 0 {
		return bad("broker_connect_timeout", "BROKER_CONNECT_TIMEOUT", "must not be negative (0 waits for ever)")
	}
	if c.TopicPrefix == "" || len(c.TopicPrefix) > 32 || strings.Trim(c.TopicPrefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return bad("topic_prefix", "TOPIC_PREFIX", "%q must be 1 to 32 of [A-Za-z0-9-]", c.TopicPrefix)
	}
	switch c.Broker {
	case BrokerNATS, BrokerJetStream:
		if strings.TrimSpace(c.NATS.URL) == "" {
			return bad("nats.url", "NATS_URL", "must not be empty")
		}
	case BrokerRedis:
		if !hostPort(c.Redis.Addr) {
			return bad("redis.addr", "REDIS_ADDR", "%q is not host:port", c.Redis.Addr)
		}
		if c.Redis.Shards < 1 || c.Redis.Shards > 1024 {
			return bad("redis.shards", "REDIS_SHARDS", "must be between 1 and 1024")
		}
	case BrokerKafka:
		for _, b := range c.Kafka.Brokers {
			if !hostPort(strings.TrimSpace(b)) {
				return bad("kafka.brokers", "KAFKA_BROKERS", "%q is not host:port", b)
			}
		}
		if c.Kafka.Partitions < 1 || c.Kafka.Partitions > 1024 {
			return bad("kafka.partitions", "KAFKA_PARTITIONS", "must be between 1 and 1024")
		}
	}
	if c.Auth.JWTSecret != "" && len(c.Auth.JWTSecret) < 16 {
		return bad("auth.jwt_secret", "JWT_SECRET", "must be at least 16 bytes")
	}
	if c.Auth.JWTPublicKey != "" {
		if _, err := os.Stat(c.Auth.JWTPublicKey); err != nil {
			return bad("auth.jwt_public_key", "JWT_PUBLIC_KEY", "cannot read %q: %v", c.Auth.JWTPublicKey, errors.Unwrap(err))
		}
	}
	if err := c.Auth.validateTokens(); err != nil {
		return err
	}
	if !c.Auth.Configured() && !c.Development {
		return bad("auth.jwt_secret", "JWT_SECRET", "%s", noAuthReason)
	}
	for _, p := range c.Auth.PublicChannels {
		if !validPattern(p) {
			return bad("auth.public_channels", "PUBLIC_CHANNELS", "%q is not a channel name or a prefix ending in *", p)
		}
	}
	for _, p := range c.Auth.AnonymousPublish {
		if !validPattern(p) {
			return bad("auth.anonymous_publish", "ANONYMOUS_PUBLISH", "%q is not a channel name or a prefix ending in *", p)
		}
	}
	if c.API.Key != "" && len(c.API.Key) < 16 {
		return bad("api.key", "API_KEY", "must be at least 16 characters")
	}
	for _, o := range c.WebSocket.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return bad("websocket.allowed_origins", "ALLOWED_ORIGINS", "%q must be * or an origin like https://example.com", o)
		}
	}
	if c.WebSocket.MaxFrameSize < 1024 || c.WebSocket.MaxFrameSize > 64<<20 {
		return bad("websocket.max_frame_size", "WS_MAX_FRAME_SIZE", "must be between 1024 and 67108864 bytes")
	}
	if c.WebSocket.SendBuffer < 8 || c.WebSocket.SendBuffer > 1<<16 {
		return bad("websocket.send_buffer", "WS_SEND_BUFFER", "must be between 8 and 65536 frames")
	}
	if c.WebSocket.WriteTimeout < time.Millisecond {
		return bad("websocket.write_timeout", "WS_WRITE_TIMEOUT", "must be positive")
	}
	if c.WebSocket.WriteDelay < 0 || c.WebSocket.WriteDelay > time.Second {
		return bad("websocket.write_delay", "WS_WRITE_DELAY", "must be between 0 and 1s")
	}
	if c.WebSocket.PingInterval < 100*time.Millisecond {
		return bad("websocket.ping_interval", "WS_PING_INTERVAL", "must be at least 100ms")
	}
	if c.WebSocket.PublishTimeout < time.Millisecond {
		return bad("websocket.publish_timeout", "WS_PUBLISH_TIMEOUT", "must be positive")
	}
	if c.History.Size < 0 {
		return bad("history.size", "HISTORY_SIZE", "must not be negative")
	}
	if c.History.TTL < 0 {
		return bad("history.ttl", "HISTORY_TTL", "must not be negative")
	}
	if c.History.MaxReplay < 1 {
		return bad("history.max_replay", "HISTORY_MAX_REPLAY", "must be at least 1")
	}
	if c.History.MaxBytes < -1 {
		return bad("history.max_bytes", "HISTORY_MAX_BYTES", "must be a number of bytes, or -1 for no bound")
	}
	if err := c.History.validateRules(); err != nil {
		return err
	}
	if c.Router.DedupeWindow < time.Second {
		return bad("router.dedupe_window", "ROUTER_DEDUPE_WINDOW", "must be at least 1s")
	}
	switch c.Router.DedupeStore {
	case "auto", "memory", "redis":
	default:
		return bad("router.dedupe_store", "ROUTER_DEDUPE_STORE", "%q is not auto, memory or redis", c.Router.DedupeStore)
	}
	if c.Router.Timeout < time.Millisecond {
		return bad("router.timeout", "ROUTER_TIMEOUT", "must be positive")
	}
	if c.Router.BreakerFailures < 1 {
		return bad("router.breaker_failures", "ROUTER_BREAKER_FAILURES", "must be at least 1")
	}
	if c.Router.PoisonTopic != "" && !protocol.ValidChannel(c.Router.PoisonTopic) {
		return bad("router.poison_topic", "ROUTER_POISON_TOPIC", "%q must match [A-Za-z0-9_:.-]{1,128}", c.Router.PoisonTopic)
	}
	for _, k := range c.Router.SigningKeys {
		id, secret, ok := strings.Cut(k, ":")
		if !ok || id == "" || len(secret) < 16 {
			return bad("router.signing_keys", "ROUTER_SIGNING_KEYS", "entries must be id:secret with a secret of at least 16 bytes")
		}
	}
	if c.Router.RequireSignature && len(c.Router.SigningKeys) == 0 {
		return bad("router.require_signature", "ROUTER_REQUIRE_SIGNATURE", "needs router.signing_keys")
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if c.Router.RetryAttempts < 0 || c.Router.RetryAttempts > 100 {
		return bad("router.retry_attempts", "ROUTER_RETRY_ATTEMPTS", "must be between 0 and 100")
	}
	if c.Events.Heartbeat < 10*time.Millisecond {
		return bad("events.heartbeat", "EVENTS_HEARTBEAT", "must be at least 10ms")
	}
	if c.Events.Queue < 1 || c.Events.Queue > 1<<20 {
		return bad("events.queue", "EVENTS_QUEUE", "must be between 1 and 1048576")
	}
	if c.Drain.Period < 0 {
		return bad("drain.period", "DRAIN_PERIOD", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "LOG_LEVEL", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", "LOG_FORMAT", "%q is not text or json", c.Log.Format)
	}
	return c.validateServer()
}

// validateTokens checks the token settings: the JWKS URL and its durations, audience, issuer.
func (a AuthConfig) validateTokens() error {
	if a.JWKSURL != "" {
		u, err := url.Parse(a.JWKSURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("auth.jwks_url", "JWKS_URL", "%q is not an http:// or https:// URL", a.JWKSURL)
		}
	}
	if a.JWKSRefresh < time.Second {
		return bad("auth.jwks_refresh", "JWKS_REFRESH", "must be at least 1s")
	}
	if a.JWKSTimeout < time.Millisecond {
		return bad("auth.jwks_timeout", "JWKS_TIMEOUT", "must be positive")
	}
	for _, aud := range a.Audience {
		if aud == "" {
			return bad("auth.audience", "AUDIENCE", "entries must not be empty")
		}
	}
	if strings.TrimSpace(a.Issuer) != a.Issuer {
		return bad("auth.issuer", "ISSUER", "%q has spaces around it", a.Issuer)
	}
	return nil
}

// validate checks the limits: no negative value but -1 (NoLimit) where it turns a limit off, and
// a subscribe burst that lets a client resubscribe everything it may hold at once.
func (l LimitsConfig) validate() error {
	offOrPositive := func(v float64) bool { return v == NoLimit || v > 0 }
	switch {
	case !offOrPositive(l.PublishRate):
		return bad("limits.publish_rate", "LIMITS_PUBLISH_RATE", "must be positive, or -1 for no limit")
	case l.PublishBurst < 0:
		return bad("limits.publish_burst", "LIMITS_PUBLISH_BURST", "must not be negative")
	case l.UserPublishRate < 0 && l.UserPublishRate != NoLimit:
		return bad("limits.user_publish_rate", "LIMITS_USER_PUBLISH_RATE", "must not be negative (0 or -1: no limit)")
	case l.UserPublishBurst < 0:
		return bad("limits.user_publish_burst", "LIMITS_USER_PUBLISH_BURST", "must not be negative")
	case l.ConnectionsPerNode < 0 || l.ConnectionsPerUser < 0:
		return bad("limits.connections_per_node", "LIMITS_CONNECTIONS_PER_NODE", "connection limits must not be negative")
	case !offOrPositive(float64(l.SubscriptionsPerConnection)):
		return bad("limits.subscriptions_per_connection", "LIMITS_SUBSCRIPTIONS_PER_CONNECTION", "must be positive, or -1 for no limit")
	case !offOrPositive(l.SubscribeRate):
		return bad("limits.subscribe_rate", "LIMITS_SUBSCRIBE_RATE", "must be positive, or -1 for no limit")
	case l.SubscribeBurst < 1:
		return bad("limits.subscribe_burst", "LIMITS_SUBSCRIBE_BURST", "must be positive")
	case l.SubscribeRate > 0 && l.SubscriptionsPerConnection > 0 && l.SubscribeBurst < l.SubscriptionsPerConnection:
		return bad("limits.subscribe_burst", "LIMITS_SUBSCRIBE_BURST", "%d is below limits.subscriptions_per_connection (%d): a reconnecting client could not resubscribe everything at once",
			l.SubscribeBurst, l.SubscriptionsPerConnection)
	case !offOrPositive(float64(l.RateLimitedDisconnect)):
		return bad("limits.rate_limited_disconnect", "LIMITS_RATE_LIMITED_DISCONNECT", "must be positive, or -1 to never disconnect")
	case l.RateLimitedWindow < time.Millisecond:
		return bad("limits.rate_limited_window", "LIMITS_RATE_LIMITED_WINDOW", "must be positive")
	}
	return nil
}

// validateServer checks the listener's settings: TLS, HTTP timeouts and the admin listener.
func (c *Config) validateServer() error {
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if c.HTTP.ReadHeaderTimeout < time.Millisecond {
		return bad("http.read_header_timeout", "HTTP_READ_HEADER_TIMEOUT", "must be positive")
	}
	if c.HTTP.IdleTimeout < time.Millisecond {
		return bad("http.idle_timeout", "HTTP_IDLE_TIMEOUT", "must be positive")
	}
	if c.HTTP.ReadTimeout < time.Millisecond {
		return bad("http.read_timeout", "HTTP_READ_TIMEOUT", "must be positive")
	}
	if c.Admin.Addr != "" {
		if !hostPort(c.Admin.Addr) {
			return bad("admin.addr", "ADMIN_ADDR", "%q is not host:port", c.Admin.Addr)
		}
		if sameListener(c.Admin.Addr, c.Addr) {
			return bad("admin.addr", "ADMIN_ADDR", "%q is the main listener's address %q: the admin listener must have a port of its own", c.Admin.Addr, c.Addr)
		}
	}
	return nil
}

// validate checks that the certificate and key are both set or both empty, readable, and a pair.
func (t TLSConfig) validate() error {
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		return nil
	case t.KeyFile == "":
		return bad("tls.key_file", "TLS_KEY_FILE", "must be set together with tls.cert_file")
	case t.CertFile == "":
		return bad("tls.cert_file", "TLS_CERT_FILE", "must be set together with tls.key_file")
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return bad("tls.cert_file", "TLS_CERT_FILE", "cannot read %q: %v", t.CertFile, errors.Unwrap(err))
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		return bad("tls.key_file", "TLS_KEY_FILE", "cannot read %q: %v", t.KeyFile, errors.Unwrap(err))
	}
	if _, err := LoadCertificate(certPEM, keyPEM); err != nil {
		return err
	}
	return nil
}

// LoadCertificate parses a PEM certificate chain and its private key; the error is a *KeyError
// naming tls.cert_file or tls.key_file.
func LoadCertificate(certPEM, keyPEM []byte) (tls.Certificate, error) {
	var certs int
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return tls.Certificate{}, bad("tls.cert_file", "TLS_CERT_FILE", "certificate %d: %v", certs+1, err)
		}
		certs++
	}
	if certs == 0 {
		return tls.Certificate{}, bad("tls.cert_file", "TLS_CERT_FILE", "holds no PEM CERTIFICATE block")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, bad("tls.key_file", "TLS_KEY_FILE", "not the private key of tls.cert_file: %v", err)
	}
	return cert, nil
}

// sameListener reports whether listening on a would take b's port: the same port (0 excepted,
// a random one) on the same host or on all interfaces.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return false
	}
	na, err1 := net.LookupPort("tcp", pa)
	nb, err2 := net.LookupPort("tcp", pb)
	if err1 != nil || err2 != nil || na != nb || na == 0 {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return wildcard(ha) || wildcard(hb) || strings.EqualFold(ha, hb)
}

// hostPort reports whether s is host:port with a port that is a number from 0 to 65535 or a
// service name, so a wrong port is refused here rather than when the node listens or dials.
func hostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// validPattern reports whether p is a channel name, or a prefix of one followed by '*'.
func validPattern(p string) bool {
	name := strings.TrimSuffix(p, "*")
	if name == "" {
		return p == "*"
	}
	return protocol.ValidChannel(name) || name == protocol.UserChannel
}
