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

// TestBoundsPerTopic: Config.Bounds gives one channel topic its own size and TTL, and the others
// keep HistorySize and HistoryTTL.
func TestBoundsPerTopic(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 100, Bounds: func(topic string) (int, time.Duration) {
		if topic == transports.ChannelTopic("small") {
			return 2, 0
		}
		if topic == transports.ChannelTopic("brief") {
			return 0, time.Nanosecond
		}
		return 0, 0
	}})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	kept := func(channel string) int {
		t.Helper()
		topic := transports.ChannelTopic(channel)
		start, _ := n.Last(t.Context(), topic)
		for i := 0; i < 5; i++ {
			if err := n.Publish(topic, transporttest.NewMessage("x")); err != nil {
				t.Fatal(err)
			}
		}
		last, _ := n.Last(t.Context(), topic)
		for back := 1; back <= 5; back++ {
			since := last
			since.Lo -= uint64(back)
			if _, complete, _ := n.Replay(t.Context(), topic, since, 100); !complete {
				return back - 1
			}
		}
		if _, complete, _ := n.Replay(t.Context(), topic, start, 100); !complete {
			t.Fatalf("%s: every message is kept but the replay from the start is not complete", channel)
		}
		return 5
	}
	if got := kept("small"); got != 2 {
		t.Errorf("channel small keeps %d messages, want 2", got)
	}
	if got := kept("other"); got != 5 {
		t.Errorf("channel other keeps %d messages, want all 5 (HistorySize 100)", got)
	}
	// A TTL of 1 ns: by the time of the replay every message is older.
	if got := kept("brief"); got != 0 {
		t.Errorf("channel brief keeps %d messages, want 0", got)
	}
}
