package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"defaults", Config{Brokers: []string{"k:9092"}}, ""},
		{"no brokers", Config{}, "kafka.brokers"},
		{"empty broker", Config{Brokers: []string{" "}}, "kafka.brokers"},
		{"partitions", Config{Brokers: []string{"k:9092"}, Partitions: -1}, "kafka.partitions"},
		{"too many partitions", Config{Brokers: []string{"k:9092"}, Partitions: 1025}, "kafka.partitions"},
		{"most partitions", Config{Brokers: []string{"k:9092"}, Partitions: 1024}, ""},
		{"replication", Config{Brokers: []string{"k:9092"}, ReplicationFactor: -2}, "kafka.replication_factor"},
		{"retention", Config{Brokers: []string{"k:9092"}, Retention: -time.Hour}, "kafka.retention"},
		{"version", Config{Brokers: []string{"k:9092"}, KafkaVersion: "x"}, "kafka version"},
		{"version before headers", Config{Brokers: []string{"k:9092"}, KafkaVersion: "0.10.2.0"}, "0.11.0 or later"},
		{"long prefix", Config{Brokers: []string{"k:9092"}, Prefix: string(make([]byte, 240))}, "topic_prefix"},
		{"presence heartbeat", Config{Brokers: []string{"k:9092"}, Presence: transports.PresenceConfig{Heartbeat: time.Millisecond}}, "presence.heartbeat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBrokerDownAtStart: New works without a broker, Ping and Publish fail quickly with
// ErrUnavailable, and the node recovers by itself when the broker comes up.
func TestBrokerDownAtStart(t *testing.T) {
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b := newBroker(t, Config{Brokers: []string{addr}, Prefix: transporttest.Prefix(t),
		DialTimeout: 500 * time.Millisecond, PublishTimeout: time.Second, OperationTimeout: 2 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := b.Ping(ctx); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Ping with no broker: %v", err)
	}
	start := time.Now()
	if err := b.Publish(protocol.ChannelTopic("x"), transporttest.NewMessage("x")); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Publish with no broker: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Publish took %v with no broker", d)
	}
	if _, err := b.Subscribe(t.Context(), protocol.ChannelTopic("x")); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Subscribe with no broker: %v", err)
	}

	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	transporttest.WaitFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return b.Ping(ctx)
	})
	topic := protocol.ChannelTopic("x")
	ch := subscribe(t, b, topic)
	if err := b.Publish(topic, transporttest.NewMessage("up")); err != nil {
		t.Fatal(err)
	}
	if m := transporttest.Receive(t, ch, 1, 10*time.Second)[0]; string(m.Payload) != "up" {
		t.Fatalf("got %q", m.Payload)
	}
}

// samePartition returns n channel names that share one partition.
func samePartition(n, partitions int) []string {
	var out []string
	want := partitionFor("slow", partitions)
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("slow%d", i)
		if partitionFor(name, partitions) == want {
			out = append(out, name)
		}
	}
	return out
}

// TestSlowSubscription: a subscription that does not read is closed when its buffer overflows,
// and another channel of the same partition keeps receiving.
func TestSlowSubscription(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t), SubscriptionBuffer: 5})
	names := samePartition(2, DefaultPartitions)
	slow := subscribe(t, b, protocol.ChannelTopic(names[0]))
	fast := subscribe(t, b, protocol.ChannelTopic(names[1]))
	for i := range 20 {
		if err := b.Publish(protocol.ChannelTopic(names[0]), transporttest.NewMessage(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(protocol.ChannelTopic(names[1]), transporttest.NewMessage("fast")); err != nil {
		t.Fatal(err)
	}
	if m := transporttest.Receive(t, fast, 1, 10*time.Second)[0]; string(m.Payload) != "fast" {
		t.Fatalf("got %q", m.Payload)
	}
	// The slow one gets what it held (in order), then its channel closes.
	n := 0
	transporttest.WaitFor(t, 10*time.Second, func() error {
		select {
		case m, ok := <-slow:
			if !ok {
				return nil
			}
			if string(m.Payload) != fmt.Sprint(n) {
				t.Fatalf("slow subscription: got %q, want %d", m.Payload, n)
			}
			n++
			m.Ack()
			return errors.New("still open")
		default:
			return errors.New("still open")
		}
	})
	if n == 0 || n >= 20 {
		t.Fatalf("slow subscription got %d messages before closing", n)
	}
}

// TestGroupBackoff: when joining the group keeps failing, SubscribeGroup retries with backoff
// (watermill-kafka's Subscriber would reconnect in a tight loop), then recovers.
func TestGroupBackoff(t *testing.T) {
	cl := newCluster(t)
	var joins, failing atomic.Int64
	failing.Store(1)
	cl.c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.c.KeepControl()
		if failing.Load() == 0 {
			return nil, nil, false
		}
		joins.Add(1)
		resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.Version = req.GetVersion()
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil, true
	})
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t), OperationTimeout: 3 * time.Second})
	ch, err := b.SubscribeGroup(t.Context(), protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	// SubscribeGroup waited OperationTimeout (3 s) for an assignment that could not come.
	if n := joins.Load(); n < 2 || n > 12 {
		t.Fatalf("%d join attempts in 3 s: want a few, with backoff", n)
	}
	failing.Store(0)
	if err := b.Publish(protocol.TopicInbound, transporttest.NewMessage("in")); err != nil {
		t.Fatal(err)
	}
	if m := transporttest.Receive(t, ch, 1, 15*time.Second)[0]; string(m.Payload) != "in" {
		t.Fatalf("got %q", m.Payload)
	}
}

// TestRestartKeepsHistory: a broker restart that keeps its data (same data directory) loses
// nothing: the subscription goes on where it was and positions stay valid.
func TestRestartKeepsHistory(t *testing.T) {
	cl := newCluster(t, kfake.DataDir(t.TempDir()))
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	topic := protocol.ChannelTopic("r")
	ch := subscribe(t, b, topic)
	publish := func(p string) {
		t.Helper()
		transporttest.WaitFor(t, 20*time.Second, func() error { return b.Publish(topic, transporttest.NewMessage(p)) })
	}
	for i := range 3 {
		publish(fmt.Sprint(i))
	}
	first := transporttest.Receive(t, ch, 3, 10*time.Second)
	cl.restart(t)
	for i := 3; i < 6; i++ {
		publish(fmt.Sprint(i))
	}
	rest := transporttest.Receive(t, ch, 3, 20*time.Second)
	for i, m := range append(first, rest...) {
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
	since, _ := protocol.ParsePosition(first[0].Metadata.Get(protocol.MetaPosition))
	msgs, complete, err := b.Replay(t.Context(), topic, since, 100)
	if err != nil || !complete || len(msgs) != 5 {
		t.Fatalf("replay across the restart: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	if got := msgs[4].Metadata.Get(protocol.MetaPosition); got != rest[2].Metadata.Get(protocol.MetaPosition) {
		t.Fatalf("replayed position %s, live %s", got, rest[2].Metadata.Get(protocol.MetaPosition))
	}
}

// TestHistoryLost: records deleted by retention, and a re-created topic, give complete=false.
func TestHistoryLost(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)})
	topic := protocol.ChannelTopic("t")
	ch := subscribe(t, b, topic)
	for i := range 5 {
		if err := b.Publish(topic, transporttest.NewMessage(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := transporttest.Receive(t, ch, 5, 10*time.Second)
	pos := make([]protocol.Position, len(got))
	for i, m := range got {
		pos[i], _ = protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
	}
	admin, err := sarama.NewClusterAdmin(cl.addrs(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	p := partitionFor("t", DefaultPartitions)
	// What retention does: the log now starts at the third message.
	if err := admin.DeleteRecords(b.names.channels, map[int32]int64{p: int64(pos[2].Lo) - 1}); err != nil {
		t.Fatal(err)
	}
	if msgs, complete, err := b.Replay(t.Context(), topic, pos[1], 100); err != nil || !complete || len(msgs) != 3 {
		t.Fatalf("replay of what is kept: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	if _, complete, err := b.Replay(t.Context(), topic, pos[0], 100); err != nil || complete {
		t.Fatalf("replay from before the kept history: complete %v, err %v", complete, err)
	}
	// A re-created topic is a new epoch.
	if err := admin.DeleteTopic(b.names.channels); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 20*time.Second, func() error {
		last, err := b.Last(t.Context(), topic)
		if err != nil {
			return err
		}
		if last.Epoch == pos[0].Epoch {
			return errors.New("same epoch")
		}
		return nil
	})
	if _, complete, err := b.Replay(t.Context(), topic, pos[1], 100); err != nil || complete {
		t.Fatalf("replay from the old topic: complete %v, err %v", complete, err)
	}
}

// TestReaderOvertaken: when retention deletes records of a partition that the node has not read
// yet (its reader is held up by a subscriber that does not read), the subscriptions fed by that
// partition deliver what they hold, then close, rather than go on past the gap.
func TestReaderOvertaken(t *testing.T) {
	cl := newCluster(t)
	b := newBroker(t, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t),
		SubscriptionBuffer: 5, SlowTimeout: time.Minute})
	topic := protocol.ChannelTopic("t")
	ch := subscribe(t, b, topic)
	// Nobody reads ch: the partition's dispatch waits for room, and sarama holds at most its
	// channel buffer and one fetch (1 MiB) of what follows; the rest stays on the broker.
	const n = 3000
	payload := strings.Repeat("x", 1000)
	batch := make([]*message.Message, 100)
	for i := 0; i < n; i += len(batch) {
		for j := range batch {
			batch[j] = transporttest.NewMessage(fmt.Sprintf("%d %s", i+j, payload))
		}
		if err := b.Publish(topic, batch...); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := sarama.NewClusterAdmin(cl.addrs(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// What retention does: the log now starts after the last record.
	if err := admin.DeleteRecords(b.names.channels, map[int32]int64{partitionFor("t", DefaultPartitions): n}); err != nil {
		t.Fatal(err)
	}
	if got := transporttest.ReceiveUntilClosed(t, ch, n, 30*time.Second); got == 0 {
		t.Fatal("closed before the records sarama had fetched were delivered")
	}
}

// TestCloseStopsGoroutines: after Close nothing the broker started keeps running.
func TestCloseStopsGoroutines(t *testing.T) {
	cl := newCluster(t)
	exercise := func() {
		b, err := New(Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(t)}, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		topic := protocol.ChannelTopic("g")
		ch, err := b.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Subscribe(ctx, protocol.TopicDirect); err != nil {
			t.Fatal(err)
		}
		if _, err := b.SubscribeGroup(ctx, protocol.TopicInbound, "svc"); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(topic, transporttest.NewMessage("x")); err != nil {
			t.Fatal(err)
		}
		transporttest.Receive(t, ch, 1, 10*time.Second)
		if _, _, err := b.Replay(ctx, topic, protocol.Position{}, 10); err != nil {
			t.Fatal(err)
		}
		if err := b.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		// Presence: its reader, heartbeats (with a reaping pass and a reconcile) and notifier.
		b.OnReap(func(string, protocol.Member, bool) {})
		if _, err := b.Join(ctx, "p", protocol.Member{Session: "s"}); err != nil {
			t.Fatal(err)
		}
		b.pr.mu.Lock()
		beats := b.pr.beats
		b.pr.mu.Unlock()
		transporttest.WaitFor(t, 10*time.Second, func() error {
			b.pr.mu.Lock()
			defer b.pr.mu.Unlock()
			if b.pr.beats < beats+2 {
				return errors.New("no heartbeat read back yet")
			}
			return nil
		})
		start := time.Now()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Close took %v", d)
		}
	}
	exercise() // starts what sarama starts once per process
	base := runtime.NumGoroutine()
	exercise()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines after Close, %d before", n, base)
		}
		return nil
	})
}
