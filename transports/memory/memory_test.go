package memory_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

func TestConformance(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 1000, HistoryTTL: time.Minute})
	t.Cleanup(broker.Close)
	transporttest.Run(t, transporttest.Features{History: true}, func(t *testing.T, prefix string) transports.Broker {
		return broker.Node(prefix)
	})
}

func TestHistoryBounds(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 3})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	topic := protocol.ChannelTopic("c")
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
		if topic == protocol.ChannelTopic("small") {
			return 2, 0
		}
		if topic == protocol.ChannelTopic("brief") {
			return 0, time.Nanosecond
		}
		return 0, 0
	}})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	kept := func(channel string) int {
		t.Helper()
		topic := protocol.ChannelTopic(channel)
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

// TestTopicStateIsFreed: a topic's state goes once its last subscriber left and it has no
// history (none published, or all of it expired), and a position taken before stays honest:
// the channel's next message is replayed from it.
func TestTopicStateIsFreed(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	ctx, cancel := context.WithCancel(t.Context())
	for i := range 1000 {
		if _, err := n.Subscribe(ctx, protocol.ChannelTopic(fmt.Sprint("room:", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := broker.Topics(); got != 1000 {
		t.Fatalf("%d topics with subscribers, want 1000", got)
	}
	topic := protocol.ChannelTopic("room:1")
	since, _ := n.Last(t.Context(), topic)
	cancel()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got := broker.Topics(); got != 0 {
			return fmt.Errorf("%d topics kept after every subscriber left", got)
		}
		return nil
	})
	if err := n.Publish(topic, transporttest.NewMessage("after")); err != nil {
		t.Fatal(err)
	}
	msgs, complete, err := n.Replay(t.Context(), topic, since, 10)
	if err != nil || !complete || len(msgs) != 1 || string(msgs[0].Payload) != "after" {
		t.Fatalf("replay from before the topic was freed: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
}

// TestFreedHistoryIsNotResumed: once a channel's history expired and its state was freed, a
// resume from before the expired messages is not complete, also after the channel is used again.
func TestFreedHistoryIsNotResumed(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10, HistoryTTL: time.Millisecond})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	topic := protocol.ChannelTopic("c")
	since, _ := n.Last(t.Context(), topic)
	if err := n.Publish(topic, transporttest.NewMessage("expires")); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got := broker.Topics(); got != 0 {
			return fmt.Errorf("%d topics kept after the history expired", got)
		}
		return nil
	})
	if _, complete, _ := n.Replay(t.Context(), topic, since, 10); complete {
		t.Fatal("replay from before an expired message of a freed topic is complete")
	}
	if err := n.Publish(topic, transporttest.NewMessage("later")); err != nil {
		t.Fatal(err)
	}
	if _, complete, _ := n.Replay(t.Context(), topic, since, 10); complete {
		t.Fatal("replay from before an expired message is complete once the topic is used again")
	}
}

// TestTTLFreesMemoryWithoutPublish: history older than its TTL is dropped in the background, with
// no further publish or replay: 3 channels of 300 messages of 60 KB are let go.
func TestTTLFreesMemoryWithoutPublish(t *testing.T) {
	const ttl = 200 * time.Millisecond
	broker := memory.NewBroker(memory.Config{HistorySize: 1000, HistoryTTL: ttl})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	before := liveHeap()
	payload := strings.Repeat("x", 60<<10)
	for c := range 3 {
		for range 300 {
			if err := n.Publish(protocol.ChannelTopic(fmt.Sprint("big:", c)), transporttest.NewMessage(payload)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each channel's last message, at least, was younger than the TTL when it was published, and
	// nothing publishes or replays again: only the background expiry can drop it.
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got, topics := broker.HistoryBytes(), broker.Topics(); got != 0 || topics != 0 {
			return fmt.Errorf("%d bytes of history in %d topics kept past the TTL", got, topics)
		}
		return nil
	})
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if after := liveHeap(); after > before+8<<20 {
			return fmt.Errorf("live heap %d B, %d B before 54 MB of history was published and expired", after, before)
		}
		return nil
	})
}

// TestTrimmedHistoryFreesPayloads: messages trimmed by count leave the heap at once, though the
// broker's age bookkeeping still lists them until their TTL: history.max_bytes and the count are
// bounds of memory, not only of what a resume sees.
func TestTrimmedHistoryFreesPayloads(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10, HistoryTTL: time.Hour})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	// Live messages ahead of the trimmed ones in the age bookkeeping, so that expiry, which
	// frees from the oldest, cannot reach the trimmed ones.
	for i := range 2000 {
		if err := n.Publish(protocol.ChannelTopic(fmt.Sprint("quiet:", i)), transporttest.NewMessage("x")); err != nil {
			t.Fatal(err)
		}
	}
	before := liveHeap()
	payload := strings.Repeat("x", 60<<10)
	for range 300 {
		if err := n.Publish(protocol.ChannelTopic("trimmed"), transporttest.NewMessage(payload)); err != nil {
			t.Fatal(err)
		}
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if after := liveHeap(); after > before+4<<20 {
			return fmt.Errorf("live heap %d B, %d B before 18 MB were published to a channel keeping 600 KB", after, before)
		}
		return nil
	})
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMaxBytesEvictsOldestFirst: over MaxBytes the oldest history goes first, across channels;
// a resume from before an evicted message is not complete, one after it is.
func TestMaxBytesEvictsOldestFirst(t *testing.T) {
	one := sizeOfOne(t)
	// Room for 10 messages of this shape, not 11 (the position's digits vary by a few bytes).
	broker := memory.NewBroker(memory.Config{HistorySize: 100, MaxBytes: one*10 + one/2})
	t.Cleanup(broker.Close)
	n := broker.Node("p")
	defer n.Close()
	start := map[string]protocol.Position{}
	for _, c := range []string{"a", "b", "c"} {
		topic := protocol.ChannelTopic(c)
		start[c], _ = n.Last(t.Context(), topic)
		for range 5 {
			if err := n.Publish(topic, transporttest.NewMessage(strings.Repeat("x", 1000))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := broker.HistoryBytes(); got > one*10+one/2 {
		t.Fatalf("history holds %d bytes, over MaxBytes %d", got, one*10+one/2)
	}
	replay := func(c string, since protocol.Position) (int, bool) {
		msgs, complete, err := n.Replay(t.Context(), protocol.ChannelTopic(c), since, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(msgs), complete
	}
	if _, complete := replay("a", start["a"]); complete {
		t.Fatal("channel a, the oldest, was not evicted: its replay from the start is complete")
	}
	for _, c := range []string{"b", "c"} {
		if got, complete := replay(c, start[c]); !complete || got != 5 {
			t.Fatalf("channel %s: replay from the start gives %d messages, complete %v; want its 5 kept", c, got, complete)
		}
	}
	if got := broker.Topics(); got != 2 {
		t.Fatalf("%d topics kept, want 2: a lost all its history and has no subscriber", got)
	}
	// One more: b's oldest goes, and a resume from it (after it) is still complete.
	if err := n.Publish(protocol.ChannelTopic("c"), transporttest.NewMessage(strings.Repeat("x", 1000))); err != nil {
		t.Fatal(err)
	}
	if _, complete := replay("b", start["b"]); complete {
		t.Fatal("channel b: its oldest message was evicted but the replay from the start is complete")
	}
	first := start["b"]
	first.Lo++ // b's first message was the broker's next after start["b"]
	if got, complete := replay("b", first); !complete || got != 4 {
		t.Fatalf("channel b: replay after its evicted first message gives %d messages, complete %v; want 4", got, complete)
	}
}

// sizeOfOne is what one message of TestMaxBytesEvictsOldestFirst counts towards MaxBytes.
func sizeOfOne(t *testing.T) int64 {
	broker := memory.NewBroker(memory.Config{HistorySize: 1})
	defer broker.Close()
	n := broker.Node("p")
	defer n.Close()
	if err := n.Publish(protocol.ChannelTopic("a"), transporttest.NewMessage(strings.Repeat("x", 1000))); err != nil {
		t.Fatal(err)
	}
	return broker.HistoryBytes()
}

// TestCloseTwice: the broker's background expiry stops with Close, which may be called twice.
func TestCloseTwice(t *testing.T) {
	broker := memory.NewBroker(memory.Config{HistorySize: 10, HistoryTTL: time.Minute})
	n := broker.Node("p")
	if err := n.Publish(protocol.ChannelTopic("c"), transporttest.NewMessage("x")); err != nil {
		t.Fatal(err)
	}
	broker.Close()
	broker.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestHookCalls(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	transporttest.RunHookCalls(t, transporttest.HookFeatures{}, func(t *testing.T, prefix string) transports.Broker {
		return broker.Node(prefix)
	})
}
