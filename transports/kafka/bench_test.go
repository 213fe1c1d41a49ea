package kafka

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkChannelDelivery publishes one message per Publish call from one node and receives
// each on three other nodes (kfake in process): b.N messages end to end.
func BenchmarkChannelDelivery(b *testing.B) {
	cl := newCluster(b)
	prefix := transporttest.Prefix(b)
	pub := newBackend(b, Config{Brokers: cl.addrs(), Prefix: prefix})
	topic := transports.ChannelTopic("bench")
	var chans []<-chan *message.Message
	for range 3 {
		n := newBackend(b, Config{Brokers: cl.addrs(), Prefix: prefix})
		ch, err := n.Subscribe(b.Context(), topic)
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, ch)
	}
	done := make(chan struct{})
	for _, ch := range chans {
		go func() {
			for range b.N {
				m := <-ch
				m.Ack()
			}
			done <- struct{}{}
		}()
	}
	msg := transporttest.NewMessage(`{"text":"hello"}`)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := pub.Publish(topic, msg); err != nil {
			b.Fatal(err)
		}
	}
	for range chans {
		<-done
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
