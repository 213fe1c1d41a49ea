package memory_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceConformance runs the presence suite (nodes: presenceNodeMaker).
func TestPresenceConformance(t *testing.T) {
	transporttest.RunPresence(t, transporttest.PresenceFeatures{WorksBeforeStart: true}, presenceNodeMaker())
}

// presenceNodeMaker makes the nodes of the presence suites: one Broker per test prefix (the
// heartbeat is the broker's), its nodes that prefix's Nodes.
func presenceNodeMaker() transporttest.NewPresenceNode {
	var mu sync.Mutex
	brokers := map[string]*memory.Broker{}
	return func(t *testing.T, prefix, _ string, heartbeat time.Duration) transports.Broker {
		mu.Lock()
		defer mu.Unlock()
		b := brokers[prefix]
		if b == nil {
			b = memory.NewBroker(memory.Config{Presence: transports.PresenceConfig{Heartbeat: heartbeat}})
			brokers[prefix] = b
			t.Cleanup(b.Close)
		}
		return b.Node(prefix)
	}
}

// TestPresenceLeavesNoGoroutine: the renewal of a node and the broker's reaper end with Close.
func TestPresenceLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := memory.NewBroker(memory.Config{Presence: transports.PresenceConfig{Heartbeat: 20 * time.Millisecond}})
	n := b.Node("p")
	if _, err := n.Join(t.Context(), "c", protocol.Member{Session: "s", Node: "n"}); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	b.Close()
}

// BenchmarkPresencePage reads one page of 100 members from the middle of channels of growing
// size: the time per page stays flat (O(log members + limit)).
func BenchmarkPresencePage(b *testing.B) {
	for _, size := range []int{1000, 10000, 100000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			br := memory.NewBroker(memory.Config{})
			defer br.Close()
			n := br.Node("p")
			defer n.Close()
			for i := range size {
				if _, err := n.Join(b.Context(), "c", protocol.Member{User: "u", Session: fmt.Sprintf("s%07d", i), Node: "n"}); err != nil {
					b.Fatal(err)
				}
			}
			after := fmt.Sprintf("s%07d", size/2)
			b.ResetTimer()
			for b.Loop() {
				if ms, _, err := n.Members(b.Context(), "c", after, 100); err != nil || len(ms) != 100 {
					b.Fatal(len(ms), err)
				}
			}
		})
	}
}
