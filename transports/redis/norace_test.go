//go:build !race

package redis_test

import (
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a closed node's members are reaped within transporttest.ReapBound
// heartbeats of its close (heartbeat 1 s), on the machine's Redis. It asserts a time, so it
// runs outside -race.
func TestPresenceReapBound(t *testing.T) {
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, presenceNodeMaker(machineRedis(t)))
}
