//go:build !race

package nats_test

import (
	"testing"
	"time"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a node killed (Close, which sends nothing, as SIGKILL) at any point of
// its heartbeat cycle loses its member within 2 heartbeats (1 s each) of the kill, with one
// OnReap. It asserts a time, so it runs without the race detector only.
func TestPresenceReapBound(t *testing.T) {
	srv := startServer(t, 0)
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{
		Kill: func(t *testing.T, node transports.Broker) { _ = node.Close() },
	}, func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		return presenceNode(t, url, prefix, nodeID, heartbeat)
	})
}
