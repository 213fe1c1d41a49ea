package gateway

import (
	"fmt"
	"log/slog"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/kafka"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/redis"
)

// NewBroker builds the broker the configuration names. Like each broker package's New, it starts
// nothing: the caller calls the broker's Start (Gateway.Start does, for the broker it builds or
// is given) and Close.
func NewBroker(cfg *configs.Config, log *slog.Logger) (transports.Broker, error) {
	switch cfg.Broker {
	case configs.BrokerMemory:
		broker := memory.NewBroker(memory.Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL,
			MaxBytes: cfg.History.MaxBytes, // -1 (no bound) is below 1 too
			Bounds: func(topic string) (int, time.Duration) {
				channel, _ := protocol.ChannelOf(topic)
				return cfg.History.Bounds(channel)
			}})
		return &ownedMemory{Node: broker.Node(cfg.TopicPrefix), broker: broker}, nil
	case configs.BrokerJetStream:
		return jetstream.New(jetstreamConfig(cfg), log)
	case configs.BrokerRedis:
		return redis.New(redisConfig(cfg), log)
	case configs.BrokerKafka:
		return kafka.New(kafkaConfig(cfg), log)
	case configs.BrokerNATS:
		return nats.New(natsConfig(cfg), log)
	}
	return nil, fmt.Errorf("unknown broker %q", cfg.Broker)
}

// checkBroker makes the checks of the configured broker package's New (defaults, then
// Validate) without connecting.
func checkBroker(cfg *configs.Config) error {
	switch cfg.Broker {
	case configs.BrokerJetStream:
		return jetstreamConfig(cfg).Check()
	case configs.BrokerRedis:
		return redisConfig(cfg).Check()
	case configs.BrokerKafka:
		return kafkaConfig(cfg).Check()
	case configs.BrokerNATS:
		return natsConfig(cfg).Check()
	}
	return nil
}

func jetstreamConfig(cfg *configs.Config) jetstream.Config {
	return jetstream.Config{
		URL: cfg.NATS.URL, Prefix: cfg.TopicPrefix, Name: cfg.NodeID,
		MaxAge: cfg.JetStream.MaxAge, MaxBytes: cfg.JetStream.MaxBytes, Replicas: cfg.JetStream.Replicas,
		DuplicateWindow: cfg.JetStream.DupeWindow, PublishTimeout: cfg.WebSocket.PublishTimeout,
	}
}

func redisConfig(cfg *configs.Config) redis.Config {
	return redis.Config{
		Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB, Prefix: cfg.TopicPrefix,
		Shards: cfg.Redis.Shards, MaxLen: cfg.Redis.MaxLen, Timeout: cfg.WebSocket.PublishTimeout,
	}
}

func kafkaConfig(cfg *configs.Config) kafka.Config {
	return kafka.Config{
		Brokers: cfg.Kafka.Brokers, Prefix: cfg.TopicPrefix, Partitions: cfg.Kafka.Partitions,
		Retention: cfg.Kafka.Retention, ReplicationFactor: cfg.Kafka.Replicas, ClientID: cfg.NodeID,
		PublishTimeout: cfg.WebSocket.PublishTimeout,
	}
}

func natsConfig(cfg *configs.Config) nats.Config {
	return nats.Config{URL: cfg.NATS.URL, Prefix: cfg.TopicPrefix, Name: cfg.NodeID, Timeout: cfg.WebSocket.PublishTimeout}
}

// dedupeStore is where msg_id keys are kept: Redis (shared by the nodes) with the redis broker or
// when asked, else this node's memory. (With jetstream, the stream's duplicate window also drops
// a msg_id published through two nodes, since its message UUID derives from the key.)
func dedupeStore(cfg *configs.Config) (middleware.DedupeStore, []func() error, error) {
	if cfg.Router.DedupeStore == "redis" || cfg.Router.DedupeStore == "auto" && cfg.Broker == configs.BrokerRedis {
		client := goredis.NewClient(&goredis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB})
		return middleware.NewRedisDedupe(client, cfg.TopicPrefix), []func() error{client.Close}, nil
	}
	return middleware.NewMemoryDedupe(), nil, nil
}

// ownedMemory is a memory node that owns its broker (the embedded default of a lone node).
type ownedMemory struct {
	*memory.Node
	broker *memory.Broker
}

func (o *ownedMemory) Close() error {
	err := o.Node.Close()
	o.broker.Close()
	return err
}
