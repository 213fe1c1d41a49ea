package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

const wait = 10 * time.Second

// broker is an in-process nats-server with JetStream that can be restarted on the same port and
// store directory, so its streams survive the restart.
type broker struct {
	t    testing.TB
	dir  string
	port int

	mu  sync.Mutex
	srv *natsserver.Server
}

func startBroker(t testing.TB) *broker {
	b := &broker{t: t, dir: t.TempDir(), port: -1}
	b.start()
	b.port = b.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(b.stop)
	return b
}

// brokerAt makes a broker for a port where nothing listens yet; call start to start it.
func brokerAt(t *testing.T) *broker {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	b := &broker{t: t, dir: t.TempDir(), port: port}
	t.Cleanup(b.stop)
	return b
}

func (b *broker) url() string { return "nats://127.0.0.1:" + strconv.Itoa(b.port) }

func (b *broker) start() {
	b.t.Helper()
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: b.port, JetStream: true, StoreDir: b.dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		b.t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(wait) {
		b.t.Fatal("nats-server did not start")
	}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
}

func (b *broker) stop() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (b *broker) restart(t *testing.T) {
	b.stop()
	b.start()
}

// testLogger logs warnings and errors into the test's output; logging after the test ended
// panics, which catches goroutines that outlive Close.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func testConfig(url, prefix string) Config {
	return Config{
		URL:              url,
		Prefix:           prefix,
		MaxBytes:         64 << 20,
		Heartbeat:        time.Second,
		PublishTimeout:   2 * time.Second,
		ReconnectWait:    50 * time.Millisecond,
		MaxReconnectWait: 500 * time.Millisecond,
	}
}

func newNode(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// dropStreams deletes the streams and the presence bucket of a prefix once the test is over (a
// shared server keeps them).
func dropStreams(t testing.TB, url, prefix string) {
	t.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range []string{"_channels", "_inbound"} {
			_ = js.DeleteStream(ctx, transports.SafeName(prefix)+s)
		}
		_ = js.DeleteKeyValue(ctx, transports.SafeName(prefix)+"_presence") // Start makes it
	})
}

func suiteNodes(url string) transporttest.NewNode {
	var seen sync.Map
	return func(t *testing.T, prefix string) transports.Broker {
		if _, dup := seen.LoadOrStore(prefix, true); !dup {
			dropStreams(t, url, prefix)
		}
		b, err := New(testConfig(url, prefix), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func TestConformance(t *testing.T) {
	br := startBroker(t)
	transporttest.Run(t, transporttest.Features{History: true, RestartBroker: br.restart}, suiteNodes(br.url()))
}

// TestConformanceLocalServer runs the suite against the machine's nats-server (2.9 on Debian)
// when one listens on 127.0.0.1:4222.
func TestConformanceLocalServer(t *testing.T) {
	const url = "nats://127.0.0.1:4222"
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", 200*time.Millisecond)
	if err != nil {
		t.Skip("no nats-server on 127.0.0.1:4222")
	}
	_ = c.Close()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Skip(err)
	}
	_, err = nc.RTT()
	js, _ := jetstream.New(nc)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = js.AccountInfo(ctx)
		cancel()
	}
	nc.Close()
	if err != nil {
		t.Skipf("nats-server on 127.0.0.1:4222 without JetStream: %v", err)
	}
	transporttest.Run(t, transporttest.Features{History: true}, suiteNodes(url))
}

func position(t *testing.T, m *message.Message) protocol.Position {
	t.Helper()
	p, err := protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
	if err != nil {
		t.Fatalf("position %q: %v", m.Metadata.Get(protocol.MetaPosition), err)
	}
	return p
}

func publishN(t *testing.T, b *Broker, topic, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := b.Publish(topic, transporttest.NewMessage(fmt.Sprintf("%s%d", prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReplayAfterTrim(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.MaxMsgs = 5
	n := newNode(t, cfg)
	ctx := t.Context()
	topic := protocol.ChannelTopic("c")
	start, err := n.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := n.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	// Seqs 1..8; 4..8 are kept. Each message is received before the next is published: a live
	// consumer that is behind when the stream trims skips the trimmed messages (see
	// docs/brokers/jetstream.md, Trade-offs), and this test is about replay.
	var got []*message.Message
	for i := range 8 {
		publishN(t, n, topic, fmt.Sprintf("m%d-", i), 1)
		got = append(got, transporttest.Receive(t, ch, 1, wait)...)
	}
	if _, complete, err := n.Replay(ctx, topic, start, 100); err != nil || complete {
		t.Fatalf("replay from before the trimmed history: complete %v, err %v", complete, err)
	}
	if _, complete, _ := n.Replay(ctx, topic, position(t, got[1]), 100); complete {
		t.Fatal("replay from a position two before the oldest kept message claims to be complete")
	}
	msgs, complete, err := n.Replay(ctx, topic, position(t, got[2]), 100)
	if err != nil || !complete || len(msgs) != 5 || string(msgs[0].Payload) != "m3-0" {
		t.Fatalf("replay of the kept history: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
}

// TestStreamSettings: a node creates the streams with its settings; a node with the same settings
// uses them as they are; a node with other settings updates them.
func TestStreamSettings(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.MaxAge = time.Hour
	ctx := t.Context()
	// start runs a node until it provisioned the streams (New does it in the background, and
	// once more when nats.go reports the connection), reads the channel stream, and closes it:
	// nodes with other settings running side by side would each set their own.
	start := func(cfg Config) *jetstream.StreamInfo {
		n := newNode(t, cfg)
		defer n.Close()
		transporttest.WaitFor(t, wait, func() error {
			if !n.ready.Load() || len(n.kick) > 0 {
				return errors.New("streams not provisioned yet")
			}
			return nil
		})
		s, err := n.js.Stream(ctx, n.channels)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo()
	}
	before := start(cfg)
	if after := start(cfg); after.Config.MaxAge != time.Hour || !after.Created.Equal(before.Created) {
		t.Fatalf("stream after a node with the same settings: max age %v, created %v (was %v)", after.Config.MaxAge, after.Created, before.Created)
	}
	cfg.MaxAge = 2 * time.Hour
	if got := start(cfg).Config.MaxAge; got != 2*time.Hour {
		t.Fatalf("max age after a node with other settings: %v, want 2h", got)
	}
}

// TestConsumerOvertaken: when retention drops messages a node's channel consumer had not been
// sent yet (the node is not reading), the subscription is closed rather than continued past the
// gap, so its clients resume (and learn what was lost) instead of silently missing messages.
func TestConsumerOvertaken(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.MaxMsgs = 10
	n := newNode(t, cfg)
	topic := protocol.ChannelTopic("lag")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads ch: the consumer is sent at most a pull's worth (64), the rest waits on the
	// stream, which keeps the last 10.
	batch := make([]*message.Message, 200)
	for i := range batch {
		batch[i] = transporttest.NewMessage(strconv.Itoa(i))
	}
	if err := n.Publish(topic, batch...); err != nil {
		t.Fatal(err)
	}
	transporttest.ReceiveUntilClosed(t, ch, len(batch), 10*time.Second)
}

// TestRecreatedStream deletes the channel stream under a running node: the node recreates it,
// positions of the old stream are refused, and a live subscription goes on with the new one.
func TestRecreatedStream(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.CheckInterval = 100 * time.Millisecond
	n := newNode(t, cfg)
	ctx := t.Context()
	topic := protocol.ChannelTopic("c")
	ch, err := n.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "old", 3)
	old := transporttest.Receive(t, ch, 3, wait)
	oldPos := position(t, old[0])

	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, n.channels); err != nil {
		t.Fatal(err)
	}
	var last protocol.Position
	transporttest.WaitFor(t, wait, func() error {
		var err error
		last, err = n.Last(ctx, topic)
		if err == nil && last.Epoch == oldPos.Epoch {
			return errors.New("stream not recreated yet")
		}
		return err
	})
	if _, complete, err := n.Replay(ctx, topic, oldPos, 100); err != nil || complete {
		t.Fatalf("replay from a position of the deleted stream: complete %v, err %v", complete, err)
	}
	// The subscription restarts on the new stream, from its start: publish until it delivers; the
	// first message it delivers is the first the new stream took.
	deadline := time.Now().Add(wait)
	first := ""
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the stream was recreated")
		}
		p := fmt.Sprintf("new%d", i)
		if n.Publish(topic, transporttest.NewMessage(p)) == nil && first == "" {
			first = p
		}
		select {
		case m := <-ch:
			m.Ack()
			if p := position(t, m); p.Epoch == oldPos.Epoch {
				t.Fatalf("message of the new stream with the old epoch: %v", p)
			}
			if string(m.Payload) != first {
				t.Fatalf("first message after the stream was recreated: %q, want %q", m.Payload, first)
			}
			msgs, complete, err := n.Replay(ctx, topic, last, 100)
			if err != nil || !complete || len(msgs) == 0 || string(msgs[0].Payload) != first {
				t.Fatalf("replay of the new stream: %d msgs, complete %v, err %v", len(msgs), complete, err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestHistorySurvivesRestart: positions stay valid across a broker restart (same store).
func TestHistorySurvivesRestart(t *testing.T) {
	br := startBroker(t)
	n := newNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	ctx := t.Context()
	topic := protocol.ChannelTopic("c")
	start, err := n.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "m", 3)
	br.restart(t)
	transporttest.WaitFor(t, wait, func() error { return n.Ping(ctx) })
	msgs, complete, err := n.Replay(ctx, topic, start, 100)
	if err != nil || !complete || len(msgs) != 3 {
		t.Fatalf("replay after restart: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
}

func TestBrokerDownAtStart(t *testing.T) {
	br := brokerAt(t)
	n := newNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	ctx := t.Context()
	if err := n.Ping(ctx); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Ping with the broker down: %v", err)
	}
	topic := protocol.ChannelTopic("c")
	for _, tp := range []string{topic, protocol.TopicDirect} {
		began := time.Now()
		if err := n.Publish(tp, transporttest.NewMessage("x")); !errors.Is(err, transports.ErrUnavailable) {
			t.Fatalf("Publish(%s) with the broker down: %v", tp, err)
		}
		if d := time.Since(began); d > time.Second {
			t.Fatalf("Publish(%s) took %v to fail", tp, d)
		}
	}
	br.start()
	transporttest.WaitFor(t, wait, func() error { return n.Ping(ctx) })
	ch, err := n.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "m", 1)
	transporttest.Receive(t, ch, 1, wait)

	br.stop()
	transporttest.WaitFor(t, wait, func() error {
		if n.Ping(ctx) == nil {
			return errors.New("Ping still succeeds with the broker down")
		}
		return nil
	})
	began := time.Now()
	if err := n.Publish(topic, transporttest.NewMessage("x")); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Publish during an outage: %v", err)
	}
	if d := time.Since(began); d > time.Second {
		t.Fatalf("Publish during an outage took %v to fail", d)
	}
}

func TestNackRedelivers(t *testing.T) {
	br := startBroker(t)
	n := newNode(t, testConfig(br.url(), transporttest.Prefix(t)))
	ctx := t.Context()
	for _, tc := range []struct {
		topic, group string
	}{
		{protocol.ChannelTopic("c"), ""},
		{protocol.TopicDirect, ""},
		{protocol.TopicInbound, "svc"},
	} {
		var ch <-chan *message.Message
		var err error
		if tc.group == "" {
			ch, err = n.Subscribe(ctx, tc.topic)
		} else {
			ch, err = n.SubscribeGroup(ctx, tc.topic, tc.group)
		}
		if err != nil {
			t.Fatal(err)
		}
		publishN(t, n, tc.topic, "n", 2)
		var first *message.Message
		select {
		case first = <-ch:
			first.Nack()
		case <-time.After(wait):
			t.Fatalf("%s: nothing delivered", tc.topic)
		}
		got := transporttest.Receive(t, ch, 2, wait)
		if tc.group != "" && got[0].UUID != first.UUID {
			got[0], got[1] = got[1], got[0] // the broker may hand out n1 before redelivering n0
		}
		if got[0].UUID != first.UUID || string(got[1].Payload) != "n1" {
			t.Fatalf("%s: after a nack got %s %q, want %s then n1", tc.topic, got[0].UUID, got[1].Payload, first.UUID)
		}
	}
}

// TestGroupKeepsMessages: what is published while no member of a group is subscribed is
// delivered when one subscribes again.
func TestGroupKeepsMessages(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	// A message pushed to the member that was leaving comes back after AckWait: keep it short
	// so the test sees it (and then the order is not guaranteed, only the delivery).
	cfg.AckWait = time.Second
	n := newNode(t, cfg)
	sctx, cancel := context.WithCancel(t.Context())
	ch, err := n.SubscribeGroup(sctx, protocol.TopicEvents, "svc")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range ch {
	}
	// The server notices that the deliver subject lost its interest asynchronously; a message
	// pushed before that would be redelivered only after AckWait.
	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	transporttest.WaitFor(t, wait, func() error {
		c, err := js.PushConsumer(t.Context(), n.inbound, "svc__events")
		if err != nil {
			return err
		}
		if info, err := c.Info(t.Context()); err != nil || info.PushBound {
			return fmt.Errorf("consumer still bound (%v)", err)
		}
		return nil
	})
	publishN(t, n, protocol.TopicEvents, "e", 3)
	ch, err = n.SubscribeGroup(t.Context(), protocol.TopicEvents, "svc")
	if err != nil {
		t.Fatal(err)
	}
	got := transporttest.Receive(t, ch, 3, wait)
	seen := map[string]bool{}
	for _, m := range got {
		seen[string(m.Payload)] = true
	}
	for i := 0; i < 3; i++ {
		if !seen[fmt.Sprintf("e%d", i)] {
			t.Fatalf("e%d never arrived; got %v", i, seen)
		}
	}
}

// TestCLIExample sends what docs/brokers/jetstream.md's `nats pub` example sends (no UUID, the
// metadata as headers), through the raw client and through the nats CLI when it is installed.
func TestCLIExample(t *testing.T) {
	br := startBroker(t)
	const prefix = "ws"
	n := newNode(t, testConfig(br.url(), prefix))
	ctx := t.Context()
	news, err := n.Subscribe(ctx, protocol.ChannelTopic("news"))
	if err != nil {
		t.Fatal(err)
	}
	alice, err := n.Subscribe(ctx, protocol.ChannelTopic(protocol.UserChannelFor("alice")))
	if err != nil {
		t.Fatal(err)
	}
	// The subjects and headers of the documented example.
	examples := []struct {
		subject, channel string
		ch               <-chan *message.Message
	}{
		{"ws.ch.news", "news", news},
		{"ws.ch._24user_3aalice", "$user:alice", alice},
	}
	check := func(how string, m *message.Message, channel string) {
		t.Helper()
		if string(m.Payload) != `{"text":"hello"}` || m.Metadata.Get(protocol.MetaChannel) != channel ||
			m.Metadata.Get(protocol.MetaMsgID) != "m-1" || m.UUID == "" {
			t.Fatalf("%s: got uuid %q payload %q metadata %v", how, m.UUID, m.Payload, m.Metadata)
		}
		position(t, m)
	}
	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, ex := range examples {
		msg := &nats.Msg{Subject: ex.subject, Data: []byte(`{"text":"hello"}`),
			Header: nats.Header{"channel": {ex.channel}, "msg_id": {"m-1"}}}
		// `nats pub -J` is a request whose reply is the stream's PubAck.
		if _, err := nc.RequestMsg(msg, wait); err != nil {
			t.Fatal(err)
		}
		check("raw client", transporttest.Receive(t, ex.ch, 1, wait)[0], ex.channel)
	}
	cli, err := exec.LookPath("nats")
	if err != nil {
		if home, _ := os.UserHomeDir(); home != "" {
			cli = filepath.Join(home, "go", "bin", "nats")
		}
		if _, err := os.Stat(cli); err != nil {
			t.Log("nats CLI not installed: checked the same bytes through the Go client only")
			return
		}
	}
	for _, ex := range examples {
		cmd := exec.CommandContext(ctx, cli, "--server", br.url(), "pub", "-J", ex.subject, `{"text":"hello"}`,
			"-H", "channel:"+ex.channel, "-H", "msg_id:m-1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		check("nats CLI", transporttest.Receive(t, ex.ch, 1, wait)[0], ex.channel)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"prefix with a dot", Config{Prefix: "a.b"}, false},
		{"negative age", Config{MaxAge: -time.Second}, false},
		{"window over age", Config{MaxAge: time.Minute, DuplicateWindow: time.Hour}, false},
		{"replicas", Config{Replicas: 7}, false},
		{"presence heartbeat", Config{Presence: transports.PresenceConfig{Heartbeat: time.Millisecond}}, false},
		{"url nats.go cannot parse", Config{URL: "nats://user:secret@bad host:4222"}, false},
	} {
		tc.cfg.setDefaults()
		err := tc.cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: Validate() = %v, which shows the URL's password", tc.name, err)
		}
	}
	c := Config{MaxAge: time.Minute}
	c.setDefaults()
	if c.DuplicateWindow != time.Minute || c.MaxBytes != DefaultMaxBytes || c.Prefix != "ws" || c.Presence.Heartbeat != transports.DefaultPresenceHeartbeat {
		t.Errorf("defaults: %+v", c)
	}
}

// TestCloseStopsEverything: after Close no goroutine of the broker (nor of its connection, nor
// the server's side of it) is left.
func TestCloseStopsEverything(t *testing.T) {
	br := startBroker(t)
	before := ours()
	n, err := New(testConfig(br.url(), transporttest.Prefix(t)), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var chans []<-chan *message.Message
	for _, topic := range []string{protocol.ChannelTopic("c"), protocol.TopicDirect, protocol.TopicInbound} {
		ch, err := n.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		publishN(t, n, topic, "x", 1)
		transporttest.Receive(t, ch, 1, wait)
		chans = append(chans, ch)
	}
	ch, err := n.SubscribeGroup(ctx, protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	chans = append(chans, ch)
	if _, _, err := n.Replay(ctx, protocol.ChannelTopic("c"), protocol.Position{}, 10); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		for range ch {
		}
	}
	transporttest.WaitFor(t, wait, func() error {
		if now := ours(); len(now) > len(before) {
			return fmt.Errorf("%d goroutines, %d before New:\n%s", len(now), len(before), strings.Join(now, "\n\n"))
		}
		return nil
	})
}

// ours lists the stacks of the goroutines that are not the in-process server's.
func ours() []string {
	buf := make([]byte, 4<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if !strings.Contains(g, "nats-server/v2/server") {
			out = append(out, g)
		}
	}
	return out
}

// TestRecreatedStreamGroup: a group's durable consumer goes with its stream; the node creates
// both again and the group's subscription goes on.
func TestRecreatedStreamGroup(t *testing.T) {
	if raceEnabled {
		// nats-server v2.15.2, embedded here, races with itself (fileStore.ConsumerStore against
		// the stream's deletion) when a durable is recreated on a deleted stream; -race reports
		// it in the server's goroutines, not ours. The test runs without -race.
		t.Skip("the embedded nats-server has a data race on this path; run without -race")
	}
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.CheckInterval = 100 * time.Millisecond
	n := newNode(t, cfg)
	ctx := t.Context()
	ch, err := n.SubscribeGroup(ctx, protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, protocol.TopicInbound, "old", 1)
	transporttest.Receive(t, ch, 1, wait)
	nc, err := nats.Connect(br.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, n.inbound); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	first := ""
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the stream was recreated")
		}
		p := fmt.Sprintf("new%d", i)
		if n.Publish(protocol.TopicInbound, transporttest.NewMessage(p)) == nil && first == "" {
			first = p
		}
		select {
		case m := <-ch:
			m.Ack()
			if strings.HasPrefix(string(m.Payload), "old") {
				// Groups are at-least-once: once, under load, the acked message of the deleted
				// stream came once more after the recreation (probably the embedded server's
				// race on this path, above). It is not a new message out of order.
				t.Logf("%q again after the stream was recreated", m.Payload)
				continue
			}
			if string(m.Payload) != first {
				t.Fatalf("first message after the stream was recreated: %q, want %q", m.Payload, first)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestSlowSubscriber: a message held unacked for longer than the consumer's missed-heartbeat
// limit (which may recreate the ordered consumer) does not lose or repeat anything.
func TestSlowSubscriber(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.Heartbeat = 500 * time.Millisecond
	n := newNode(t, cfg)
	topic := protocol.ChannelTopic("slow")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "s", 5)
	var first *message.Message
	select {
	case first = <-ch:
	case <-time.After(wait):
		t.Fatal("nothing delivered")
	}
	hold := time.NewTimer(3 * time.Second) // six heartbeats: a slow subscriber, not a synchronisation
	<-hold.C
	first.Ack()
	publishN(t, n, topic, "t", 2)
	got := transporttest.Receive(t, ch, 6, wait)
	want := []string{"s1", "s2", "s3", "s4", "t0", "t1"}
	for i, m := range got {
		if string(m.Payload) != want[i] {
			t.Fatalf("message %d: %q, want %q", i, m.Payload, want[i])
		}
	}
	publishN(t, n, topic, "sentinel", 1)
	if m := transporttest.Receive(t, ch, 1, wait)[0]; string(m.Payload) != "sentinel0" {
		t.Fatalf("extra message %q", m.Payload)
	}
}

func TestNewWithConn(t *testing.T) {
	br := startBroker(t)
	nc, err := nats.Connect(br.url(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	n, err := NewWithConn(nc, testConfig(br.url(), transporttest.Prefix(t)), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	topic := protocol.ChannelTopic("c")
	ch, err := n.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, n, topic, "m", 1)
	transporttest.Receive(t, ch, 1, wait)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Fatal("Close closed a connection the broker does not own")
	}
}

// TestHeldGroupMessage: a group message a member holds longer than AckWait is reported in
// progress, so no other member gets it; a member that stops without acking loses it to another.
func TestHeldGroupMessage(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.AckWait = time.Second
	transporttest.HeldGroupMessage(t, newNode(t, cfg), newNode(t, cfg), cfg.AckWait, wait)
}

// TestHeldGroupMessageNodeDies: a node that dies while it holds a group message neither naks it
// nor reports it in progress anymore; the message goes to another member after AckWait.
func TestHeldGroupMessageNodeDies(t *testing.T) {
	br := startBroker(t)
	cfg := testConfig(br.url(), transporttest.Prefix(t))
	cfg.AckWait = time.Second
	a, b := newNode(t, cfg), newNode(t, cfg)
	holder, err := a.SubscribeGroup(t.Context(), protocol.TopicEvents, "dies")
	if err != nil {
		t.Fatal(err)
	}
	lost := transporttest.NewMessage("lost")
	if err := a.Publish(protocol.TopicEvents, lost); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-holder:
		if m.UUID != lost.UUID {
			t.Fatalf("holder got %s %q", m.UUID, m.Payload)
		}
	case <-time.After(wait):
		t.Fatal("the holder got nothing")
	}
	other, err := b.SubscribeGroup(t.Context(), protocol.TopicEvents, "dies")
	if err != nil {
		t.Fatal(err)
	}
	a.nc.Close() // the node is gone: no nak, no more in-progress reports
	got := transporttest.Receive(t, other, 1, cfg.AckWait+wait)[0]
	if got.UUID != lost.UUID {
		t.Fatalf("the other member got %s %q, want the dead node's message", got.UUID, got.Payload)
	}
}

// TestHookCalls runs the hook calls suite on an embedded server.
func TestHookCalls(t *testing.T) {
	br := startBroker(t)
	transporttest.RunHookCalls(t, transporttest.HookFeatures{RestartBroker: br.restart}, suiteNodes(br.url()))
}
