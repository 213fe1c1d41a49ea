package nats_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkSubscriptionMemory is the heap a node holds per channel subscription (what one idle
// connection on a channel of its own costs the node on core NATS, besides the connection): the
// live heap after 2,000 SubscribeFunc, less the heap before, per subscription, in B/sub. The
// nats-server is another process (NATS_URL, default nats://127.0.0.1:4222), so that its own
// state for the subscriptions is not counted. The figure is the last round's: the first also
// grows the client's maps of subscriptions, which later rounds reuse (-benchtime 1x shows it).
//
//	go test -run '^$' -bench SubscriptionMemory -count 6 ./transports/nats
func BenchmarkSubscriptionMemory(b *testing.B) {
	node := newNode(b, outsideURL(), transporttest.Prefix(b))
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
