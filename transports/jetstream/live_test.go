package jetstream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// dropper drops the republished messages whose payload starts with one of its prefixes.
type dropper struct {
	mu       sync.Mutex
	prefixes []string
}

func (d *dropper) set(prefixes ...string) {
	d.mu.Lock()
	d.prefixes = prefixes
	d.mu.Unlock()
}

func (d *dropper) drop(nm *nats.Msg) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.prefixes {
		if strings.HasPrefix(string(nm.Data), p) {
			return true
		}
	}
	return false
}

// newDropNode is a node whose dispatcher drops what d says, and a second node to publish.
func newDropNode(t *testing.T, cfg Config) (n, pub *Broker, d *dropper) {
	t.Helper()
	d = &dropper{} // what it drops must stay dropped: the node reads after the publisher's acks
	n, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	n.dropLive = d.drop // before Start: the dispatcher reads it
	t.Cleanup(func() { _ = n.Close() })
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n, newNode(t, cfg), d
}

// TestLiveGapCaughtUp: republished messages a node missed (core NATS dropped them) show as a gap
// at the next one, and the node reads them from the stream: the subscriber gets every message,
// in order, once.
func TestLiveGapCaughtUp(t *testing.T) {
	br := startBroker(t)
	n, pub, d := newDropNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	topic := protocol.ChannelTopic("gap")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, topic, "a", 2)
	d.set("b") // for good: the node reads republished messages after the publisher's acks
	publishN(t, pub, topic, "b", 3)
	publishN(t, pub, topic, "c", 2)
	checkPayloads(t, transporttest.Receive(t, ch, 7, wait), "a0", "a1", "b0", "b1", "b2", "c0", "c1")
	publishN(t, pub, topic, "sentinel", 1)
	checkPayloads(t, transporttest.Receive(t, ch, 1, wait), "sentinel0")
}

// TestLiveReconnectProbe: a message whose republication the node missed, with nothing after it
// on the channel, is read from the stream when the node reconnects.
func TestLiveReconnectProbe(t *testing.T) {
	br := startBroker(t)
	n, pub, d := newDropNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	topic := protocol.ChannelTopic("probe")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	d.set("lost")
	publishN(t, pub, topic, "lost", 2)
	if err := n.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, transporttest.Receive(t, ch, 2, wait), "lost0", "lost1")
	transporttest.WaitFor(t, wait, func() error { return n.Ping(t.Context()) })
	publishN(t, pub, topic, "sentinel", 1)
	checkPayloads(t, transporttest.Receive(t, ch, 1, wait), "sentinel0")
}

// TestLiveGapTrimmed: when the stream dropped the messages a node missed, the subscription ends
// (its clients resume and learn what was lost) rather than deliver past the gap.
func TestLiveGapTrimmed(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.MaxMsgs = 5
	n, pub, d := newDropNode(t, cfg)
	topic := protocol.ChannelTopic("trimmed")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, topic, "0 ", 1)
	if got := transporttest.Receive(t, ch, 1, wait); len(got) != 1 {
		t.Fatal("first message not delivered")
	}
	d.set("x")
	for i := range 10 {
		if err := pub.Publish(topic, transporttest.NewMessage(fmt.Sprintf("x%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Publish(topic, transporttest.NewMessage("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("delivered past a gap: %q", m.Payload)
		}
	case <-time.After(wait):
		t.Fatal("the subscription neither ended nor delivered")
	}
}

// TestLiveStreamUpgraded: a channel stream made without RePublish (by an older gateway) is
// updated by a node, and its subscriptions work.
func TestLiveStreamUpgraded(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	probe, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := probe.streamConfigs()[0]
	sc.RePublish = nil
	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(t.Context(), sc); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, cfg)
	transporttest.WaitFor(t, wait, func() error { return n.Ping(t.Context()) })
	s, err := js.Stream(t.Context(), sc.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !n.republishes(s.CachedInfo().Config) {
		t.Fatalf("stream not updated: RePublish %+v", s.CachedInfo().Config.RePublish)
	}
	topic := protocol.ChannelTopic("up")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "m", 2)
	checkPayloads(t, transporttest.Receive(t, ch, 2, wait), "m0", "m1")
}

// TestLiveIdleCost: idle channel subscriptions hold no goroutine and no consumer on the server.
func TestLiveIdleCost(t *testing.T) {
	br := startBroker(t)
	n := newNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	const subs = 500
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var ended sync.WaitGroup
	for i := range subs {
		ended.Add(1)
		err := n.SubscribeFunc(ctx, protocol.ChannelTopic(fmt.Sprintf("idle-%d", i)),
			func(*message.Message) bool { return true }, ended.Done)
		if err != nil {
			t.Fatal(err)
		}
	}
	if grew := runtime.NumGoroutine() - before; grew > subs/10 {
		t.Fatalf("%d idle channel subscriptions added %d goroutines", subs, grew)
	}
	info, err := n.js.Stream(t.Context(), n.channels)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().State.Consumers; c != 0 {
		t.Fatalf("%d consumers on the channel stream, want 0", c)
	}
	cancel()
	ended.Wait()
	n.liveMu.Lock()
	left := len(n.live)
	n.liveMu.Unlock()
	if left != 0 {
		t.Fatalf("%d subscriptions left after they ended", left)
	}
}

func checkPayloads(t *testing.T, msgs []*message.Message, want ...string) {
	t.Helper()
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = string(m.Payload)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestLiveStreamNotUpgradable: on a nats-server before 2.10 (the machine's, on 127.0.0.1:4222),
// which cannot add a RePublish to an existing stream, a node facing a channel stream without it
// stays not ready and says why, rather than subscribe to channels it would never hear from.
func TestLiveStreamNotUpgradable(t *testing.T) {
	const url = "nats://127.0.0.1:4222"
	nc, err := nats.Connect(url, nats.Timeout(200*time.Millisecond))
	if err != nil {
		t.Skip("no nats-server on 127.0.0.1:4222")
	}
	defer nc.Close()
	if !strings.HasPrefix(nc.ConnectedServerVersion(), "2.9.") && !strings.HasPrefix(nc.ConnectedServerVersion(), "2.8.") {
		t.Skipf("nats-server %s can add a RePublish (TestLiveStreamUpgraded)", nc.ConnectedServerVersion())
	}
	js, _ := jetstream.New(nc)
	prefix := transporttest.Prefix(t)
	dropStreams(t, url, prefix)
	cfg := testConfig(url, prefix)
	probe, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := probe.streamConfigs()[0]
	sc.RePublish = nil
	if _, err := js.CreateStream(t.Context(), sc); err != nil {
		t.Skipf("no JetStream on 127.0.0.1:4222: %v", err)
	}
	n := newNode(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err = n.ensureStreams(ctx)
	if err == nil || !strings.Contains(err.Error(), "does not republish") {
		t.Fatalf("provisioning a stream without RePublish on nats-server %s: %v", nc.ConnectedServerVersion(), err)
	}
	if err := n.Ping(t.Context()); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Ping: %v, want unavailable", err)
	}
}

// TestLiveRePublishRemoved: when the channel stream loses its RePublish (a node of an earlier
// build updated it to its own settings), the node puts it back at its next check and reads what
// was stored meanwhile from the stream.
func TestLiveRePublishRemoved(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.CheckInterval = 100 * time.Millisecond
	n := newNode(t, cfg)
	topic := protocol.ChannelTopic("removed")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	sc := n.streamConfigs()[0]
	sc.RePublish = nil
	if _, err := js.UpdateStream(t.Context(), sc); err != nil {
		t.Fatal(err)
	}
	// Straight into the stream, so that the publish cannot wait for the RePublish to come back.
	if _, err := js.Publish(t.Context(), cfg.Prefix+".ch.removed", []byte("while-removed")); err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, transporttest.Receive(t, ch, 1, wait), "while-removed")
	publishN(t, n, topic, "after", 1)
	checkPayloads(t, transporttest.Receive(t, ch, 1, wait), "after0")
}
