package memory_test

import (
	"testing"
	"time"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

func TestConformance(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 1000, HistoryTTL: time.Minute})
	t.Cleanup(broker.Close)
	transporttest.Run(t, transporttest.Features{History: true}, func(t *testing.T, prefix string) transports.Backend {
		return broker.Node(prefix)
	})
}

func TestHistoryBounds(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 3})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	topic := transports.ChannelTopic("c")
	start, _ := n.Last(t.Context(), topic)
	for i := 0; i < 5; i++ {
		if err := n.Publish(topic, transporttest.NewMessage("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, complete, _ := n.Replay(t.Context(), topic, start, 100); complete {
		t.Fatal("replay from before the trimmed history claims to be complete")
	}
	last, _ := n.Last(t.Context(), topic)
	back := last
	back.Lo -= 3
	msgs, complete, err := n.Replay(t.Context(), topic, back, 100)
	if err != nil || !complete || len(msgs) != 3 {
		t.Fatalf("replay of the kept history: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	back.Lo--
	if _, complete, _ := n.Replay(t.Context(), topic, back, 100); complete {
		t.Fatal("replay from one before the oldest kept message claims to be complete")
	}
}
