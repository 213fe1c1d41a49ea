package nats

import (
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports"
)

// ConfigFrom is the broker configuration a gateway node uses for cfg (GATEWAY_NATS_URL,
// GATEWAY_TOPIC_PREFIX, ...), so that a service given the same settings reaches the same
// subjects: nats.New(nats.ConfigFrom(cfg), log).
func ConfigFrom(cfg *configs.Config) Config {
	return Config{URL: cfg.NATS.URL, Prefix: cfg.TopicPrefix, Name: cfg.NodeID, Timeout: cfg.WebSocket.PublishTimeout,
		Presence: transports.PresenceConfig{Heartbeat: cfg.Presence.Heartbeat}}
}
