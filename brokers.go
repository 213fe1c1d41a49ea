package gateway

import (
	"fmt"
	"log/slog"

	"github.com/wsgateway/gateway/configs"
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
	if err := checkBroker(cfg); err != nil {
		return nil, err // a *configs.KeyError where the broker names the key
	}
	switch cfg.Broker {
	case configs.BrokerMemory:
		broker := memory.NewBroker(memory.ConfigFrom(cfg))
		return &ownedMemory{Node: broker.Node(cfg.TopicPrefix), broker: broker}, nil
	case configs.BrokerJetStream:
		return jetstream.New(jetstream.ConfigFrom(cfg), log)
	case configs.BrokerRedis:
		return redis.New(redis.ConfigFrom(cfg), log)
	case configs.BrokerKafka:
		return kafka.New(kafka.ConfigFrom(cfg), log)
	case configs.BrokerNATS:
		return nats.New(nats.ConfigFrom(cfg), log)
	}
	return nil, fmt.Errorf("unknown broker %q", cfg.Broker)
}

// checkBroker makes the checks of the configured broker package's New (defaults, then
// Validate) without connecting, and refuses presence on a broker that keeps none.
func checkBroker(cfg *configs.Config) error {
	if err := checkPresence(cfg, brokerKeepsPresence(cfg.Broker)); err != nil {
		return err
	}
	var err error
	switch cfg.Broker {
	case configs.BrokerJetStream:
		err = jetstream.ConfigFrom(cfg).Check()
	case configs.BrokerRedis:
		err = redis.ConfigFrom(cfg).Check()
	case configs.BrokerKafka:
		err = kafka.ConfigFrom(cfg).Check()
	case configs.BrokerNATS:
		err = nats.ConfigFrom(cfg).Check()
	}
	return configs.KeyErrorFrom(err) // the broker names the key; the error names the variable too
}

// brokerKeepsPresence reports whether the broker of that name implements transports.Presence
// (asked of its type, so a broker package that adds presence needs nothing here).
func brokerKeepsPresence(name string) bool {
	var b any
	switch name {
	case configs.BrokerMemory:
		b = (*memory.Node)(nil)
	case configs.BrokerJetStream:
		b = (*jetstream.Broker)(nil)
	case configs.BrokerRedis:
		b = (*redis.Broker)(nil)
	case configs.BrokerKafka:
		b = (*kafka.Broker)(nil)
	case configs.BrokerNATS:
		b = (*nats.Broker)(nil)
	}
	_, ok := b.(transports.Presence)
	return ok
}

// checkPresence refuses presence.channels (and pusher.apps, which needs presence) when the
// broker keeps no presence: a user would otherwise think presence works.
func checkPresence(cfg *configs.Config, keeps bool) error {
	if keeps {
		return nil
	}
	if cfg.Events.NodeLost {
		return &configs.KeyError{Key: "events.node_lost", Env: configs.EnvPrefix + "EVENTS_NODE_LOST",
			Reason: fmt.Sprintf("the %s broker keeps no presence yet (docs/presence.md), which node_lost needs", cfg.Broker)}
	}
	if cfg.Pusher.Enabled() {
		return &configs.KeyError{Key: "pusher.apps", Env: configs.EnvPrefix + "PUSHER_APPS",
			Reason: fmt.Sprintf("the %s broker keeps no presence, which the Pusher protocol needs (docs/pusher.md)", cfg.Broker)}
	}
	if len(cfg.Presence.Channels) == 0 {
		return nil
	}
	return &configs.KeyError{Key: "presence.channels", Env: configs.EnvPrefix + "PRESENCE_CHANNELS",
		Reason: fmt.Sprintf("the %s broker keeps no presence yet (docs/presence.md): remove it, or use a broker that does", cfg.Broker)}
}

// dedupeStore is where msg_id keys are kept: Redis (shared by the nodes) with the redis broker or
// when asked, else this node's memory. (With jetstream, the stream's duplicate window also drops
// a msg_id published through two nodes, since its message UUID derives from the key.)
func dedupeStore(cfg *configs.Config) (middleware.DedupeStore, []func() error, error) {
	if cfg.Router.DedupeStore == "redis" || cfg.Router.DedupeStore == "auto" && cfg.Broker == configs.BrokerRedis {
		client := redis.NewClient(redis.ConfigFrom(cfg))
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
