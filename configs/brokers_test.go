package configs_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/kafka"
	"github.com/wsgateway/gateway/transports/redis"
)

// TestBrokerDefaults: the broker addresses that configs fills in are the ones the broker
// packages would take themselves, so a node and a service that builds its broker without
// configs meet on the same server.
func TestBrokerDefaults(t *testing.T) {
	if configs.DefaultRedisAddr != redis.DefaultAddr {
		t.Errorf("configs.DefaultRedisAddr %q, redis.DefaultAddr %q", configs.DefaultRedisAddr, redis.DefaultAddr)
	}
	if configs.DefaultRedisMode != redis.DefaultMode || configs.RedisModeSentinel != redis.ModeSentinel || configs.RedisModeCluster != redis.ModeCluster {
		t.Errorf("configs' redis modes %q, %q; redis' %q, %q", configs.DefaultRedisMode, configs.RedisModeSentinel, redis.DefaultMode, redis.ModeSentinel)
	}
	if configs.DefaultNATSURL != jetstream.DefaultURL {
		t.Errorf("configs.DefaultNATSURL %q, jetstream.DefaultURL %q", configs.DefaultNATSURL, jetstream.DefaultURL)
	}
}

// TestBrokerSettingsCheckedByTheBroker: the settings of a broker section that only the broker
// uses are checked once, by the broker package's Config (which gateway.Check and gateway.New
// run), and its error names the key. Load passes them through.
func TestBrokerSettingsCheckedByTheBroker(t *testing.T) {
	for _, tt := range []struct {
		env   string
		key   string
		check func(c *configs.Config) error
	}{
		{"GATEWAY_REDIS_SHARDS=1025", "redis.shards", redisCheck},
		{"GATEWAY_REDIS_SHARDS=-1", "redis.shards", redisCheck},
		{"GATEWAY_REDIS_MAX_LEN=-5", "redis.max_len", redisCheck},
		{"GATEWAY_REDIS_MIN_REPLICAS=-1", "redis.min_replicas", redisCheck},
		{"GATEWAY_REDIS_MODE=cluster", "redis.cluster_addrs", redisCheck},
		{"GATEWAY_REDIS_MODE=sentinels", "redis.mode", redisCheck},
		{"GATEWAY_REDIS_MODE=sentinel", "redis.master_name", redisCheck},
		{"GATEWAY_KAFKA_PARTITIONS=2000", "kafka.partitions", kafkaCheck},
		{"GATEWAY_KAFKA_PARTITIONS=-1", "kafka.partitions", kafkaCheck},
		{"GATEWAY_KAFKA_RETENTION=-1h", "kafka.retention", kafkaCheck},
		{"GATEWAY_KAFKA_REPLICATION_FACTOR=-1", "kafka.replication_factor", kafkaCheck},
		{"GATEWAY_JETSTREAM_REPLICAS=9", "jetstream.replicas", jetstreamCheck},
		{"GATEWAY_JETSTREAM_MAX_AGE=-1h", "jetstream.max_age", jetstreamCheck},
		{"GATEWAY_JETSTREAM_MAX_BYTES=-2", "jetstream.max_bytes", jetstreamCheck},
		{"GATEWAY_JETSTREAM_DUPLICATE_WINDOW=48h", "jetstream.duplicate_window", jetstreamCheck},
	} {
		cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef", tt.env})
		if err != nil {
			t.Errorf("%s: Load: %v", tt.env, err)
			continue
		}
		if err := tt.check(cfg); err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: the broker's check says %v, want an error naming %s", tt.env, err, tt.key)
		}
	}
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]func(*configs.Config) error{"redis": redisCheck, "kafka": kafkaCheck, "jetstream": jetstreamCheck} {
		if err := check(cfg); err != nil {
			t.Errorf("%s: the defaults do not pass the broker's check: %v", name, err)
		}
	}
	// An unset duplicate window is the broker's default, which stays within a short max_age
	// (configs once set 2m itself, and the broker then refused it as longer than max_age).
	cfg, err = configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef", "GATEWAY_JETSTREAM_MAX_AGE=1m"})
	if err != nil {
		t.Fatal(err)
	}
	if err := jetstreamCheck(cfg); err != nil {
		t.Errorf("max_age 1m without duplicate_window: %v", err)
	}
}

// The checks below give the broker packages the settings as the gateway does (ConfigFrom).

func redisCheck(c *configs.Config) error     { return redis.ConfigFrom(c).Check() }
func kafkaCheck(c *configs.Config) error     { return kafka.ConfigFrom(c).Check() }
func jetstreamCheck(c *configs.Config) error { return jetstream.ConfigFrom(c).Check() }

// TestKeyErrorFrom: a broker's error that starts with a setting's key becomes a *KeyError naming
// its variable too; others stay as they are.
func TestKeyErrorFrom(t *testing.T) {
	var ke *configs.KeyError
	err := configs.KeyErrorFrom(errors.New("redis.shards: 1025 is not between 1 and 1024"))
	if !errors.As(err, &ke) || ke.Key != "redis.shards" || ke.Env != "GATEWAY_REDIS_SHARDS" || ke.Reason != "1025 is not between 1 and 1024" {
		t.Fatalf("got %#v", err)
	}
	for _, text := range []string{"no key here", "nosuch.key: reason"} {
		if err := configs.KeyErrorFrom(errors.New(text)); errors.As(err, &ke) || err.Error() != text {
			t.Errorf("%q became %#v", text, err)
		}
	}
	if configs.KeyErrorFrom(nil) != nil {
		t.Error("nil became an error")
	}
}

// TestRedisSentinelSettings: sentinel mode needs a master name and Sentinel addresses, each
// host:port, and then ignores redis.addr; single mode checks redis.addr; cluster mode needs
// redis.cluster_addrs, each host:port, and database 0.
func TestRedisSentinelSettings(t *testing.T) {
	base := []string{"GATEWAY_JWT_SECRET=0123456789abcdef", "GATEWAY_BROKER=redis"}
	for _, tt := range []struct {
		env []string
		key string // "": valid
	}{
		{[]string{"GATEWAY_REDIS_MODE=sentinel", "GATEWAY_REDIS_MASTER_NAME=main"}, "redis.sentinel_addrs"},
		{[]string{"GATEWAY_REDIS_MODE=sentinel", "GATEWAY_REDIS_MASTER_NAME=main", "GATEWAY_REDIS_SENTINEL_ADDRS=a:26379,b"}, "redis.sentinel_addrs"},
		{[]string{"GATEWAY_REDIS_MODE=sentinel", "GATEWAY_REDIS_SENTINEL_ADDRS=a:26379"}, "redis.master_name"},
		{[]string{"GATEWAY_REDIS_MODE=sentinel", "GATEWAY_REDIS_MASTER_NAME=main", "GATEWAY_REDIS_SENTINEL_ADDRS=a:26379,b:26379", "GATEWAY_REDIS_ADDR=unused"}, ""},
		{[]string{"GATEWAY_REDIS_MIN_REPLICAS=1"}, ""},
		{[]string{"GATEWAY_REDIS_MODE=cluster"}, "redis.cluster_addrs"},
		{[]string{"GATEWAY_REDIS_MODE=cluster", "GATEWAY_REDIS_CLUSTER_ADDRS=a:7000,b"}, "redis.cluster_addrs"},
		{[]string{"GATEWAY_REDIS_MODE=cluster", "GATEWAY_REDIS_CLUSTER_ADDRS=a:7000", "GATEWAY_REDIS_DB=1"}, "redis.db"},
		{[]string{"GATEWAY_REDIS_MODE=cluster", "GATEWAY_REDIS_CLUSTER_ADDRS=a:7000,b:7001", "GATEWAY_REDIS_ADDR=unused"}, ""},
		{[]string{"GATEWAY_REDIS_MODE=bogus"}, "redis.mode"},
	} {
		cfg, err := configs.Load("", append(base, tt.env...))
		if err != nil {
			t.Errorf("%v: Load: %v", tt.env, err)
			continue
		}
		err = redisCheck(cfg)
		switch {
		case tt.key == "" && err != nil:
			t.Errorf("%v: %v, want valid", tt.env, err)
		case tt.key != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.key+":")):
			t.Errorf("%v: %v, want an error naming %s", tt.env, err, tt.key)
		}
	}
	cfg, err := configs.Load("", append(base, "GATEWAY_REDIS_MODE=cluster", "GATEWAY_REDIS_CLUSTER_ADDRS=a:1, b:2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := redis.ConfigFrom(cfg); got.Mode != redis.ModeCluster || len(got.ClusterAddrs) != 2 {
		t.Errorf("ConfigFrom: mode %q, cluster nodes %q", got.Mode, got.ClusterAddrs)
	}
	if _, err := configs.Load("", append(base, "GATEWAY_REDIS_ADDR=nohostport")); err == nil || !strings.Contains(err.Error(), "redis.addr") {
		t.Errorf("single mode with a bad redis.addr: %v, want an error naming redis.addr", err)
	}
	cfg, err = configs.Load("", append(base, "GATEWAY_REDIS_MODE=sentinel", "GATEWAY_REDIS_MASTER_NAME=main", "GATEWAY_REDIS_SENTINEL_ADDRS=a:1, b:2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := redis.ConfigFrom(cfg); got.Mode != redis.ModeSentinel || got.MasterName != "main" || len(got.SentinelAddrs) != 2 {
		t.Errorf("ConfigFrom: mode %q, master %q, sentinels %q", got.Mode, got.MasterName, got.SentinelAddrs)
	}
}
