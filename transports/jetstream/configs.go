package jetstream

import (
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports"
)

// ConfigFrom is the broker configuration a gateway node uses for cfg (GATEWAY_NATS_URL,
// GATEWAY_TOPIC_PREFIX, GATEWAY_JETSTREAM_*, ...), so that a service given the same settings
// reaches the same streams: jetstream.New(jetstream.ConfigFrom(cfg), log).
func ConfigFrom(cfg *configs.Config) Config {
	return Config{
		URL: cfg.NATS.URL, Prefix: cfg.TopicPrefix, Name: cfg.NodeID,
		MaxAge: cfg.JetStream.MaxAge, MaxBytes: cfg.JetStream.MaxBytes, Replicas: cfg.JetStream.Replicas,
		DuplicateWindow: cfg.JetStream.DupeWindow, PublishTimeout: cfg.WebSocket.PublishTimeout,
		Presence: transports.PresenceConfig{Heartbeat: cfg.Presence.Heartbeat},
	}
}
