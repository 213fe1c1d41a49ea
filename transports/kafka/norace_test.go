//go:build !race

package kafka

import (
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a closed node's members are reaped within transporttest.ReapBound
// heartbeats of its close (heartbeat 1 s), on kfake. It asserts a time, so it runs outside -race.
func TestPresenceReapBound(t *testing.T) {
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, presenceSuiteNodes(newCluster(t)))
}
