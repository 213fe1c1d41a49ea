package transporttest

import (
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// SubscriptionMemory measures, in b's loop, the heap a node holds per channel subscription (what
// one idle connection on a channel of its own costs the node, besides the connection): the live
// heap after 2,000 SubscribeFunc, less the heap before, per subscription. It reports the last
// round's figure as B/sub (the first round also grows the client's maps, which later rounds
// reuse) and ends the subscriptions after each round. The broker's server should run in another
// process, so that its own state is not counted.
func SubscriptionMemory(b *testing.B, node transports.FuncSubscriber) {
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
