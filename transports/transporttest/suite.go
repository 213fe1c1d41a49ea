// Package transporttest is the conformance suite every transports.Broker passes, in the manner of
// Watermill's pubsub/tests: each broker's test file calls Run with a constructor and the features
// its broker has.
package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Features says what the broker under test can do.
type Features struct {
	// History: the broker implements transports.History.
	History bool
	// RestartBroker stops and starts the broker the nodes talk to; nil skips the restart test.
	RestartBroker func(t *testing.T)
	// EndsOnDisconnect: a broker without history ends its fan-out subscriptions when its link
	// to the broker breaks (what was published meanwhile is lost, and the node must tell its
	// clients); after a broker restart, subscribing again must work.
	EndsOnDisconnect bool
	// LargePayload is the largest payload the broker is expected to carry (default 256 KiB).
	LargePayload int
	// Timeout bounds each wait for a delivery (default 10 s).
	Timeout time.Duration
}

// NewNode returns the started Broker of a new node (New, then Start). Nodes made with the same
// prefix share one broker namespace (one cluster); the suite gives each test its own prefix and
// closes every node.
type NewNode func(t *testing.T, prefix string) transports.Broker

// Run runs the whole suite.
func Run(t *testing.T, f Features, newNode NewNode) {
	if f.LargePayload == 0 {
		f.LargePayload = 256 << 10
	}
	if f.Timeout == 0 {
		f.Timeout = 10 * time.Second
	}
	// Every node answers Ping before a test uses it, as a gateway node waits for its broker
	// before it serves: a broker may answer unavailable while it sets up (JetStream provisions
	// its streams, and retries in the background when the first attempt fails).
	ready := func(t *testing.T, prefix string) transports.Broker {
		t.Helper()
		b := newNode(t, prefix)
		t.Cleanup(func() { _ = b.Close() }) // Close is idempotent: tests may close first
		WaitFor(t, f.Timeout, func() error { return b.Ping(t.Context()) })
		return b
	}
	s := &suite{f: f, newNode: ready}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"PublishSubscribe", s.testPublishSubscribe},
		{"FanOutToNodes", s.testFanOut},
		{"CompetingGroup", s.testCompetingGroup},
		{"Unsubscribe", s.testUnsubscribe},
		{"ChannelOrder", s.testChannelOrder},
		{"Payloads", s.testPayloads},
		{"Names", s.testNames},
		{"PrefixIsolation", s.testPrefixIsolation},
		{"History", s.testHistory},
		{"PublishPositions", s.testPublishPositions},
		{"Before", s.testBefore},
		{"BrokerRestart", s.testRestart},
		{"StartAgain", s.testStartAgain},
		{"Close", s.testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	f       Features
	newNode NewNode
}

// Prefix returns a topic prefix unique to this test run.
func Prefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

func (s *suite) nodes(t *testing.T, prefix string, n int) []transports.Broker {
	out := make([]transports.Broker, n)
	for i := range out {
		b := s.newNode(t, prefix)
		t.Cleanup(func() { _ = b.Close() })
		out[i] = b
	}
	return out
}

func subscribe(t *testing.T, b transports.Broker, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return ch
}

// NewMessage makes a message with a new UUID, payload and metadata pairs.
func NewMessage(payload string, kv ...string) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(payload))
	for i := 0; i+1 < len(kv); i += 2 {
		m.Metadata.Set(kv[i], kv[i+1])
	}
	return m
}

func publish(t *testing.T, b transports.Broker, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := b.Publish(topic, msgs...); err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
}

// Receive takes n messages from ch, acking each, or fails the test after timeout.
func Receive(t testing.TB, ch <-chan *message.Message, n int, timeout time.Duration) []*message.Message {
	t.Helper()
	out := make([]*message.Message, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed after %d of %d messages", len(out), n)
			}
			m.Ack()
			out = append(out, m)
		case <-deadline:
			t.Fatalf("received %d of %d messages within %v", len(out), n, timeout)
		}
	}
	return out
}

// ReceiveUntilClosed reads ch, acking each message, until the broker closes it, and checks
// that no message is missing before that point: the i-th payload, up to its first space, is i.
// It is for subscriptions that must end rather than go on past a gap. It fails when ch closes
// only after all total messages, or neither delivers nor closes within timeout. It returns how
// many messages came.
func ReceiveUntilClosed(t testing.TB, ch <-chan *message.Message, total int, timeout time.Duration) int {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; ; i++ {
		select {
		case m, ok := <-ch:
			if !ok {
				if i >= total {
					t.Fatalf("closed after all %d messages", i)
				}
				return i
			}
			if got, _, _ := strings.Cut(string(m.Payload), " "); got != strconv.Itoa(i) {
				t.Fatalf("message %d is %q: a gap was delivered", i, got)
			}
			m.Ack()
		case <-deadline:
			t.Fatalf("after %d of %d messages the subscription neither closed nor went on within %v", i, total, timeout)
		}
	}
}

// expectNothingBefore publishes a sentinel on topic through b and checks that the next message on
// ch is that sentinel: nothing unexpected was queued before it.
func (s *suite) expectNothingBefore(t *testing.T, b transports.Broker, topic string, chans ...<-chan *message.Message) {
	t.Helper()
	sentinel := NewMessage("sentinel")
	publish(t, b, topic, sentinel)
	for _, ch := range chans {
		got := Receive(t, ch, 1, s.f.Timeout)[0]
		if got.UUID != sentinel.UUID {
			t.Fatalf("unexpected extra message %s %q before the sentinel", got.UUID, got.Payload)
		}
	}
}

func payloads(msgs []*message.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Payload)
	}
	return out
}

func checkSeq(t *testing.T, what string, msgs []*message.Message, want []string) {
	t.Helper()
	got := payloads(msgs)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func (s *suite) testPublishSubscribe(t *testing.T) {
	n := s.nodes(t, Prefix(t), 2)
	topic := protocol.ChannelTopic("news")
	ch := subscribe(t, n[0], topic)
	var sent []*message.Message
	for _, p := range seq("m", 50) {
		m := NewMessage(p, protocol.MetaUser, "alice", protocol.MetaMsgID, "id-"+p)
		sent = append(sent, m)
	}
	publish(t, n[1], topic, sent[:10]...)
	for _, m := range sent[10:] {
		publish(t, n[1], topic, m)
	}
	got := Receive(t, ch, len(sent), s.f.Timeout)
	checkSeq(t, "order", got, seq("m", 50))
	var prev protocol.Position
	for i, m := range got {
		if m.UUID != sent[i].UUID {
			t.Fatalf("message %d: uuid %q, want %q", i, m.UUID, sent[i].UUID)
		}
		if m.Metadata.Get(protocol.MetaUser) != "alice" || m.Metadata.Get(protocol.MetaMsgID) != "id-"+string(m.Payload) {
			t.Fatalf("message %d: metadata lost: %v", i, m.Metadata)
		}
		if !s.f.History {
			continue
		}
		pos, err := protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
		if err != nil {
			t.Fatalf("message %d: position %q: %v", i, m.Metadata.Get(protocol.MetaPosition), err)
		}
		if i > 0 && (pos.Epoch != prev.Epoch || !prev.Less(pos)) {
			t.Fatalf("message %d: position %v does not follow %v", i, pos, prev)
		}
		prev = pos
	}
	// Sent messages are not modified by Publish.
	if sent[0].Metadata.Get(protocol.MetaPosition) != "" {
		t.Fatal("Publish modified the caller's message")
	}
}

func (s *suite) testFanOut(t *testing.T) {
	n := s.nodes(t, Prefix(t), 3)
	topic := protocol.TopicDirect
	chans := make([]<-chan *message.Message, len(n))
	for i := range n {
		chans[i] = subscribe(t, n[i], topic)
	}
	for _, p := range seq("f", 20) {
		publish(t, n[0], topic, NewMessage(p))
	}
	for i, ch := range chans {
		checkSeq(t, fmt.Sprintf("node %d", i), Receive(t, ch, 20, s.f.Timeout), seq("f", 20))
	}
	s.expectNothingBefore(t, n[1], topic, chans...)
	// Two subscriptions of one node each get everything too.
	extra := subscribe(t, n[0], topic)
	publish(t, n[2], topic, NewMessage("x"))
	checkSeq(t, "second subscription", Receive(t, extra, 1, s.f.Timeout), []string{"x"})
	checkSeq(t, "first subscription", Receive(t, chans[0], 1, s.f.Timeout), []string{"x"})
}

func (s *suite) testCompetingGroup(t *testing.T) {
	n := s.nodes(t, Prefix(t), 4)
	topic := protocol.TopicInbound
	var (
		mu    sync.Mutex
		seen  = map[string]int{}
		other = map[string]int{}
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	consume := func(ch <-chan *message.Message, into map[string]int) {
		defer wg.Done()
		for m := range ch {
			mu.Lock()
			into[string(m.Payload)]++
			mu.Unlock()
			m.Ack()
		}
	}
	for i := 0; i < 3; i++ {
		ch, err := n[i].SubscribeGroup(ctx, topic, "svc")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go consume(ch, seen)
	}
	ch, err := n[3].SubscribeGroup(ctx, topic, "audit")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go consume(ch, other)

	const total = 30
	for _, p := range seq("g", total) {
		publish(t, n[3], topic, NewMessage(p))
	}
	WaitFor(t, s.f.Timeout, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) < total || len(other) < total {
			return fmt.Errorf("group svc has %d, group audit %d of %d", len(seen), len(other), total)
		}
		return nil
	})
	cancel()
	wg.Wait()
	for p, c := range seen {
		if c != 1 {
			t.Errorf("group svc got %s %d times", p, c)
		}
	}
}

func (s *suite) testUnsubscribe(t *testing.T) {
	n := s.nodes(t, Prefix(t), 2)
	topic := protocol.ChannelTopic("room:1")
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := n[0].Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, n[1], topic, NewMessage("before"))
	checkSeq(t, "before", Receive(t, ch, 1, s.f.Timeout), []string{"before"})
	cancel()
	WaitFor(t, s.f.Timeout, func() error {
		select {
		case m, ok := <-ch:
			if ok {
				m.Ack()
				return fmt.Errorf("message %q after unsubscribe", m.Payload)
			}
			return nil
		default:
			return fmt.Errorf("subscription not closed")
		}
	})
	publish(t, n[1], topic, NewMessage("between"))
	again := subscribe(t, n[0], topic)
	publish(t, n[1], topic, NewMessage("after"))
	checkSeq(t, "resubscribed", Receive(t, again, 1, s.f.Timeout), []string{"after"})
}

func (s *suite) testChannelOrder(t *testing.T) {
	n := s.nodes(t, Prefix(t), 3)
	const channels, per = 8, 100
	subs := make([]<-chan *message.Message, channels)
	for c := range subs {
		subs[c] = subscribe(t, n[0], protocol.ChannelTopic(fmt.Sprintf("order.%d", c)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, channels)
	for c := 0; c < channels; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			pub := n[1+c%2]
			for i := 0; i < per; i++ {
				if err := pub.Publish(protocol.ChannelTopic(fmt.Sprintf("order.%d", c)), NewMessage(fmt.Sprintf("c%d-%d", c, i))); err != nil {
					errs <- err
					return
				}
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for c := range subs {
		checkSeq(t, fmt.Sprintf("channel %d", c), Receive(t, subs[c], per, s.f.Timeout), seq(fmt.Sprintf("c%d-", c), per))
	}
}

func (s *suite) testPayloads(t *testing.T) {
	n := s.nodes(t, Prefix(t), 2)
	topic := protocol.ChannelTopic("bin")
	ch := subscribe(t, n[0], topic)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	large := bytes.Repeat([]byte("0123456789abcdef"), s.f.LargePayload/16)
	want := [][]byte{all, {}, large, []byte(`{"json":true}`)}
	for _, p := range want {
		publish(t, n[1], topic, message.NewMessage(watermill.NewUUID(), p))
	}
	got := Receive(t, ch, len(want), s.f.Timeout)
	for i := range want {
		if !bytes.Equal(got[i].Payload, want[i]) {
			t.Fatalf("payload %d: got %d bytes, want %d", i, len(got[i].Payload), len(want[i]))
		}
	}
}

func (s *suite) testNames(t *testing.T) {
	n := s.nodes(t, Prefix(t), 2)
	names := []string{
		"AZaz09_:.-",
		strings.Repeat("a.b:c-d_e", 15)[:128],
		"a.b", "a_b", "a:b", "a-b", "a", "A",
		protocol.UserChannelFor("alice"),
		protocol.UserChannelFor("user with spaces/and*wild>cards.и.中"),
		protocol.UserChannelFor(""),
	}
	subs := make([]<-chan *message.Message, len(names))
	for i, name := range names {
		subs[i] = subscribe(t, n[0], protocol.ChannelTopic(name))
	}
	for _, name := range names {
		publish(t, n[1], protocol.ChannelTopic(name), NewMessage(name))
	}
	for i, name := range names {
		checkSeq(t, name, Receive(t, subs[i], 1, s.f.Timeout), []string{name})
	}
	for i, name := range names {
		s.expectNothingBefore(t, n[1], protocol.ChannelTopic(name), subs[i])
	}
}

func (s *suite) testPrefixIsolation(t *testing.T) {
	a := s.nodes(t, Prefix(t), 1)[0]
	b := s.nodes(t, Prefix(t), 1)[0]
	topic := protocol.ChannelTopic("shared")
	chA := subscribe(t, a, topic)
	chB := subscribe(t, b, topic)
	publish(t, a, topic, NewMessage("for-a"))
	publish(t, b, topic, NewMessage("for-b"))
	checkSeq(t, "prefix a", Receive(t, chA, 1, s.f.Timeout), []string{"for-a"})
	checkSeq(t, "prefix b", Receive(t, chB, 1, s.f.Timeout), []string{"for-b"})
	s.expectNothingBefore(t, a, topic, chA)
	s.expectNothingBefore(t, b, topic, chB)
}

func (s *suite) testHistory(t *testing.T) {
	if !s.f.History {
		t.Skip("broker keeps no history")
	}
	n := s.nodes(t, Prefix(t), 2)
	h0, ok0 := n[0].(transports.History)
	h1, ok1 := n[1].(transports.History)
	if !ok0 || !ok1 {
		t.Fatal("Features.History is set but the broker does not implement transports.History")
	}
	ctx := context.Background()
	topic := protocol.ChannelTopic("hist")

	empty, err := h0.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs, complete, err := h1.Replay(ctx, topic, empty, 100)
	if err != nil || !complete || len(msgs) != 0 {
		t.Fatalf("replay of an empty channel: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}

	ch := subscribe(t, n[0], topic)
	for _, p := range seq("h", 10) {
		publish(t, n[1], topic, NewMessage(p))
	}
	live := Receive(t, ch, 10, s.f.Timeout)
	pos := make([]protocol.Position, len(live))
	for i, m := range live {
		if pos[i], err = protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition)); err != nil {
			t.Fatalf("live message %d: %v", i, err)
		}
	}
	last, err := h1.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if last != pos[9] {
		t.Fatalf("Last = %v, want the position of the last message %v", last, pos[9])
	}

	msgs, complete, err = h1.Replay(ctx, topic, empty, 100)
	if err != nil || !complete {
		t.Fatalf("replay from before the first message: complete %v, err %v", complete, err)
	}
	checkSeq(t, "replay from the start", msgs, seq("h", 10))

	msgs, complete, err = h1.Replay(ctx, topic, pos[2], 100)
	if err != nil || !complete {
		t.Fatalf("replay after the third: complete %v, err %v", complete, err)
	}
	checkSeq(t, "replay after the third", msgs, seq("h", 10)[3:])
	for i, m := range msgs {
		// The broker's storage time, for history bounds by age (a minute of clock skew allowed).
		ms, err := strconv.ParseInt(m.Metadata.Get(protocol.MetaStoredAt), 10, 64)
		if at := time.UnixMilli(ms); err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
			t.Fatalf("replayed message %d: %s %q is not the time it was stored", i, protocol.MetaStoredAt, m.Metadata.Get(protocol.MetaStoredAt))
		}
		if m.Metadata.Get(protocol.MetaPosition) != pos[3+i].String() || m.UUID != live[3+i].UUID {
			t.Fatalf("replayed message %d: position %q uuid %s, live had %q %s", i,
				m.Metadata.Get(protocol.MetaPosition), m.UUID, pos[3+i], live[3+i].UUID)
		}
	}

	msgs, complete, err = h0.Replay(ctx, topic, pos[2], 3)
	if err != nil || complete {
		t.Fatalf("replay over the limit: complete %v, err %v", complete, err)
	}
	checkSeq(t, "replay over the limit", msgs, seq("h", 10)[3:6])

	msgs, complete, err = h0.Replay(ctx, topic, last, 100)
	if err != nil || !complete || len(msgs) != 0 {
		t.Fatalf("replay from the last: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}

	foreign := protocol.Position{Epoch: "elsewhere", Lo: 1}
	if _, complete, err = h0.Replay(ctx, topic, foreign, 100); err != nil || complete {
		t.Fatalf("replay from another epoch: complete %v, err %v", complete, err)
	}
	other := protocol.ChannelTopic("hist-other")
	if msgs, _, err = h0.Replay(ctx, other, pos[2], 100); err != nil || len(msgs) != 0 {
		t.Fatalf("replay of another channel returned %d messages, err %v", len(msgs), err)
	}
}

func (s *suite) testRestart(t *testing.T) {
	if s.f.RestartBroker == nil {
		t.Skip("the test cannot restart this broker")
	}
	n := s.nodes(t, Prefix(t), 2)
	topic := protocol.ChannelTopic("restart")
	ch := subscribe(t, n[0], topic)
	publish(t, n[1], topic, NewMessage("before"))
	checkSeq(t, "before", Receive(t, ch, 1, s.f.Timeout), []string{"before"})
	s.f.RestartBroker(t)
	// Publish until the broker takes messages again and the subscription delivers one.
	deadline := time.Now().Add(6 * s.f.Timeout)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the broker restarted")
		}
		_ = n[1].Publish(topic, NewMessage(fmt.Sprintf("after-%d", i)))
		select {
		case m, ok := <-ch:
			if !ok {
				if !s.f.EndsOnDisconnect {
					t.Fatal("subscription closed by the broker restart")
				}
				ch = subscribe(t, n[0], topic)
				continue
			}
			m.Ack()
			if strings.HasPrefix(string(m.Payload), "after-") {
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// testStartAgain: Start on a started broker does nothing, and the broker goes on working.
func (s *suite) testStartAgain(t *testing.T) {
	b := s.newNode(t, Prefix(t))
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	topic := protocol.ChannelTopic("again")
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(topic, NewMessage("a")); err != nil {
		t.Fatal(err)
	}
	if m := Receive(t, ch, 1, s.f.Timeout)[0]; string(m.Payload) != "a" {
		t.Fatalf("got %q, want a", m.Payload)
	}
}

func (s *suite) testClose(t *testing.T) {
	b := s.newNode(t, Prefix(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Subscribe(ctx, protocol.ChannelTopic("close"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish(protocol.ChannelTopic("close"), NewMessage("x")); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	if err := b.Start(context.Background()); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Start after Close: %v, want ErrClosed", err)
	}
	WaitFor(t, s.f.Timeout, func() error {
		select {
		case _, ok := <-ch:
			if !ok {
				return nil
			}
		default:
		}
		return fmt.Errorf("subscription still open after Close")
	})
}

// WaitFor polls fn until it returns nil, failing the test with fn's last error after total.
func WaitFor(t testing.TB, total time.Duration, fn func() error) {
	t.Helper()
	poll.Until(t, total, fn)
}
