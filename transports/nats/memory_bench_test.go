package nats_test

import (
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkSubscriptionMemory is the heap a node holds per channel subscription on core NATS
// (transporttest.SubscriptionMemory), the nats-server in another process (NATS_URL, default
// nats://127.0.0.1:4222).
//
//	go test -run '^$' -bench SubscriptionMemory -count 6 ./transports/nats
func BenchmarkSubscriptionMemory(b *testing.B) {
	transporttest.SubscriptionMemory(b, newNode(b, outsideURL(), transporttest.Prefix(b)))
}
