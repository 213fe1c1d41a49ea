package redis

import (
	"time"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports"
)

// ConfigFrom is the broker configuration a gateway node uses for cfg (GATEWAY_REDIS_*,
// GATEWAY_TOPIC_PREFIX, ...), so that a service given the same settings reaches the same
// streams: redis.New(redis.ConfigFrom(cfg), log).
func ConfigFrom(cfg *configs.Config) Config {
	return Config{
		Mode: cfg.Redis.Mode, Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB, Prefix: cfg.TopicPrefix,
		MasterName: cfg.Redis.MasterName, SentinelAddrs: cfg.Redis.SentinelAddrs, SentinelPassword: cfg.Redis.SentinelPassword,
		ClusterAddrs: cfg.Redis.ClusterAddrs,
		Shards:       cfg.Redis.Shards, MaxLen: cfg.Redis.MaxLen, MinReplicas: cfg.Redis.MinReplicas, Timeout: cfg.WebSocket.PublishTimeout,
		// A retry of a publish comes within the router's attempts, each bounded by the publish
		// timeout, and their backoff (within retry_max_elapsed).
		RetryWindow: time.Duration(cfg.Router.RetryAttempts+1)*cfg.WebSocket.PublishTimeout + cfg.Router.RetryMaxElapsed,
		Presence:    transports.PresenceConfig{Heartbeat: cfg.Presence.Heartbeat},
	}
}
