package redis

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Defaults of Config. A zero field takes its default.
const (
	DefaultAddr               = "127.0.0.1:6379"
	DefaultPrefix             = protocol.DefaultTopicPrefix
	DefaultShards             = 16
	DefaultMaxLen             = 100000
	DefaultReadCount          = 256
	DefaultBlockTimeout       = 2 * time.Second
	DefaultTimeout            = transports.DefaultPublishTimeout
	DefaultSubscriptionBuffer = 1024
	DefaultReplayCount        = 512
	DefaultClaimIdle          = 60 * time.Second
	DefaultMode               = ModeSingle

	maxShards = 1024
)

// Modes of Config.Mode: how the broker finds its Redis primary.
const (
	// ModeSingle talks to the one server at Addr.
	ModeSingle = "single"
	// ModeSentinel asks the Sentinels at SentinelAddrs for the primary named MasterName, and asks
	// again after a failover (go-redis's failover client).
	ModeSentinel = "sentinel"
	// ModeCluster talks to a Redis Cluster found from ClusterAddrs (go-redis's cluster client,
	// which follows MOVED and ASK and reloads the slot map after a failover). Every command and
	// script of the broker names keys of one hash slot: the channel reader reads each shard
	// stream with an XREAD of its own, and presence keeps one index of channels per shard, in
	// the slot of the channels of that shard (presence.go).
	ModeCluster = "cluster"
)

// Config is the redis broker's configuration. The gateway maps its redis.* settings and
// topic_prefix onto it; every zero value is replaced by the default named beside it.
type Config struct {
	// Mode is how the primary is found: ModeSingle (default; Addr), ModeSentinel (MasterName
	// from SentinelAddrs) or ModeCluster (ClusterAddrs) (redis.mode).
	Mode     string
	Addr     string // host:port of the Redis server in ModeSingle; default 127.0.0.1:6379 (redis.addr)
	Password string // AUTH password of the Redis servers; empty for none (redis.password)
	DB       int    // database number (redis.db)

	MasterName       string   // ModeSentinel: the name the Sentinels monitor the primary by (redis.master_name)
	SentinelAddrs    []string // ModeSentinel: host:port of each Sentinel (redis.sentinel_addrs)
	SentinelPassword string   // ModeSentinel: the Sentinels' AUTH password; empty for none (redis.sentinel_password)

	// ClusterAddrs are host:port of some nodes of the Redis Cluster in ModeCluster, primaries or
	// replicas: the client asks them for the cluster's slot map and finds the others from it
	// (redis.cluster_addrs).
	ClusterAddrs []string

	// MinReplicas, when positive, makes every Publish wait (WAIT MinReplicas, up to half of
	// Timeout) until that many replicas hold its entries; fewer is a failed publish (ErrUnavailable),
	// although the entries may still be on the primary and delivered; publishing the same
	// messages again within RetryWindow adds no second entry. 0 (default): a publish
	// is acked once the primary has it (redis.min_replicas; docs/brokers/redis.md, Production).
	MinReplicas int
	// RetryWindow is, with MinReplicas, how long the broker remembers where it put each message
	// (by stream, channel and UUID), so that publishing the same message again within it (a
	// retry of a publish that failed while its entry was on the primary) adds no second entry:
	// it waits for the replicas again and answers the first entry's id. Default 4 × Timeout;
	// the gateway sets (router.retry_attempts + 1) × websocket.publish_timeout +
	// router.retry_max_elapsed (ConfigFrom). Unused without MinReplicas.
	RetryWindow time.Duration

	// Prefix starts every key the broker uses ("<prefix>:ch:<shard>", "<prefix>:direct", ...);
	// default "ws" (topic_prefix).
	Prefix string
	// Shards is the number of channel streams every node reads; a channel lives on shard
	// fnv32a(channel) % Shards. Every node and service must use the same value. Default 16,
	// at most 1024 (redis.shards).
	Shards int
	// MaxLen is how many entries, approximately, each stream keeps (XADD MAXLEN ~); it bounds
	// the history a client can resume from. Default 100000 (redis.max_len).
	MaxLen int64

	// ReadCount is how many entries one XREAD takes per stream in one round trip; default 256
	// (MaxLen when smaller), at most MaxLen.
	ReadCount int64
	// BlockTimeout is how long one XREAD waits for new entries before asking again; default 2 s.
	// With a client passed to NewFromClient, Close may wait this long for the reader to return.
	BlockTimeout time.Duration
	// Timeout bounds each Publish, the setup of each Subscribe, Replay and Last; default 5 s.
	Timeout time.Duration
	// SubscriptionBuffer is how many read entries may wait for one subscription's consumer;
	// when it stays full for a quarter of a second the subscription is closed. Default 1024.
	SubscriptionBuffer int
	// ReplayCount is how many entries one XRANGE takes while Replay scans a shard; default 512.
	ReplayCount int64
	// ClaimIdle is how long an entry of a consumer group stays pending, not renewed, before
	// another member claims it: a member renews the entries it holds every ClaimIdle/3, so only
	// those of a member that stopped (its node died) go to another. Default 60 s, at least 3 ms.
	ClaimIdle time.Duration

	// Presence are the settings of the broker's transports.Presence; Heartbeat defaults to
	// transports.DefaultPresenceHeartbeat, at least 1 ms.
	Presence transports.PresenceConfig
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.MaxLen == 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.ReadCount == 0 {
		c.ReadCount = min(DefaultReadCount, max(c.MaxLen, 1))
	}
	if c.BlockTimeout == 0 {
		c.BlockTimeout = DefaultBlockTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RetryWindow == 0 {
		c.RetryWindow = 4 * c.Timeout
	}
	if c.SubscriptionBuffer == 0 {
		c.SubscriptionBuffer = DefaultSubscriptionBuffer
	}
	if c.ReplayCount == 0 {
		c.ReplayCount = DefaultReplayCount
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
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

// Validate checks a Config after defaults were applied, naming the setting at fault.
func (c *Config) Validate() error {
	switch c.Mode {
	case ModeSingle:
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			return fmt.Errorf("redis.addr: %q is not host:port", c.Addr)
		}
	case ModeSentinel:
		if c.MasterName == "" {
			return errors.New("redis.master_name: must be set in sentinel mode (the name in the Sentinels' 'sentinel monitor' line)")
		}
		if len(c.SentinelAddrs) == 0 {
			return errors.New("redis.sentinel_addrs: must list at least one Sentinel host:port in sentinel mode")
		}
		for _, a := range c.SentinelAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("redis.sentinel_addrs: %q is not host:port", a)
			}
		}
	case ModeCluster:
		if len(c.ClusterAddrs) == 0 {
			return errors.New("redis.cluster_addrs: must list at least one node host:port of the cluster in cluster mode")
		}
		for _, a := range c.ClusterAddrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("redis.cluster_addrs: %q is not host:port", a)
			}
		}
		if c.DB != 0 {
			return fmt.Errorf("redis.db: %d in cluster mode, where Redis has database 0 only", c.DB)
		}
	default:
		return fmt.Errorf("redis.mode: %q is not one of single, sentinel, cluster", c.Mode)
	}
	if c.MinReplicas < 0 {
		return fmt.Errorf("redis.min_replicas: %d is negative", c.MinReplicas)
	}
	if c.RetryWindow < 0 {
		return fmt.Errorf("redis retry window: %v is negative", c.RetryWindow)
	}
	if c.DB < 0 {
		return fmt.Errorf("redis.db: %d is negative", c.DB)
	}
	if c.Shards < 1 || c.Shards > maxShards {
		return fmt.Errorf("redis.shards: %d is not between 1 and %d", c.Shards, maxShards)
	}
	if c.MaxLen < 1 {
		return fmt.Errorf("redis.max_len: %d must be positive", c.MaxLen)
	}
	if c.ReadCount < 1 {
		return fmt.Errorf("redis read count: %d must be positive", c.ReadCount)
	}
	if c.ReadCount > c.MaxLen {
		return fmt.Errorf("redis read count: %d exceeds redis.max_len %d", c.ReadCount, c.MaxLen)
	}
	if c.BlockTimeout < time.Millisecond {
		return fmt.Errorf("redis block timeout: %v is below 1ms", c.BlockTimeout)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("redis timeout: %v must be positive", c.Timeout)
	}
	if c.SubscriptionBuffer < 1 {
		return fmt.Errorf("redis subscription buffer: %d must be positive", c.SubscriptionBuffer)
	}
	if c.ReplayCount < 1 {
		return fmt.Errorf("redis replay count: %d must be positive", c.ReplayCount)
	}
	if c.ClaimIdle < 3*time.Millisecond {
		return fmt.Errorf("redis claim idle: %v is below 3ms", c.ClaimIdle)
	}
	if c.Presence.Heartbeat < time.Millisecond {
		return fmt.Errorf("presence.heartbeat: %v is below 1ms", c.Presence.Heartbeat)
	}
	return nil
}
