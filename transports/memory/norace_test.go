//go:build !race

package memory_test

import (
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a closed node's members are reaped within transporttest.ReapBound
// heartbeats of its close (heartbeat 1 s). It asserts a time, so it runs outside -race.
func TestPresenceReapBound(t *testing.T) {
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, presenceNodeMaker())
}
