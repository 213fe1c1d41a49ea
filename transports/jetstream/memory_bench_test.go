package jetstream

import (
	"context"
	"log/slog"
	"testing"

	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkSubscriptionMemory is the heap a node holds per live channel subscription on
// JetStream (transporttest.SubscriptionMemory), the nats-server the one on 127.0.0.1:4222, in
// another process.
//
//	go test -run '^$' -bench SubscriptionMemory -count 6 ./transports/jetstream
func BenchmarkSubscriptionMemory(b *testing.B) {
	const url = "nats://127.0.0.1:4222"
	prefix := transporttest.Prefix(b)
	dropStreams(b, url, prefix)
	node, err := New(testConfig(url, prefix), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = node.Close() })
	if err := node.Start(context.Background()); err != nil {
		b.Skipf("no JetStream at %s: %v", url, err)
	}
	transporttest.SubscriptionMemory(b, node)
}
