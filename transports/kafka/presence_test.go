package kafka

import (
	"testing"
	"time"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceConformance runs the presence suite on kfake: Kill closes the node's broker
// (no leave, no more heartbeats), RestartBroker restarts kfake on the same port without its data.
func TestPresenceConformance(t *testing.T) {
	cl := newCluster(t)
	transporttest.RunPresence(t, transporttest.PresenceFeatures{RestartBroker: cl.restart},
		func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
			b, err := New(Config{Brokers: cl.addrs(), Prefix: prefix, NodeID: nodeID,
				Presence: transports.PresenceConfig{Heartbeat: heartbeat}}, testLogger())
			if err != nil {
				t.Fatal(err)
			}
			return b
		})
}
