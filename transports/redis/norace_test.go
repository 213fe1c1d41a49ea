//go:build !race

package redis_test

import (
	"testing"

	"github.com/wsgateway/gateway/internal/rediscluster"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a closed node's members are reaped within transporttest.ReapBound
// heartbeats of its close (heartbeat 1 s), on the machine's Redis. It asserts a time, so it
// runs outside -race.
func TestPresenceReapBound(t *testing.T) {
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, presenceNodeMaker(machineRedis(t)))
}

// TestPresenceReapBoundCluster: as TestPresenceReapBound, in cluster mode on a Redis Cluster of 3
// primaries and 3 replicas.
func TestPresenceReapBoundCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster of 6 servers")
	}
	c := rediscluster.Start(t, 3, 1)
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, clusterPresenceNodeMaker(c))
}
