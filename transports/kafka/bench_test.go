package kafka

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkChannelDelivery publishes one message per Publish call from one node and receives
// each on three other nodes (kfake in process): b.N messages end to end.
func BenchmarkChannelDelivery(b *testing.B) {
	cl := newCluster(b)
	prefix := transporttest.Prefix(b)
	pub := newBroker(b, Config{Brokers: cl.addrs(), Prefix: prefix})
	topic := protocol.ChannelTopic("bench")
	var chans []<-chan *message.Message
	for range 3 {
		n := newBroker(b, Config{Brokers: cl.addrs(), Prefix: prefix})
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

// BenchmarkReplay replays the 10 messages a client missed on one channel (kfake in process):
// what every resume on Kafka costs the node, b.N times.
func BenchmarkReplay(b *testing.B) {
	cl := newCluster(b)
	n := newBroker(b, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(b)})
	topic := protocol.ChannelTopic("bench")
	since, err := n.Last(b.Context(), topic)
	if err != nil {
		b.Fatal(err)
	}
	for range 10 {
		if err := n.Publish(topic, transporttest.NewMessage(`{"text":"hello"}`)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		msgs, complete, err := n.Replay(b.Context(), topic, since, 100)
		if err != nil || !complete || len(msgs) != 10 {
			b.Fatalf("replay: %d msgs, complete %v, err %v", len(msgs), complete, err)
		}
	}
}

// BenchmarkGroupDelivery consumes b.N records, published beforehand, in a consumer group of one
// member (kfake in process), acking each as it comes: the group's delivery and commit cost.
func BenchmarkGroupDelivery(b *testing.B) {
	cl := newCluster(b)
	n := newBroker(b, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(b)})
	msg := transporttest.NewMessage(`{"type":"connected"}`)
	for range b.N {
		if err := n.Publish(protocol.TopicEvents, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	ch, err := n.SubscribeGroup(b.Context(), protocol.TopicEvents, "bench")
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		(<-ch).Ack()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
