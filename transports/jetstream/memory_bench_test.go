package jetstream

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkSubscriptionMemory is the heap a node holds per live channel subscription (what one
// idle connection on a channel of its own costs the node on JetStream, besides the connection):
// the live heap after 2,000 SubscribeFunc, less the heap before, per subscription, in B/sub, of
// the last round (the first also grows the client's maps, which later rounds reuse). The
// nats-server is the one on 127.0.0.1:4222, in another process, so that its own state is not
// counted.
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
	const n = 2000
	var perSub float64
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		ended := make(chan struct{}, n)
		before := liveHeap()
		for i := range n {
			topic := protocol.ChannelTopic("mem:" + strconv.Itoa(i))
			err := node.SubscribeFunc(ctx, topic, func(*message.Message) bool { return true }, func() { ended <- struct{}{} })
			if err != nil {
				b.Fatal(err)
			}
		}
		perSub = float64(liveHeap()-before) / n
		cancel()
		for range n {
			<-ended
		}
	}
	b.ReportMetric(perSub, "B/sub")
}

// liveHeap is the heap in use after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
