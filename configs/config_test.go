package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
)

// secret is a valid JWT secret (16 bytes), so that Validate has a way to authenticate clients.
const secret = "GATEWAY_JWT_SECRET=0123456789abcdef"

// writeFile writes content to a file in a fresh temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load with nothing: %v", err)
	}
	if !cfg.Development {
		t.Error("Development is false with no file and no environment")
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	if len(cfg.NodeID) == 0 || len(cfg.NodeID) > 64 || !strings.HasPrefix(cfg.NodeID, host[:min(len(host), 57)]+"-") {
		t.Errorf("NodeID = %q, want the host name %q plus a suffix", cfg.NodeID, host)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Addr", cfg.Addr, DefaultAddr},
		{"Broker", cfg.Broker, DefaultBroker},
		{"TopicPrefix", cfg.TopicPrefix, DefaultTopicPrefix},
		{"NATS.URL", cfg.NATS.URL, DefaultNATSURL},
		// The broker's own settings stay 0: the broker package's defaults (TestBrokerDefaults).
		{"JetStream", cfg.JetStream, JetStreamConfig{}},
		{"Redis.Addr", cfg.Redis.Addr, DefaultRedisAddr},
		{"Redis.Password", cfg.Redis.Password, ""},
		{"Redis.DB", cfg.Redis.DB, 0},
		{"Redis.Shards", cfg.Redis.Shards, 0},
		{"Redis.MaxLen", cfg.Redis.MaxLen, int64(0)},
		{"Kafka.Brokers", cfg.Kafka.Brokers, strings.Split(DefaultKafkaBrokers, ",")},
		{"Kafka.Partitions", cfg.Kafka.Partitions, 0},
		{"Kafka.Retention", cfg.Kafka.Retention, time.Duration(0)},
		{"Kafka.Replicas", cfg.Kafka.Replicas, 0},
		{"Auth.JWTSecret", cfg.Auth.JWTSecret, ""},
		{"Auth.JWTPublicKey", cfg.Auth.JWTPublicKey, ""},
		{"Auth.AllowAnonymous", cfg.Auth.AllowAnonymous, false},
		{"Auth.PublicChannels", len(cfg.Auth.PublicChannels), 0},
		{"Auth.AnonymousPublish", len(cfg.Auth.AnonymousPublish), 0},
		{"API.Key", cfg.API.Key, ""},
		{"WebSocket.AllowedOrigins", len(cfg.WebSocket.AllowedOrigins), 0},
		{"WebSocket.MaxFrameSize", cfg.WebSocket.MaxFrameSize, int64(DefaultMaxFrameSize)},
		{"WebSocket.SendBuffer", cfg.WebSocket.SendBuffer, DefaultSendBuffer},
		{"WebSocket.WriteTimeout", cfg.WebSocket.WriteTimeout, DefaultWriteTimeout},
		{"WebSocket.PingInterval", cfg.WebSocket.PingInterval, DefaultPingInterval},
		{"WebSocket.Compression", cfg.WebSocket.Compression, false},
		{"WebSocket.CompressionLevel", cfg.WebSocket.CompressionLevel, DefaultCompressionLevel},
		{"WebSocket.PublishTimeout", cfg.WebSocket.PublishTimeout, DefaultPublishTimeout},
		{"History.Size", cfg.History.Size, DefaultHistorySize},
		{"History.TTL", cfg.History.TTL, DefaultHistoryTTL},
		{"History.MaxReplay", cfg.History.MaxReplay, DefaultMaxReplay},
		{"Router.DedupeWindow", cfg.Router.DedupeWindow, DefaultDedupeWindow},
		{"Router.RetryAttempts", cfg.Router.RetryAttempts, DefaultRetryAttempts},
		{"Router.RetryInitial", cfg.Router.RetryInitial, DefaultRetryInitial},
		{"Router.RetryMaxElapsed", cfg.Router.RetryMaxElapsed, DefaultRetryMaxElapsed},
		{"Router.DedupeStore", cfg.Router.DedupeStore, DefaultDedupeStore},
		{"Router.Timeout", cfg.Router.Timeout, DefaultPublishTimeout},
		{"Router.BreakerFailures", cfg.Router.BreakerFailures, DefaultBreakerFailures},
		{"Router.BreakerOpenFor", cfg.Router.BreakerOpenFor, DefaultBreakerOpenFor},
		{"Events.Heartbeat", cfg.Events.Heartbeat, DefaultEventsHeartbeat},
		{"Events.Queue", cfg.Events.Queue, DefaultEventsQueue},
		{"Presence.Channels", len(cfg.Presence.Channels), 0},
		{"Presence.JoinLeave", len(cfg.Presence.JoinLeave), 0},
		{"Presence.MaxMembers", cfg.Presence.MaxMembers, DefaultPresenceMaxMembers},
		{"Presence.Heartbeat", cfg.Presence.Heartbeat, DefaultPresenceHeartbeat},
		{"Presence.CoalesceWindow()", cfg.Presence.CoalesceWindow(), DefaultPresenceCoalesce},
		{"WebSocket.Budget()", cfg.WebSocket.Budget(), DefaultLatencyBudget},
		{"Limits.PublishRate", cfg.Limits.PublishRate, float64(DefaultPublishRate)},
		{"Limits.PublishBurst", cfg.Limits.PublishBurst, DefaultPublishBurst},
		{"Limits.UserPublishRate", cfg.Limits.UserPublishRate, 0.0},
		{"Limits.SubscriptionsPerConnection", cfg.Limits.SubscriptionsPerConnection, DefaultSubscriptionsPerConnection},
		{"Limits.SubscribeRate", cfg.Limits.SubscribeRate, float64(DefaultSubscribeRate)},
		{"Limits.SubscribeBurst", cfg.Limits.SubscribeBurst, DefaultSubscribeBurst},
		{"Limits.RPCRate", cfg.Limits.RPCRate, float64(DefaultRPCRate)},
		{"Limits.RPCBurst", cfg.Limits.RPCBurst, DefaultRPCBurst},
		{"Limits.RateLimitedDisconnect", cfg.Limits.RateLimitedDisconnect, DefaultRateLimitedDisconnect},
		{"Limits.RateLimitedWindow", cfg.Limits.RateLimitedWindow, DefaultRateLimitedWindow},
		{"Drain.Period", cfg.Drain.Period, DefaultDrainPeriod},
		{"Log.Level", cfg.Log.Level, DefaultLogLevel},
		{"Log.Format", cfg.Log.Format, DefaultLogFormat},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestDevelopment: development mode is the memory broker with no way to authenticate clients,
// whatever else is set.
func TestDevelopment(t *testing.T) {
	tests := []struct {
		name    string
		file    string // YAML content; no file when empty
		environ []string
		dev     bool
	}{
		{name: "nothing", dev: true},
		{name: "other variables only", environ: []string{"HOME=/root", "PATH=/bin", "GATEWAYX=1", "gateway_addr=:1"}, dev: true},
		{name: "a JWT secret", environ: []string{secret}},
		{name: "a file and a secret", file: "broker: memory\n", environ: []string{secret}},
		{name: "an empty file and a secret", file: "# nothing\n", environ: []string{secret}},
		{name: "anonymous", environ: []string{"GATEWAY_ALLOW_ANONYMOUS=true"}},
		{name: "a public key", file: "auth:\n  jwt_public_key: " + writeFile(t, "pub.pem", "x") + "\n"},
		{name: "only the address", environ: []string{"GATEWAY_ADDR=:8081"}, dev: true},
		{name: "the memory broker named", environ: []string{"GATEWAY_BROKER=memory", "GATEWAY_API_KEY=0123456789abcdef"}, dev: true},
		{name: "a file without auth", file: "addr: \":8081\"\n", dev: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, "gateway.yaml", tt.file)
			}
			cfg, err := Load(path, tt.environ)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Development != tt.dev {
				t.Fatalf("Development = %v, want %v", cfg.Development, tt.dev)
			}
		})
	}
}

func TestEnvBeatsFile(t *testing.T) {
	path := writeFile(t, "gateway.yaml", `
addr: ":9000"
node_id: from-file
broker: redis
topic_prefix: file
redis:
  addr: "redis-file:6379"
  shards: 8
auth:
  jwt_secret: "file-secret-0123456789"
  allow_anonymous: true
  public_channels: [news, "room:*"]
websocket:
  allowed_origins: ["https://file.example"]
  send_buffer: 64
  write_timeout: 3s
log:
  level: debug
`)
	cfg, err := Load(path, []string{
		"GATEWAY_ADDR=:9001",
		"GATEWAY_REDIS_ADDR=redis-env:6380",
		"GATEWAY_JWT_SECRET=env-secret-0123456789",
		"GATEWAY_ALLOW_ANONYMOUS=false",
		"GATEWAY_PUBLIC_CHANNELS=lobby",
		"GATEWAY_WS_WRITE_TIMEOUT=7s",
		"GATEWAY_TOPIC_PREFIX=", // empty: does not override the file
		"OTHER_ADDR=:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		// From the environment.
		{"Addr", cfg.Addr, ":9001"},
		{"Redis.Addr", cfg.Redis.Addr, "redis-env:6380"},
		{"Auth.JWTSecret", cfg.Auth.JWTSecret, "env-secret-0123456789"},
		{"Auth.AllowAnonymous", cfg.Auth.AllowAnonymous, false},
		{"Auth.PublicChannels", cfg.Auth.PublicChannels, []string{"lobby"}},
		{"WebSocket.WriteTimeout", cfg.WebSocket.WriteTimeout, 7 * time.Second},
		// From the file.
		{"NodeID", cfg.NodeID, "from-file"},
		{"Broker", cfg.Broker, BrokerRedis},
		{"TopicPrefix", cfg.TopicPrefix, "file"},
		{"Redis.Shards", cfg.Redis.Shards, 8},
		{"WebSocket.AllowedOrigins", cfg.WebSocket.AllowedOrigins, []string{"https://file.example"}},
		{"WebSocket.SendBuffer", cfg.WebSocket.SendBuffer, 64},
		{"Log.Level", cfg.Log.Level, "debug"},
		// Defaults.
		{"Log.Format", cfg.Log.Format, DefaultLogFormat},
		{"Redis.MaxLen", cfg.Redis.MaxLen, int64(0)}, // the broker's default
		{"Development", cfg.Development, false},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestContractEnv: every variable of PROTOCOL.md section 1 reaches its setting.
func TestContractEnv(t *testing.T) {
	pub := writeFile(t, "jwt.pub", "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
	tests := []struct {
		env   string
		noSec bool // do not add the JWT secret
		got   func(*Config) any
		want  any
	}{
		{env: "GATEWAY_ADDR=127.0.0.1:9999", got: func(c *Config) any { return c.Addr }, want: "127.0.0.1:9999"},
		{env: "GATEWAY_ADDR=[::1]:8443", got: func(c *Config) any { return c.Addr }, want: "[::1]:8443"},
		{env: "GATEWAY_NODE_ID=node-a.eu-1", got: func(c *Config) any { return c.NodeID }, want: "node-a.eu-1"},
		{env: "GATEWAY_BROKER=memory", got: func(c *Config) any { return c.Broker }, want: BrokerMemory},
		{env: "GATEWAY_BROKER=nats", got: func(c *Config) any { return c.Broker }, want: BrokerNATS},
		{env: "GATEWAY_BROKER=jetstream", got: func(c *Config) any { return c.Broker }, want: BrokerJetStream},
		{env: "GATEWAY_BROKER=redis", got: func(c *Config) any { return c.Broker }, want: BrokerRedis},
		{env: "GATEWAY_BROKER=kafka", got: func(c *Config) any { return c.Broker }, want: BrokerKafka},
		{env: "GATEWAY_NATS_URL=nats://a:4222,nats://b:4222", got: func(c *Config) any { return c.NATS.URL }, want: "nats://a:4222,nats://b:4222"},
		{env: "GATEWAY_REDIS_ADDR=redis.internal:6380", got: func(c *Config) any { return c.Redis.Addr }, want: "redis.internal:6380"},
		{env: "GATEWAY_KAFKA_BROKERS=k1:9092", got: func(c *Config) any { return c.Kafka.Brokers }, want: []string{"k1:9092"}},
		{env: "GATEWAY_KAFKA_BROKERS=k1:9092,k2:9093,k3:9094", got: func(c *Config) any { return c.Kafka.Brokers }, want: []string{"k1:9092", "k2:9093", "k3:9094"}},
		{env: "GATEWAY_KAFKA_BROKERS=k1:9092, k2:9093", got: func(c *Config) any { return c.Kafka.Brokers }, want: []string{"k1:9092", "k2:9093"}},
		{env: "GATEWAY_TOPIC_PREFIX=test-Run-42", got: func(c *Config) any { return c.TopicPrefix }, want: "test-Run-42"},
		{env: "GATEWAY_JWT_SECRET=abcdefghijklmnopqrstuvwxyz", noSec: true, got: func(c *Config) any { return c.Auth.JWTSecret }, want: "abcdefghijklmnopqrstuvwxyz"},
		{env: "GATEWAY_JWT_PUBLIC_KEY=" + pub, noSec: true, got: func(c *Config) any { return c.Auth.JWTPublicKey }, want: pub},
		{env: "GATEWAY_API_KEY=0123456789abcdef0123", got: func(c *Config) any { return c.API.Key }, want: "0123456789abcdef0123"},
		{env: "GATEWAY_ALLOW_ANONYMOUS=true", noSec: true, got: func(c *Config) any { return c.Auth.AllowAnonymous }, want: true},
		{env: "GATEWAY_ALLOW_ANONYMOUS=1", noSec: true, got: func(c *Config) any { return c.Auth.AllowAnonymous }, want: true},
		{env: "GATEWAY_ALLOW_ANONYMOUS=false", got: func(c *Config) any { return c.Auth.AllowAnonymous }, want: false},
		{env: "GATEWAY_ALLOWED_ORIGINS=*", got: func(c *Config) any { return c.WebSocket.AllowedOrigins }, want: []string{"*"}},
		{env: "GATEWAY_ALLOWED_ORIGINS=https://a.example,http://localhost:3000", got: func(c *Config) any { return c.WebSocket.AllowedOrigins }, want: []string{"https://a.example", "http://localhost:3000"}},
		{env: "GATEWAY_ALLOWED_ORIGINS=https://a.example, https://b.example", got: func(c *Config) any { return c.WebSocket.AllowedOrigins }, want: []string{"https://a.example", "https://b.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			environ := []string{tt.env}
			if !tt.noSec {
				environ = append(environ, secret)
			}
			cfg, err := Load("", environ)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.got(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
			if cfg.Development && tt.noSec {
				t.Fatal("Development with a way to authenticate set")
			}
		})
	}
}

// TestOtherEnv: the variables beyond the contract reach their settings too.
func TestOtherEnv(t *testing.T) {
	cfg, err := Load("", []string{
		secret,
		"GATEWAY_JETSTREAM_MAX_AGE=1h",
		"GATEWAY_JETSTREAM_MAX_BYTES=2048",
		"GATEWAY_JETSTREAM_REPLICAS=3",
		"GATEWAY_JETSTREAM_DUPLICATE_WINDOW=30s",
		"GATEWAY_REDIS_PASSWORD=pw",
		"GATEWAY_REDIS_DB=2",
		"GATEWAY_REDIS_SHARDS=4",
		"GATEWAY_REDIS_MAX_LEN=500",
		"GATEWAY_KAFKA_PARTITIONS=6",
		"GATEWAY_KAFKA_RETENTION=72h",
		"GATEWAY_KAFKA_REPLICATION_FACTOR=2",
		"GATEWAY_PUBLIC_CHANNELS=news,room:*",
		"GATEWAY_ANONYMOUS_PUBLISH=guest:*",
		"GATEWAY_WS_MAX_FRAME_SIZE=1048576",
		"GATEWAY_WS_SEND_BUFFER=32",
		"GATEWAY_WS_WRITE_TIMEOUT=2s",
		"GATEWAY_WS_PING_INTERVAL=500ms",
		"GATEWAY_WS_PUBLISH_TIMEOUT=1500ms",
		"GATEWAY_HISTORY_SIZE=10",
		"GATEWAY_HISTORY_TTL=1m",
		"GATEWAY_HISTORY_MAX_REPLAY=20",
		"GATEWAY_HISTORY_MAX_BYTES=1048576",
		"GATEWAY_ROUTER_DEDUPE_WINDOW=5m",
		"GATEWAY_ROUTER_RETRY_ATTEMPTS=7",
		"GATEWAY_ROUTER_RETRY_INITIAL=10ms",
		"GATEWAY_ROUTER_RETRY_MAX_ELAPSED=1s",
		"GATEWAY_ROUTER_DEDUPE_STORE=redis",
		"GATEWAY_ROUTER_TIMEOUT=3s",
		"GATEWAY_ROUTER_POISON_TOPIC=poison",
		"GATEWAY_ROUTER_BREAKER_FAILURES=3",
		"GATEWAY_ROUTER_BREAKER_OPEN_FOR=2s",
		"GATEWAY_ROUTER_SIGNING_KEYS=k2:0123456789abcdefXYZ, k1:0123456789abcdefOLD",
		"GATEWAY_ROUTER_REQUIRE_SIGNATURE=true",
		"GATEWAY_LIMITS_PUBLISH_RATE=2.5",
		"GATEWAY_LIMITS_USER_PUBLISH_RATE=10",
		"GATEWAY_LIMITS_USER_PUBLISH_BURST=20",
		"GATEWAY_LIMITS_CONNECTIONS_PER_NODE=1000",
		"GATEWAY_LIMITS_CONNECTIONS_PER_USER=5",
		"GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=10",
		"GATEWAY_LIMITS_SUBSCRIBE_RATE=2",
		"GATEWAY_LIMITS_RATE_LIMITED_DISCONNECT=7",
		"GATEWAY_LIMITS_RATE_LIMITED_WINDOW=3s",
		"GATEWAY_EVENTS_DISABLED=true",
		"GATEWAY_EVENTS_QUEUE=50",
		"GATEWAY_EVENTS_HEARTBEAT=2s",
		"GATEWAY_DRAIN_PERIOD=30s",
		"GATEWAY_LOG_LEVEL=warn",
		"GATEWAY_LOG_FORMAT=json",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := *cfg
	want.JetStream = JetStreamConfig{MaxAge: time.Hour, MaxBytes: 2048, Replicas: 3, DupeWindow: 30 * time.Second}
	want.Redis = RedisConfig{Mode: DefaultRedisMode, Addr: DefaultRedisAddr, Password: "pw", DB: 2, Shards: 4, MaxLen: 500}
	want.Kafka = KafkaConfig{Brokers: []string{DefaultKafkaBrokers}, Partitions: 6, Retention: 72 * time.Hour, Replicas: 2}
	want.Auth.PublicChannels = []string{"news", "room:*"}
	want.Auth.AnonymousPublish = []string{"guest:*"}
	want.WebSocket = WebSocketConfig{MaxFrameSize: 1 << 20, SendBuffer: 32, WriteTimeout: 2 * time.Second,
		PingInterval: 500 * time.Millisecond, PublishTimeout: 1500 * time.Millisecond, CompressionLevel: DefaultCompressionLevel}
	want.History = HistoryConfig{Size: 10, TTL: time.Minute, MaxReplay: 20, MaxBytes: 1 << 20}
	want.Router = RouterConfig{DedupeWindow: 5 * time.Minute, RetryAttempts: 7, RetryInitial: 10 * time.Millisecond, RetryMaxElapsed: time.Second,
		DedupeStore: "redis", Timeout: 3 * time.Second, PoisonTopic: "poison", BreakerFailures: 3, BreakerOpenFor: 2 * time.Second,
		SigningKeys: []string{"k2:0123456789abcdefXYZ", "k1:0123456789abcdefOLD"}, RequireSignature: true}
	want.Limits = LimitsConfig{PublishRate: 2.5, PublishBurst: 3, UserPublishRate: 10, UserPublishBurst: 20, ConnectionsPerNode: 1000, ConnectionsPerUser: 5,
		SubscriptionsPerConnection: 10, SubscribeRate: 2, SubscribeBurst: 20, RPCRate: 20, RPCBurst: 100, RateLimitedDisconnect: 7, RateLimitedWindow: 3 * time.Second}
	want.Events = EventsConfig{Disabled: true, Queue: 50, Heartbeat: 2 * time.Second}
	want.Drain = DrainConfig{Period: 30 * time.Second}
	want.Log = LogConfig{Level: "warn", Format: "json"}
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", *cfg, want)
	}
}

// TestFileErrors: a YAML error is one line naming the file, the line and the key at fault.
func TestFileErrors(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"unknown key", "addres: \":8080\"\n", "line 1: unknown key addres (did you mean addr?)"},
		{"unknown nested key", "websocket:\n  max_frame: 1024\n", "line 2: unknown key websocket.max_frame"},
		{"unknown section", "rabbitmq:\n  url: amqp://x\n", "unknown key rabbitmq"},
		{"development is not a key", "development: true\n", "unknown key development"},
		{"malformed", "addr: [\n", "yaml"},
		{"bad indentation", "auth:\n  jwt_secret: a\n allow_anonymous: true\n", `line 3 (key allow_anonymous)`},
		{"tab indentation", "auth:\n\tjwt_secret: a\n", "yaml"},
		{"unclosed list on the line before", "addr: x\nwebsocket:\n  allowed_origins: [a, b\n  send_buffer: 9\n", `line 3 (key allowed_origins)`},
		{"unclosed mapping", "redis: {addr: x,\n  db: 1\n", `line 1 (key redis)`},
		{"a secret is not quoted back", "auth:\n  jwt_secret: \"s3cret-value\n  allow_anonymous: true\n", "(key jwt_secret)"},
		{"wrong type", "websocket:\n  send_buffer: lots\n", "invalid setting websocket.send_buffer (GATEWAY_WS_SEND_BUFFER): line 2: cannot unmarshal"},
		{"wrong type in a flow mapping", "redis: {max_len: big}\n", "invalid setting redis.max_len (GATEWAY_REDIS_MAX_LEN): line 1: cannot unmarshal !!str `big`"},
		{"list for a string", "addr: [a, b]\n", "invalid setting addr (GATEWAY_ADDR)"},
		{"string for a list", "kafka:\n  brokers: a:1\n", "invalid setting kafka.brokers"},
		{"list item of the wrong type", "auth:\n  public_channels:\n    - a\n    - [b]\n", "invalid setting auth.public_channels (GATEWAY_PUBLIC_CHANNELS): line 4"},
		{"bad duration", "drain:\n  period: soon\n", "invalid setting drain.period"},
		{"duration without unit", "drain:\n  period: 10\n", "cannot unmarshal"},
		{"bad bool", "auth:\n  allow_anonymous: maybe\n", "invalid setting auth.allow_anonymous"},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "gateway.yaml", tt.file)
			_, err := Load(path, []string{secret})
			if err == nil {
				t.Fatal("Load accepted the file")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file and contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is more than one line", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q quotes a secret", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), []string{secret})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v, want not exist", err)
		}
	})
}

// TestValidate: each rule refuses with a *KeyError naming the key and its variable.
func TestValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		file    string   // YAML content, for values the environment cannot express
		environ []string // the JWT secret is added unless noSec
		noSec   bool
		key     string
	}{
		{name: "addr without port", environ: []string{"GATEWAY_ADDR=8080"}, key: "addr"},
		{name: "history rule bad pattern", environ: []string{"GATEWAY_HISTORY_CHANNELS=a:*=3,t!=5"}, key: "history.channels"},
		{name: "history rule star inside", environ: []string{"GATEWAY_HISTORY_CHANNELS=a*b=5"}, key: "history.channels"},
		{name: "history rule without bounds", environ: []string{"GATEWAY_HISTORY_CHANNELS=a:*=/"}, key: "history.channels"},
		{name: "history rule negative size", file: "history:\n  channels:\n    - {pattern: a, size: -1}\n", key: "history.channels"},
		{name: "history rule negative ttl", file: "history:\n  channels:\n    - {pattern: a, ttl: -1s}\n", key: "history.channels"},
		{name: "history rule without pattern", file: "history:\n  channels:\n    - {size: 3}\n", key: "history.channels"},
		{name: "history rules good", environ: []string{"GATEWAY_HISTORY_CHANNELS=a:*=3,*=/1h,$user=2/5m,exact=1"}},
		{name: "addr bad port", environ: []string{"GATEWAY_ADDR=:99999"}, key: "addr"},
		{name: "addr port not a number", environ: []string{"GATEWAY_ADDR=:eighty"}, key: "addr"},
		{name: "addr bad brackets", environ: []string{"GATEWAY_ADDR=[::1:8080"}, key: "addr"},
		{name: "node id with space", environ: []string{"GATEWAY_NODE_ID=node one"}, key: "node_id"},
		{name: "node id 65 chars", environ: []string{"GATEWAY_NODE_ID=" + strings.Repeat("n", 65)}, key: "node_id"},
		{name: "bad broker name", environ: []string{"GATEWAY_BROKER=rabbitmq"}, key: "broker"},
		{name: "broker name wrong case", environ: []string{"GATEWAY_BROKER=NATS"}, key: "broker"},
		{name: "prefix with dot", environ: []string{"GATEWAY_TOPIC_PREFIX=ws.test"}, key: "topic_prefix"},
		{name: "prefix with underscore", environ: []string{"GATEWAY_TOPIC_PREFIX=ws_test"}, key: "topic_prefix"},
		{name: "prefix with star", environ: []string{"GATEWAY_TOPIC_PREFIX=*"}, key: "topic_prefix"},
		{name: "prefix with space inside", environ: []string{"GATEWAY_TOPIC_PREFIX=a b"}, key: "topic_prefix"},
		{name: "prefix 33 chars", environ: []string{"GATEWAY_TOPIC_PREFIX=" + strings.Repeat("p", 33)}, key: "topic_prefix"},
		{name: "nats url blank", file: "broker: nats\nnats:\n  url: \" \"\n", key: "nats.url"},
		{name: "jetstream url blank", file: "broker: jetstream\nnats:\n  url: \" \"\n", key: "nats.url"},
		{name: "nats url list unparsable", environ: []string{"GATEWAY_BROKER=nats", "GATEWAY_NATS_URL=nats://a:4222,nats://bad host:1"}, key: "nats.url"},
		{name: "jetstream url list unparsable", environ: []string{"GATEWAY_BROKER=jetstream", "GATEWAY_NATS_URL=nats://a:4222, nats://b:%zz"}, key: "nats.url"},
		{name: "redis addr without port", environ: []string{"GATEWAY_BROKER=redis", "GATEWAY_REDIS_ADDR=redis"}, key: "redis.addr"},
		{name: "kafka broker without port", environ: []string{"GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS=k1:9092,k2"}, key: "kafka.brokers"},
		{name: "kafka empty broker", environ: []string{"GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS=k1:9092,"}, key: "kafka.brokers"},
		{name: "short JWT secret", environ: []string{"GATEWAY_JWT_SECRET=short"}, noSec: true, key: "auth.jwt_secret"},
		{name: "missing public key file", environ: []string{"GATEWAY_JWT_PUBLIC_KEY=" + filepath.Join(dir, "missing.pem")}, noSec: true, key: "auth.jwt_public_key"},
		{name: "no auth on redis", environ: []string{"GATEWAY_BROKER=redis"}, noSec: true, key: "auth.jwt_secret"},
		{name: "no auth on nats, from a file", file: "broker: nats\n", noSec: true, key: "auth.jwt_secret"},
		{name: "no auth on kafka, anonymous off", environ: []string{"GATEWAY_BROKER=kafka", "GATEWAY_ALLOW_ANONYMOUS=false"}, noSec: true, key: "auth.jwt_secret"},
		{name: "negative broker connect timeout", environ: []string{"GATEWAY_BROKER_CONNECT_TIMEOUT=-1s"}, key: "broker_connect_timeout"},
		{name: "bad public channel", environ: []string{"GATEWAY_PUBLIC_CHANNELS=news,room *"}, key: "auth.public_channels"},
		{name: "public channel star inside", environ: []string{"GATEWAY_PUBLIC_CHANNELS=ro*om"}, key: "auth.public_channels"},
		{name: "public channel empty entry", environ: []string{"GATEWAY_PUBLIC_CHANNELS=news,,room"}, key: "auth.public_channels"},
		{name: "public channel 129 chars", file: "auth:\n  public_channels: [" + strings.Repeat("c", 129) + "]\n", key: "auth.public_channels"},
		{name: "bad anonymous publish", environ: []string{"GATEWAY_ANONYMOUS_PUBLISH=a/b"}, key: "auth.anonymous_publish"},
		{name: "short api key", environ: []string{"GATEWAY_API_KEY=123"}, key: "api.key"},
		{name: "bad origin", environ: []string{"GATEWAY_ALLOWED_ORIGINS=example.com"}, key: "websocket.allowed_origins"},
		{name: "bad second origin", environ: []string{"GATEWAY_ALLOWED_ORIGINS=https://a.example,b.example"}, key: "websocket.allowed_origins"},
		{name: "frame size too small", environ: []string{"GATEWAY_WS_MAX_FRAME_SIZE=1023"}, key: "websocket.max_frame_size"},
		{name: "frame size too large", environ: []string{"GATEWAY_WS_MAX_FRAME_SIZE=67108865"}, key: "websocket.max_frame_size"},
		{name: "frame size negative", environ: []string{"GATEWAY_WS_MAX_FRAME_SIZE=-1"}, key: "websocket.max_frame_size"},
		{name: "send buffer too small", environ: []string{"GATEWAY_WS_SEND_BUFFER=7"}, key: "websocket.send_buffer"},
		{name: "send buffer too large", environ: []string{"GATEWAY_WS_SEND_BUFFER=65537"}, key: "websocket.send_buffer"},
		{name: "write timeout negative", environ: []string{"GATEWAY_WS_WRITE_TIMEOUT=-1s"}, key: "websocket.write_timeout"},
		{name: "write timeout below 1ms", environ: []string{"GATEWAY_WS_WRITE_TIMEOUT=1us"}, key: "websocket.write_timeout"},
		{name: "ping interval too short", environ: []string{"GATEWAY_WS_PING_INTERVAL=50ms"}, key: "websocket.ping_interval"},
		{name: "latency budget too long", environ: []string{"GATEWAY_WS_LATENCY_BUDGET=2s"}, key: "websocket.latency_budget"},
		{name: "negative latency budget", environ: []string{"GATEWAY_WS_LATENCY_BUDGET=-1ms"}, key: "websocket.latency_budget"},
		{name: "write delay, replaced by the latency budget", environ: []string{"GATEWAY_WS_WRITE_DELAY=75ms"}, key: "websocket.write_delay"},
		{name: "compression level above 9", environ: []string{"GATEWAY_WS_COMPRESSION=true", "GATEWAY_WS_COMPRESSION_LEVEL=10"}, key: "websocket.compression_level"},
		{name: "negative compression level", environ: []string{"GATEWAY_WS_COMPRESSION_LEVEL=-2"}, key: "websocket.compression_level"},
		{name: "publish timeout negative", environ: []string{"GATEWAY_WS_PUBLISH_TIMEOUT=-5s"}, key: "websocket.publish_timeout"},
		{name: "negative history size", environ: []string{"GATEWAY_HISTORY_SIZE=-1"}, key: "history.size"},
		{name: "negative history ttl", environ: []string{"GATEWAY_HISTORY_TTL=-1m"}, key: "history.ttl"},
		{name: "negative max replay", environ: []string{"GATEWAY_HISTORY_MAX_REPLAY=-1"}, key: "history.max_replay"},
		{name: "dedupe window too short", environ: []string{"GATEWAY_ROUTER_DEDUPE_WINDOW=500ms"}, key: "router.dedupe_window"},
		{name: "retry attempts negative", environ: []string{"GATEWAY_ROUTER_RETRY_ATTEMPTS=-1"}, key: "router.retry_attempts"},
		{name: "retry attempts too many", environ: []string{"GATEWAY_ROUTER_RETRY_ATTEMPTS=101"}, key: "router.retry_attempts"},
		{name: "negative drain period", environ: []string{"GATEWAY_DRAIN_PERIOD=-1s"}, key: "drain.period"},
		{name: "bad log level", environ: []string{"GATEWAY_LOG_LEVEL=verbose"}, key: "log.level"},
		{name: "log level wrong case", environ: []string{"GATEWAY_LOG_LEVEL=INFO"}, key: "log.level"},
		{name: "bad log format", environ: []string{"GATEWAY_LOG_FORMAT=xml"}, key: "log.format"},
		// Broker settings are only checked for their broker.
		{name: "redis addr unchecked for memory", environ: []string{"GATEWAY_REDIS_ADDR=redis"}},
		{name: "kafka brokers unchecked for nats", environ: []string{"GATEWAY_BROKER=nats", "GATEWAY_KAFKA_BROKERS=k1"}},
		// Edges that are valid.
		{name: "exactly 16-byte secret", environ: []string{"GATEWAY_JWT_SECRET=0123456789abcdef"}, noSec: true},
		{name: "anonymous only", environ: []string{"GATEWAY_ALLOW_ANONYMOUS=true"}, noSec: true},
		{name: "frame size bounds", environ: []string{"GATEWAY_WS_MAX_FRAME_SIZE=1024"}},
		{name: "send buffer bounds", environ: []string{"GATEWAY_WS_SEND_BUFFER=65536"}},
		{name: "latency budget bounds", environ: []string{"GATEWAY_WS_LATENCY_BUDGET=1s"}},
		{name: "latency budget off", environ: []string{"GATEWAY_WS_LATENCY_BUDGET=0"}},
		{name: "write delay 0 still accepted", file: "websocket:\n  write_delay: 0s\n"},
		{name: "write delay in YAML, replaced", file: "websocket:\n  write_delay: 75ms\n", key: "websocket.write_delay"},
		{name: "addr service name", environ: []string{"GATEWAY_ADDR=localhost:http"}},
		{name: "public channel patterns", environ: []string{"GATEWAY_PUBLIC_CHANNELS=*,room:*,$user,news"}},
		{name: "node id 64 chars", environ: []string{"GATEWAY_NODE_ID=" + strings.Repeat("n", 64)}},
		{name: "prefix 32 chars", environ: []string{"GATEWAY_TOPIC_PREFIX=" + strings.Repeat("p", 32)}},
		{name: "publish rate negative", environ: []string{"GATEWAY_LIMITS_PUBLISH_RATE=-2"}, key: "limits.publish_rate"},
		{name: "publish rate off", environ: []string{"GATEWAY_LIMITS_PUBLISH_RATE=-1"}},
		{name: "publish burst negative", environ: []string{"GATEWAY_LIMITS_PUBLISH_BURST=-1"}, key: "limits.publish_burst"},
		{name: "user publish rate negative", environ: []string{"GATEWAY_LIMITS_USER_PUBLISH_RATE=-3"}, key: "limits.user_publish_rate"},
		{name: "subscriptions negative", environ: []string{"GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=-5"}, key: "limits.subscriptions_per_connection"},
		{name: "subscriptions off", environ: []string{"GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=-1", "GATEWAY_LIMITS_SUBSCRIBE_RATE=-1"}},
		{name: "subscribe rate negative", environ: []string{"GATEWAY_LIMITS_SUBSCRIBE_RATE=-0.5"}, key: "limits.subscribe_rate"},
		{name: "subscribe burst negative", environ: []string{"GATEWAY_LIMITS_SUBSCRIBE_BURST=-1"}, key: "limits.subscribe_burst"},
		{name: "subscribe burst below subscriptions", environ: []string{"GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=100", "GATEWAY_LIMITS_SUBSCRIBE_BURST=99"}, key: "limits.subscribe_burst"},
		{name: "subscribe burst follows subscriptions", environ: []string{"GATEWAY_LIMITS_SUBSCRIPTIONS_PER_CONNECTION=5000"}},
		{name: "rpc rate negative", environ: []string{"GATEWAY_LIMITS_RPC_RATE=-2"}, key: "limits.rpc_rate"},
		{name: "rpc rate off", environ: []string{"GATEWAY_LIMITS_RPC_RATE=-1"}},
		{name: "rpc burst negative", environ: []string{"GATEWAY_LIMITS_RPC_BURST=-1"}, key: "limits.rpc_burst"},
		{name: "rate limited disconnect negative", environ: []string{"GATEWAY_LIMITS_RATE_LIMITED_DISCONNECT=-7"}, key: "limits.rate_limited_disconnect"},
		{name: "rate limited window negative", environ: []string{"GATEWAY_LIMITS_RATE_LIMITED_WINDOW=-1s"}, key: "limits.rate_limited_window"},
		{name: "user publish burst negative", environ: []string{"GATEWAY_LIMITS_USER_PUBLISH_BURST=-1"}, key: "limits.user_publish_burst"},
		{name: "connections per node negative", environ: []string{"GATEWAY_LIMITS_CONNECTIONS_PER_NODE=-1"}, key: "limits.connections_per_node"},
		{name: "connections per user negative", environ: []string{"GATEWAY_LIMITS_CONNECTIONS_PER_USER=-1"}, key: "limits.connections_per_user"},
		{name: "bad dedupe store", environ: []string{"GATEWAY_ROUTER_DEDUPE_STORE=disk"}, key: "router.dedupe_store"},
		{name: "router timeout negative", environ: []string{"GATEWAY_ROUTER_TIMEOUT=-1s"}, key: "router.timeout"},
		{name: "breaker failures negative", environ: []string{"GATEWAY_ROUTER_BREAKER_FAILURES=-1"}, key: "router.breaker_failures"},
		{name: "bad poison topic", environ: []string{"GATEWAY_ROUTER_POISON_TOPIC=a b"}, key: "router.poison_topic"},
		{name: "signing key without id", environ: []string{"GATEWAY_ROUTER_SIGNING_KEYS=0123456789abcdef0"}, key: "router.signing_keys"},
		{name: "signing key short", environ: []string{"GATEWAY_ROUTER_SIGNING_KEYS=k1:short"}, key: "router.signing_keys"},
		{name: "signature required without keys", environ: []string{"GATEWAY_ROUTER_REQUIRE_SIGNATURE=true"}, key: "router.require_signature"},
		{name: "events heartbeat too short", environ: []string{"GATEWAY_EVENTS_HEARTBEAT=1ms"}, key: "events.heartbeat"},
		{name: "presence channel pattern", environ: []string{"GATEWAY_PRESENCE_CHANNELS=room:*,a*b"}, key: "presence.channels"},
		{name: "join_leave pattern", environ: []string{"GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_JOIN_LEAVE=a b"}, key: "presence.join_leave"},
		{name: "join_leave without presence", environ: []string{"GATEWAY_PRESENCE_JOIN_LEAVE=room:*"}, key: "presence.join_leave"},
		{name: "presence max_members zero", environ: []string{"GATEWAY_PRESENCE_MAX_MEMBERS=-2"}, key: "presence.max_members"},
		{name: "presence good", environ: []string{"GATEWAY_PRESENCE_CHANNELS=room:*,news", "GATEWAY_PRESENCE_JOIN_LEAVE=room:*", "GATEWAY_PRESENCE_MAX_MEMBERS=-1"}},
		{name: "presence heartbeat too short", environ: []string{"GATEWAY_PRESENCE_HEARTBEAT=1ms"}, key: "presence.heartbeat"},
		{name: "presence coalesce negative", environ: []string{"GATEWAY_PRESENCE_COALESCE=-1ms"}, key: "presence.coalesce"},
		{name: "presence coalesce off", environ: []string{"GATEWAY_PRESENCE_COALESCE=0"}},
		{name: "presence coalesce bad", environ: []string{"GATEWAY_PRESENCE_COALESCE=soon"}, key: "presence.coalesce"},
		{name: "webhooks url not http", environ: []string{"GATEWAY_WEBHOOKS_URL=ftp://h/x", "GATEWAY_WEBHOOKS_SECRET=0123456789abcdef"}, key: "webhooks.url"},
		{name: "webhooks without secret", environ: []string{"GATEWAY_WEBHOOKS_URL=http://h/x"}, key: "webhooks.secret"},
		{name: "webhooks short secret", environ: []string{"GATEWAY_WEBHOOKS_URL=http://h/x", "GATEWAY_WEBHOOKS_SECRET=short"}, key: "webhooks.secret"},
		{name: "webhooks without events", environ: []string{"GATEWAY_WEBHOOKS_URL=http://h/x", "GATEWAY_WEBHOOKS_SECRET=0123456789abcdef", "GATEWAY_EVENTS_DISABLED=true"}, key: "webhooks.url"},
		{name: "webhooks unknown event", environ: []string{"GATEWAY_WEBHOOKS_EVENTS=connected,joined"}, key: "webhooks.events"},
		{name: "webhooks batch zero", file: "webhooks:\n  batch: -1\n", key: "webhooks.batch"},
		{name: "webhooks batch too big", environ: []string{"GATEWAY_WEBHOOKS_BATCH=1001"}, key: "webhooks.batch"},
		{name: "webhooks retry max below initial", environ: []string{"GATEWAY_WEBHOOKS_RETRY_INITIAL=2s", "GATEWAY_WEBHOOKS_RETRY_MAX=1s"}, key: "webhooks.retry_max"},
		{name: "webhooks negative budget", environ: []string{"GATEWAY_WEBHOOKS_RETRY_BUDGET=-1s"}, key: "webhooks.retry_budget"},
		{name: "webhooks good", environ: []string{"GATEWAY_WEBHOOKS_URL=https://backend.example/hooks", "GATEWAY_WEBHOOKS_SECRET=0123456789abcdef",
			"GATEWAY_WEBHOOKS_EVENTS=connected, disconnected", "GATEWAY_WEBHOOKS_BATCH=100", "GATEWAY_WEBHOOKS_BATCH_WAIT=0s"}},
		{name: "events queue negative", environ: []string{"GATEWAY_EVENTS_QUEUE=-1"}, key: "events.queue"},
		{name: "events queue too long", environ: []string{"GATEWAY_EVENTS_QUEUE=1048577"}, key: "events.queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, "gateway.yaml", tt.file)
			}
			environ := tt.environ
			if !tt.noSec {
				environ = append([]string{secret}, environ...)
			}
			cfg, err := Load(path, environ)
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted it: %+v", cfg)
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("error %v (%T) is not a *KeyError", err, err)
			}
			wantEnv := "GATEWAY_" + envOf(t, ke.Key)
			if ke.Key != tt.key || ke.Env != wantEnv {
				t.Fatalf("error names %s (%s), want %s (%s): %v", ke.Key, ke.Env, tt.key, wantEnv, err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.key) || !strings.Contains(msg, wantEnv) || strings.Contains(msg, "\n") || ke.Reason == "" {
				t.Fatalf("error %q is not one line naming %s and %s with a reason", msg, tt.key, wantEnv)
			}
		})
	}
}

// envOf is the variable of a YAML key, without GATEWAY_, from the struct tags.
func envOf(t *testing.T, key string) string {
	t.Helper()
	keys := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), "", "", keys)
	for env, k := range keys {
		if k == key {
			return env
		}
	}
	t.Fatalf("no variable for key %s", key)
	return ""
}

// TestBadEnvValue: a variable that does not parse gives a *KeyError naming it.
func TestBadEnvValue(t *testing.T) {
	tests := []struct {
		environ  []string
		env, key string
	}{
		{[]string{"GATEWAY_WS_MAX_FRAME_SIZE=abc"}, "GATEWAY_WS_MAX_FRAME_SIZE", "websocket.max_frame_size"},
		{[]string{"GATEWAY_ALLOW_ANONYMOUS=maybe"}, "GATEWAY_ALLOW_ANONYMOUS", "auth.allow_anonymous"},
		{[]string{"GATEWAY_WS_SEND_BUFFER=1.5"}, "GATEWAY_WS_SEND_BUFFER", "websocket.send_buffer"},
		{[]string{"GATEWAY_DRAIN_PERIOD=10"}, "GATEWAY_DRAIN_PERIOD", "drain.period"},
		{[]string{"GATEWAY_HISTORY_TTL=forever"}, "GATEWAY_HISTORY_TTL", "history.ttl"},
		{[]string{"GATEWAY_HISTORY_CHANNELS=chat:*"}, "GATEWAY_HISTORY_CHANNELS", "history.channels"},
		{[]string{"GATEWAY_HISTORY_CHANNELS=chat:*=many"}, "GATEWAY_HISTORY_CHANNELS", "history.channels"},
		{[]string{"GATEWAY_HISTORY_CHANNELS=chat:*=5/forever"}, "GATEWAY_HISTORY_CHANNELS", "history.channels"},
		{[]string{"GATEWAY_REDIS_DB=zero"}, "GATEWAY_REDIS_DB", "redis.db"},
		{[]string{"GATEWAY_REDIS_MAX_LEN=99999999999999999999"}, "GATEWAY_REDIS_MAX_LEN", "redis.max_len"},
		// Fields called Replicas exist twice: the right one is named.
		{[]string{"GATEWAY_JETSTREAM_REPLICAS=x"}, "GATEWAY_JETSTREAM_REPLICAS", "jetstream.replicas"},
		{[]string{"GATEWAY_KAFKA_REPLICATION_FACTOR=x"}, "GATEWAY_KAFKA_REPLICATION_FACTOR", "kafka.replication_factor"},
		// Two bad variables: the first by name.
		{[]string{"GATEWAY_WS_SEND_BUFFER=x", "GATEWAY_LOG_LEVEL=debug", "GATEWAY_DRAIN_PERIOD=x"}, "GATEWAY_DRAIN_PERIOD", "drain.period"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			_, err := Load("", append([]string{secret}, tt.environ...))
			if err == nil {
				t.Fatal("Load accepted it")
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Env != tt.env || ke.Key != tt.key {
				t.Fatalf("error %v does not name %s (%s)", err, tt.env, tt.key)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is more than one line", err)
			}
		})
	}
}

// TestNodeIDFor: the default node id stays valid with the longest host names.
func TestNodeIDFor(t *testing.T) {
	for _, host := range []string{"", "h", strings.Repeat("h", 57), strings.Repeat("h", 58), strings.Repeat("h", 64), strings.Repeat("h", 255)} {
		id := nodeIDFor(host)
		cfg := &Config{NodeID: id, Auth: AuthConfig{JWTSecret: "0123456789abcdef"}}
		cfg.SetDefaults()
		if err := cfg.Validate(); err != nil {
			t.Errorf("host of %d chars: node id %q: %v", len(host), id, err)
		}
	}
	if a, b := nodeIDFor("h"), nodeIDFor("h"); a == b {
		t.Errorf("two node ids are both %q", a)
	}
}

// TestSetDefaultsKeepsValues: SetDefaults fills only zero settings.
func TestSetDefaultsKeepsValues(t *testing.T) {
	cfg := &Config{Addr: ":1", NodeID: "n", Broker: BrokerKafka, Kafka: KafkaConfig{Brokers: []string{"k:1"}}, History: HistoryConfig{Size: -1}}
	cfg.SetDefaults()
	if cfg.Addr != ":1" || cfg.NodeID != "n" || cfg.Broker != BrokerKafka || !reflect.DeepEqual(cfg.Kafka.Brokers, []string{"k:1"}) || cfg.History.Size != -1 {
		t.Fatalf("SetDefaults overwrote a setting: %+v", cfg)
	}
}

// TestExamples loads every example file, so they never drift from Config: each must validate,
// name its broker as its file name, and document every variable.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("examples", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimSuffix(filepath.Base(f), ".yaml"))
	}
	sort.Strings(got)
	want := []string{BrokerJetStream, BrokerKafka, BrokerMemory, BrokerNATS, BrokerRedis}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("examples %v, want one per broker %v", got, want)
	}
	keys := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", keys)
	for _, f := range files {
		broker := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(broker, func(t *testing.T) {
			cfg, err := Load(f, []string{secret})
			if err != nil {
				t.Fatalf("Load(%s): %v", f, err)
			}
			if cfg.Broker != broker {
				t.Errorf("broker = %q, want %q", cfg.Broker, broker)
			}
			if cfg.Development {
				t.Error("Development with a file")
			}
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for env, key := range keys {
				if !strings.Contains(string(raw), env) {
					t.Errorf("%s does not document %s (%s)", f, key, env)
				}
				// The key itself, possibly commented out, under its section.
				leaf := key[strings.LastIndex(key, ".")+1:]
				if !strings.Contains(string(raw), " "+leaf+":") && !strings.Contains(string(raw), "\n"+leaf+":") {
					t.Errorf("%s does not show key %s", f, key)
				}
			}
		})
	}
}

// TestEnvKeys: the variable-to-key map used in error messages and by TestExamples holds exactly
// the variables caarlos0/env reads.
func TestEnvKeys(t *testing.T) {
	params, err := env.GetFieldParamsWithOptions(&Config{}, env.Options{Prefix: EnvPrefix})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range params {
		want = append(want, p.Key)
	}
	keys := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", keys)
	var got []string
	for k := range keys {
		got = append(got, k)
	}
	sort.Strings(want)
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("envKeys has\n%v\ncaarlos0/env reads\n%v", got, want)
	}
	for _, name := range []string{"GATEWAY_ADDR", "GATEWAY_NODE_ID", "GATEWAY_BROKER", "GATEWAY_NATS_URL", "GATEWAY_REDIS_ADDR",
		"GATEWAY_KAFKA_BROKERS", "GATEWAY_TOPIC_PREFIX", "GATEWAY_JWT_SECRET", "GATEWAY_JWT_PUBLIC_KEY", "GATEWAY_API_KEY",
		"GATEWAY_ALLOW_ANONYMOUS", "GATEWAY_ALLOWED_ORIGINS"} {
		if keys[name] == "" {
			t.Errorf("contract variable %s is not read", name)
		}
	}
}

// TestHistoryRules: history.channels from YAML (mapping and short form) and from the
// environment, and which rule bounds which channel.
func TestHistoryRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.yaml")
	yaml := "history:\n  channels:\n    - pattern: \"chat:vip\"\n      size: 50000\n    - {pattern: \"chat:*\", size: 5000, ttl: 168h}\n    - \"ticker:*=10/1m\"\n    - \"$user=/1h\"\n    - \"*=100\"\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		channel string
		size    int
		ttl     time.Duration
	}{
		{"chat:vip", 50000, 0},
		{"chat:lobby", 5000, 168 * time.Hour},
		{"ticker:eur", 10, time.Minute},
		{"$user:alice", 0, time.Hour},
		{"news", 100, 0},
		{"chat", 100, 0}, // "chat:*" needs the colon
	} {
		if size, ttl := cfg.History.Bounds(tt.channel); size != tt.size || ttl != tt.ttl {
			t.Errorf("Bounds(%q) = %d, %v; want %d, %v", tt.channel, size, ttl, tt.size, tt.ttl)
		}
	}
	// The environment replaces the file's list; "*" does not match users' channels.
	cfg, err = Load(path, []string{secret, "GATEWAY_HISTORY_CHANNELS=ticker:*=/30s, *=7"})
	if err != nil {
		t.Fatal(err)
	}
	if size, ttl := cfg.History.Bounds("ticker:x"); size != 0 || ttl != 30*time.Second {
		t.Errorf("env rule ticker:*: %d %v", size, ttl)
	}
	if size, _ := cfg.History.Bounds("chat:lobby"); size != 7 {
		t.Errorf("env rule *: %d", size)
	}
	if size, ttl := cfg.History.Bounds("$user:bob"); size != 0 || ttl != 0 {
		t.Errorf(`"*" matches a user's channel: %d %v`, size, ttl)
	}
}

// TestNoAuthOnASharedBroker: the refusal says what to set and why development mode is not used.
func TestNoAuthOnASharedBroker(t *testing.T) {
	_, err := Load("", []string{"GATEWAY_BROKER=jetstream", "GATEWAY_ADDR=:8081"})
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "auth.jwt_secret" {
		t.Fatalf("error %v, want a *KeyError for auth.jwt_secret", err)
	}
	for _, want := range []string{"GATEWAY_JWT_SECRET", "GATEWAY_JWT_PUBLIC_KEY", "GATEWAY_ALLOW_ANONYMOUS", "development mode", "memory broker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestUnknownVariables: GATEWAY_* variables that are no setting are reported, with the closest
// known name when one is close; every variable Load reads is known.
func TestUnknownVariables(t *testing.T) {
	got := UnknownVariables([]string{"GATEWAY_REDIS_ADRESS=x", "GATEWAY_JWT_SECRETS=y", "GATEWAY_ADDR=:1",
		"GATEWAY_WS_SEND_BUFFER=8", "GATEWAY_DEVELOPMENT=true", "GATEWAY_HISTORY_CHANNELS=*=1", "OTHER=1", "GATEWAY_BROKER_CONNECT_TIMEOUT=1s"})
	want := []UnknownVariable{
		{Name: "GATEWAY_DEVELOPMENT"},
		{Name: "GATEWAY_JWT_SECRETS", Suggestion: "GATEWAY_JWT_SECRET"},
		{Name: "GATEWAY_REDIS_ADRESS", Suggestion: "GATEWAY_REDIS_ADDR"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	keys := map[string]string{}
	envKeys(reflect.TypeOf(Config{}), EnvPrefix, "", keys)
	var all []string
	for k := range keys {
		all = append(all, k+"=x")
	}
	if u := UnknownVariables(all); len(u) != 0 {
		t.Fatalf("known variables reported as unknown: %+v", u)
	}
}

// TestPublishBurstFollowsRate: the default rate written out keeps the default burst; another
// rate without a burst gets a burst of one second's worth.
func TestPublishBurstFollowsRate(t *testing.T) {
	for _, tt := range []struct {
		rate  string
		burst int
	}{{"100", DefaultPublishBurst}, {"2.5", 3}, {"500", 500}} {
		cfg, err := Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef0123", "GATEWAY_LIMITS_PUBLISH_RATE=" + tt.rate})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Limits.PublishBurst != tt.burst {
			t.Errorf("publish_rate %s: burst %d, want %d", tt.rate, cfg.Limits.PublishBurst, tt.burst)
		}
	}
}

// TestRPCBurstFollowsRate: as the publish burst, for limits.rpc_rate.
func TestRPCBurstFollowsRate(t *testing.T) {
	for _, tt := range []struct {
		rate  string
		burst int
	}{{"20", DefaultRPCBurst}, {"2.5", 3}, {"500", 500}, {"-1", 0}} {
		cfg, err := Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef0123", "GATEWAY_LIMITS_RPC_RATE=" + tt.rate})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Limits.RPCBurst != tt.burst {
			t.Errorf("rpc_rate %s: burst %d, want %d", tt.rate, cfg.Limits.RPCBurst, tt.burst)
		}
	}
}

// TestPresenceCoalesce: presence.coalesce defaults to 100ms when it is not set, and an explicit
// 0 (YAML or environment) stays 0: no coalescing.
func TestPresenceCoalesce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte("presence:\n  coalesce: 0s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
		environ    []string
		want       time.Duration
	}{
		{"unset", "", nil, DefaultPresenceCoalesce},
		{"env 0", "", []string{"GATEWAY_PRESENCE_COALESCE=0"}, 0},
		{"env 250ms", "", []string{"GATEWAY_PRESENCE_COALESCE=250ms"}, 250 * time.Millisecond},
		{"yaml 0s", file, nil, 0},
		{"env beats yaml", file, []string{"GATEWAY_PRESENCE_COALESCE=50ms"}, 50 * time.Millisecond},
	} {
		cfg, err := Load(tt.path, append([]string{secret}, tt.environ...))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := cfg.Presence.CoalesceWindow(); got != tt.want {
			t.Errorf("%s: window %v, want %v", tt.name, got, tt.want)
		}
	}
}
