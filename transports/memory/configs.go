package memory

import (
	"time"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// ConfigFrom is the broker configuration a lone gateway node uses for cfg (GATEWAY_HISTORY_*,
// with the per-channel bounds of history.channels, and presence.heartbeat): NewBroker(ConfigFrom(cfg)).Node(cfg.TopicPrefix).
// The broker lives in the process: only nodes and services of that process reach it.
func ConfigFrom(cfg *configs.Config) Config {
	return Config{HistorySize: cfg.History.Size, HistoryTTL: cfg.History.TTL,
		MaxBytes: cfg.History.MaxBytes, // -1 (no bound) is below 1 too
		Bounds: func(topic string) (int, time.Duration) {
			channel, _ := protocol.ChannelOf(topic)
			return cfg.History.Bounds(channel)
		},
		Presence: transports.PresenceConfig{Heartbeat: cfg.Presence.Heartbeat}}
}
