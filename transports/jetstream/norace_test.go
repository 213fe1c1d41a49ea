//go:build !race

package jetstream

import (
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

const raceEnabled = false

// TestPresenceReapBound: a closed node's members are reaped within transporttest.ReapBound
// heartbeats of its close (heartbeat 1 s), on an in-process server. It asserts a time, so it
// runs outside -race.
func TestPresenceReapBound(t *testing.T) {
	br := startBroker(t)
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{}, presenceSuiteNodes(br.url()))
}
