package nats_test

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkPublishBusy publishes from 16 goroutines while 2,000 others keep the scheduler's run
// queue long (each does a little work and yields), as the fan-out's write goroutines do on a
// saturated node: what a publish's confirmation costs when every wake-up waits its turn. Run
// it with -cpu 1 against a nats-server in another process (NATS_URL, default
// nats://127.0.0.1:4222; skipped when none answers).
func BenchmarkPublishBusy(b *testing.B) {
	node, err := nats.New(nats.Config{URL: outsideURL(), Prefix: transporttest.Prefix(b), Name: "bench-busy"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = node.Close() }()
	if err := node.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := node.Ping(ctx); err != nil {
		b.Skipf("no nats-server at %s: %v", outsideURL(), err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var x uint64
			for !stop.Load() {
				for i := range 2000 {
					x += uint64(i) * x
				}
				runtime.Gosched()
			}
			_ = x
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	topic := protocol.ChannelTopic("busy")
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := node.Publish(topic, transporttest.NewMessage("x")); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// outsideURL is the nats-server in another process the benchmarks use: NATS_URL, default
// nats://127.0.0.1:4222.
func outsideURL() string {
	if url := os.Getenv("NATS_URL"); url != "" {
		return url
	}
	return "nats://127.0.0.1:4222"
}
