package kafka

import (
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports"
)

// ConfigFrom is the broker configuration a gateway node uses for cfg (GATEWAY_KAFKA_*,
// GATEWAY_TOPIC_PREFIX, ...), so that a service given the same settings reaches the same
// topics: kafka.New(kafka.ConfigFrom(cfg), log).
func ConfigFrom(cfg *configs.Config) Config {
	return Config{
		Brokers: cfg.Kafka.Brokers, Prefix: cfg.TopicPrefix, Partitions: cfg.Kafka.Partitions,
		Retention: cfg.Kafka.Retention, ReplicationFactor: cfg.Kafka.Replicas, ClientID: cfg.NodeID,
		PublishTimeout: cfg.WebSocket.PublishTimeout, NodeID: cfg.NodeID,
		Presence: transports.PresenceConfig{Heartbeat: cfg.Presence.Heartbeat},
	}
}
