package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

const machineAddr = "127.0.0.1:6379"

// machineRedis returns the address of the machine's Redis, or skips the test.
func machineRedis(t *testing.T) string {
	t.Helper()
	if !reachable(machineAddr) {
		t.Skipf("no Redis on %s: start one (apt-get install redis-server) to run this test", machineAddr)
	}
	return machineAddr
}

// anyRedis returns the machine's Redis if it runs, else a redis-server started for the test.
func anyRedis(t *testing.T) string {
	t.Helper()
	if reachable(machineAddr) {
		return machineAddr
	}
	return startServer(t).addr
}

func reachable(addr string) bool {
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

// dropKeys deletes every key of prefix on addr when the test ends, after the nodes it starts
// from now on closed: the streams ("<prefix>:…") and the presence and control keys
// ("{<prefix>:…").
func dropKeys(t testing.TB, addr, prefix string) {
	t.Cleanup(func() { nodetest.DeleteRedisKeys(addr, prefix) })
}

// newNode returns a started node of cfg, closed when the test ends, and then the keys of its
// prefix on a single server deleted.
func newNode(t *testing.T, cfg redis.Config) *redis.Broker {
	t.Helper()
	b, err := redis.New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "" && cfg.Mode != redis.ModeCluster {
		dropKeys(t, cfg.Addr, cfg.Prefix)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeMaker returns a transporttest.NewNode on addr that removes each prefix's keys afterwards.
func nodeMaker(addr string) transporttest.NewNode {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(t *testing.T, prefix string) transports.Broker {
		mu.Lock()
		if !seen[prefix] {
			seen[prefix] = true
			dropKeys(t, addr, prefix)
		}
		mu.Unlock()
		b, err := redis.New(redis.Config{Addr: addr, Prefix: prefix, BlockTimeout: time.Second}, nil)
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
	addr := machineRedis(t)
	transporttest.Run(t, transporttest.Features{History: true}, nodeMaker(addr))
}

// TestConformanceOwnServer runs the suite against a redis-server of its own, which it can restart
// (without persistence: the restarted server is empty).
func TestConformanceOwnServer(t *testing.T) {
	srv := startServer(t)
	transporttest.Run(t, transporttest.Features{History: true, RestartBroker: srv.restart}, nodeMaker(srv.addr))
}

// server is a redis-server started by a test on a free port.
type server struct {
	bin, dir, addr string
	port           int
	args           []string // more arguments of redis-server (sentinel_test.go)
	cmd            *exec.Cmd
}

func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: cannot start a Redis this test can restart")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &server{bin: bin, dir: t.TempDir(), port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), args: args}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *server) start(t *testing.T) {
	t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if !reachable(s.addr) {
			return fmt.Errorf("redis-server on %s does not answer", s.addr)
		}
		return nil
	})
}

func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	s.cmd = nil
}

func (s *server) restart(t *testing.T) {
	s.stop()
	s.start(t)
}

func channelKey(prefix, channel string) string {
	return redis.ShardKey(prefix, redis.Shard(channel, redis.DefaultShards))
}

func subscribe(t *testing.T, b transports.Broker, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := b.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// The shard table of docs/brokers/redis.md.
func TestShard(t *testing.T) {
	for _, tc := range []struct {
		channel string
		shards  int
		want    int
	}{
		{"news", 16, 6},
		{"$user:alice", 16, 6},
		{"room:1", 16, 3},
		{"$user:bob", 16, 9},
		{"anything", 1, 0},
	} {
		if got := redis.Shard(tc.channel, tc.shards); got != tc.want {
			t.Errorf("Shard(%q, %d) = %d, want %d", tc.channel, tc.shards, got, tc.want)
		}
	}
	if k := redis.ShardKey("ws", 6); k != "ws:ch:6" {
		t.Errorf("ShardKey = %q", k)
	}
	for prefix, want := range map[string]string{"ws": "ws-ch6", "a-B": "a-B-ch6", "a:b": "x613a62-ch6", "": "x-ch6"} {
		e := redis.ShardEpoch(prefix, 6)
		if e != want || transports.SafeName(e) != e {
			t.Errorf("ShardEpoch(%q) = %q, want %q", prefix, e, want)
		}
	}
}

// TestCLIEntry writes the entries of the documented redis-cli example through the raw client (and
// through redis-cli itself when installed) and checks the broker delivers them.
func TestCLIEntry(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix})
	news := subscribe(t, b, protocol.ChannelTopic("news"))
	alice := subscribe(t, b, protocol.ChannelTopic(protocol.UserChannelFor("alice")))

	direct := subscribe(t, b, protocol.TopicDirect)

	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	ctx := context.Background()
	// An entry on a shard its channel does not hash to is dropped.
	if err := raw.Do(ctx, "XADD", redis.ShardKey(prefix, 0), "*", "channel", "news", "payload", "misplaced").Err(); err != nil {
		t.Fatal(err)
	}
	// redis-cli XADD ws:ch:6 MAXLEN '~' 100000 '*' channel news payload '{"text":"hello"}' m:msg_id news-1
	if err := raw.Do(ctx, "XADD", channelKey(prefix, "news"), "MAXLEN", "~", "100000", "*",
		"channel", "news", "payload", `{"text":"hello"}`, "m:msg_id", "news-1").Err(); err != nil {
		t.Fatal(err)
	}
	// redis-cli XADD ws:ch:6 MAXLEN '~' 100000 '*' channel '$user:alice' payload '{"text":"hi alice"}'
	if err := raw.Do(ctx, "XADD", channelKey(prefix, "$user:alice"), "MAXLEN", "~", "100000", "*",
		"channel", "$user:alice", "payload", `{"text":"hi alice"}`).Err(); err != nil {
		t.Fatal(err)
	}
	check := func(ch <-chan *message.Message, payload, msgID string) {
		t.Helper()
		m := transporttest.Receive(t, ch, 1, 10*time.Second)[0]
		if string(m.Payload) != payload || m.Metadata.Get(protocol.MetaMsgID) != msgID {
			t.Fatalf("got %q %v, want %q msg_id %q", m.Payload, m.Metadata, payload, msgID)
		}
		pos, err := protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
		if err != nil {
			t.Fatalf("position %q: %v", m.Metadata.Get(protocol.MetaPosition), err)
		}
		if m.UUID != pos.String() {
			t.Fatalf("uuid %q, want the position %q for an entry without uuid", m.UUID, pos)
		}
	}
	check(news, `{"text":"hello"}`, "news-1")
	check(alice, `{"text":"hi alice"}`, "")
	// redis-cli XADD ws:direct MAXLEN '~' 100000 '*' payload '{"text":"to everyone"}' m:target all
	if err := raw.Do(ctx, "XADD", prefix+":direct", "MAXLEN", "~", "100000", "*",
		"payload", `{"text":"to everyone"}`, "m:target", "all").Err(); err != nil {
		t.Fatal(err)
	}
	if m := transporttest.Receive(t, direct, 1, 10*time.Second)[0]; string(m.Payload) != `{"text":"to everyone"}` ||
		m.Metadata.Get(protocol.MetaTarget) != "all" || m.Metadata.Get(protocol.MetaPosition) != "" || m.UUID == "" {
		t.Fatalf("direct: uuid %q payload %q metadata %v", m.UUID, m.Payload, m.Metadata)
	}

	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Log("redis-cli is not installed: the example was checked through the Go client only")
		return
	}
	host, port, _ := net.SplitHostPort(addr)
	for _, args := range [][]string{
		{"XADD", channelKey(prefix, "news"), "MAXLEN", "~", "100000", "*", "channel", "news", "payload", `{"text":"hello"}`, "m:msg_id", "news-1"},
		{"XADD", channelKey(prefix, "$user:alice"), "MAXLEN", "~", "100000", "*", "channel", "$user:alice", "payload", `{"text":"hi alice"}`},
	} {
		out, err := exec.Command(cli, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli: %v: %s", err, out)
		}
	}
	check(news, `{"text":"hello"}`, "news-1")
	check(alice, `{"text":"hi alice"}`, "")
}

// TestTrimmedReplay: once MAXLEN trimming removed entries after a position, a replay from it is
// not complete; from a position still kept it is.
func TestTrimmedReplay(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix, Shards: 1, MaxLen: 10})
	ctx := context.Background()
	topic := protocol.ChannelTopic("trim")
	start, err := b.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*message.Message, 50)
	for round := 0; round < 8; round++ {
		for i := range batch {
			batch[i] = transporttest.NewMessage(fmt.Sprintf("m%d", round*len(batch)+i))
		}
		if err := b.Publish(topic, batch...); err != nil {
			t.Fatal(err)
		}
	}
	if msgs, complete, err := b.Replay(ctx, topic, start, 1000); err != nil || complete {
		t.Fatalf("replay from before the trimmed entries: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	last, err := b.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	msgs, complete, err := b.Replay(ctx, topic, last, 1000)
	if err != nil || !complete || len(msgs) != 0 {
		t.Fatalf("replay from the last: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	if err := b.Publish(topic, transporttest.NewMessage("next")); err != nil {
		t.Fatal(err)
	}
	msgs, complete, err = b.Replay(ctx, topic, last, 1000)
	if err != nil || !complete || len(msgs) != 1 || string(msgs[0].Payload) != "next" {
		t.Fatalf("replay of one kept message: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
}

// TestLineageLost: a stream deleted and written again (what a restart without persistence does)
// makes positions of the old stream give complete=false, even when no entry was trimmed.
func TestLineageLost(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix, Shards: 1})
	ctx := context.Background()
	topic := protocol.ChannelTopic("lineage")
	empty, err := b.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(topic, transporttest.NewMessage("a")); err != nil {
		t.Fatal(err)
	}
	mid, err := b.Last(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	defer raw.Close()
	if err := raw.Del(ctx, redis.ShardKey(prefix, 0)).Err(); err != nil {
		t.Fatal(err)
	}
	for _, since := range []protocol.Position{empty, mid} {
		if msgs, complete, err := b.Replay(ctx, topic, since, 100); err != nil || complete || len(msgs) != 0 {
			t.Fatalf("replay from %v of a deleted stream: %d msgs, complete %v, err %v", since, len(msgs), complete, err)
		}
	}
	// Entry ids are server milliseconds: a stream recreated within the millisecond of mid would
	// reuse mid's id and look like the same lineage (the one case ids cannot tell). Recreate it
	// once the server's clock has passed that millisecond, as any real loss and recreation does.
	deadline := time.Now().Add(5 * time.Second)
	for {
		now, err := raw.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(now.UnixMilli()) > mid.Hi {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Redis clock stays at %v, not after %d ms", now, mid.Hi)
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Publish(topic, transporttest.NewMessage("b")); err != nil {
		t.Fatal(err)
	}
	for _, since := range []protocol.Position{empty, mid} {
		if _, complete, err := b.Replay(ctx, topic, since, 100); err != nil || complete {
			t.Fatalf("replay from %v of a recreated stream: complete %v, err %v", since, complete, err)
		}
	}
	// A 0-0 position (never handed out by Last) replays a never-trimmed stream from its start
	// as complete: the one case a lost lineage cannot be told.
}

func TestNackRedelivers(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix})
	topic := protocol.ChannelTopic("nack")
	ch := subscribe(t, b, topic)
	if err := b.Publish(topic, transporttest.NewMessage("one"), transporttest.NewMessage("two")); err != nil {
		t.Fatal(err)
	}
	var first *message.Message
	select {
	case first = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered")
	}
	first.Nack()
	got := transporttest.Receive(t, ch, 2, 10*time.Second)
	if got[0].UUID != first.UUID || got[0].Metadata.Get(protocol.MetaPosition) != first.Metadata.Get(protocol.MetaPosition) ||
		string(got[1].Payload) != "two" {
		t.Fatalf("after a nack got %q then %q", got[0].Payload, got[1].Payload)
	}
}

// TestSlowConsumer: a subscription whose consumer does not keep up is closed; the node's other
// subscriptions go on.
func TestSlowConsumer(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix, SubscriptionBuffer: 2})
	slow := subscribe(t, b, protocol.ChannelTopic("slow"))
	fast := subscribe(t, b, protocol.ChannelTopic("fast"))
	for i := 0; i < 10; i++ {
		if err := b.Publish(protocol.ChannelTopic("slow"), transporttest.NewMessage("s")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(protocol.ChannelTopic("fast"), transporttest.NewMessage("f")); err != nil {
		t.Fatal(err)
	}
	transporttest.Receive(t, fast, 1, 10*time.Second)
	deadline := time.After(10 * time.Second)
	for n := 0; ; n++ {
		select {
		case m, ok := <-slow:
			if !ok {
				if n >= 10 {
					t.Fatalf("subscription closed after all %d messages: it was not slow", n)
				}
				return
			}
			m.Ack()
		case <-deadline:
			t.Fatal("the overflowing subscription was not closed")
		}
	}
}

func TestSubscribeGroupOnChannel(t *testing.T) {
	b := newNode(t, redis.Config{Addr: "127.0.0.1:1"})
	if _, err := b.SubscribeGroup(context.Background(), protocol.ChannelTopic("x"), "g"); err == nil {
		t.Fatal("SubscribeGroup on a channel topic succeeded")
	}
}

// TestBrokerDown: with nothing listening, New succeeds and every call fails soon with
// ErrUnavailable.
func TestBrokerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	b := newNode(t, redis.Config{Addr: addr, Timeout: 2 * time.Second})
	ctx := context.Background()
	began := time.Now()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, transports.ErrUnavailable) {
			t.Fatalf("%s: %v, want ErrUnavailable", what, err)
		}
	}
	check("Ping", b.Ping(ctx))
	check("Publish", b.Publish(protocol.ChannelTopic("x"), transporttest.NewMessage("x")))
	_, err = b.Subscribe(ctx, protocol.ChannelTopic("x"))
	check("Subscribe", err)
	_, err = b.SubscribeGroup(ctx, protocol.TopicInbound, "g")
	check("SubscribeGroup", err)
	_, err = b.Last(ctx, protocol.ChannelTopic("x"))
	check("Last", err)
	_, _, err = b.Replay(ctx, protocol.ChannelTopic("x"), protocol.Position{Epoch: redis.ShardEpoch("ws", redis.Shard("x", redis.DefaultShards)), Lo: 1}, 10)
	check("Replay", err)
	if d := time.Since(began); d > 15*time.Second {
		t.Fatalf("failing took %v", d)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(protocol.ChannelTopic("x"), transporttest.NewMessage("x")); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  redis.Config
		want string
	}{
		{redis.Config{Addr: "nohost"}, "redis.addr"},
		{redis.Config{Shards: 2000}, "redis.shards"},
		{redis.Config{Shards: -1}, "redis.shards"},
		{redis.Config{MaxLen: -5}, "redis.max_len"},
		{redis.Config{RetryWindow: -time.Second}, "redis retry window"},
		{redis.Config{Presence: transports.PresenceConfig{Heartbeat: -time.Second}}, "presence.heartbeat"},
	} {
		_, err := redis.New(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// TestGroupAfterRestart: a consumer group lost with a restart without persistence is created
// again and its subscription goes on.
func TestGroupAfterRestart(t *testing.T) {
	srv := startServer(t)
	prefix := transporttest.Prefix(t)
	b := newNode(t, redis.Config{Addr: srv.addr, Prefix: prefix, BlockTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.SubscribeGroup(ctx, protocol.TopicInbound, "svc")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(protocol.TopicInbound, transporttest.NewMessage("before")); err != nil {
		t.Fatal(err)
	}
	transporttest.Receive(t, ch, 1, 10*time.Second)
	srv.restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no delivery to the group after the restart")
		}
		_ = b.Publish(protocol.TopicInbound, transporttest.NewMessage(fmt.Sprintf("after-%d", i)))
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("group subscription closed by the restart")
			}
			m.Ack()
			if strings.HasPrefix(string(m.Payload), "after-") {
				return
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// testLogger shows the broker's warnings with -v.
func testLogger() *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestReaderOvertaken: when trimming deletes entries the node's reader has not read yet, the
// subscriptions of that stream are closed rather than continued past the gap.
func TestReaderOvertaken(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix, Shards: 1, MaxLen: 10, ReadCount: 5})
	topic := protocol.ChannelTopic("lag")
	ch := subscribe(t, b, topic)
	batch := make([]*message.Message, 200)
	for round := 0; round < 5; round++ {
		for i := range batch {
			batch[i] = transporttest.NewMessage(strconv.Itoa(round*len(batch) + i))
		}
		if err := b.Publish(topic, batch...); err != nil {
			t.Fatal(err)
		}
	}
	transporttest.ReceiveUntilClosed(t, ch, 5*len(batch), 10*time.Second)
}

// BenchmarkChannelDelivery publishes one message per Publish call through one node and receives
// them on a subscription of each of three nodes: ns/op is per message, end to end.
func BenchmarkChannelDelivery(b *testing.B) {
	if !reachable(machineAddr) {
		b.Skipf("no Redis on %s", machineAddr)
	}
	prefix := transporttest.Prefix(b)
	topic := protocol.ChannelTopic("bench")
	var subs []<-chan *message.Message
	var nodes []*redis.Broker
	for range 3 {
		n, err := redis.New(redis.Config{Addr: machineAddr, Prefix: prefix}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		if err := n.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		ch, err := n.Subscribe(b.Context(), topic)
		if err != nil {
			b.Fatal(err)
		}
		nodes, subs = append(nodes, n), append(subs, ch)
	}
	defer func() {
		c := goredis.NewClient(&goredis.Options{Addr: machineAddr})
		defer c.Close()
		for i := range redis.DefaultShards {
			c.Del(context.Background(), redis.ShardKey(prefix, i))
		}
	}()
	payload := `{"text":"a message of about a hundred bytes, like a chat line with some metadata around"}`
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, ch := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transporttest.Receive(b, ch, b.N, time.Minute)
		}()
	}
	for range b.N {
		if err := nodes[0].Publish(topic, transporttest.NewMessage(payload, protocol.MetaMsgID, "x")); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}

// TestReplayPages: a replay pages through a shard shared with another channel.
func TestReplayPages(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	b := newNode(t, redis.Config{Addr: addr, Prefix: prefix, Shards: 1, ReplayCount: 3})
	ctx := context.Background()
	mine, other := protocol.ChannelTopic("mine"), protocol.ChannelTopic("other")
	start, err := b.Last(ctx, mine)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 10 {
		p := fmt.Sprintf("m%d", i)
		want = append(want, p)
		if err := b.Publish(other, transporttest.NewMessage("o1"), transporttest.NewMessage("o2")); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(mine, transporttest.NewMessage(p)); err != nil {
			t.Fatal(err)
		}
	}
	msgs, complete, err := b.Replay(ctx, mine, start, 10)
	if err != nil || !complete || len(msgs) != 10 {
		t.Fatalf("replay: %d msgs, complete %v, err %v", len(msgs), complete, err)
	}
	for i, m := range msgs {
		if string(m.Payload) != want[i] {
			t.Fatalf("message %d is %q, want %q", i, m.Payload, want[i])
		}
	}
	if msgs, complete, _ = b.Replay(ctx, mine, start, 9); complete || len(msgs) != 9 {
		t.Fatalf("replay over the limit: %d msgs, complete %v", len(msgs), complete)
	}
}

// TestHeldGroupMessage: a group entry a member holds longer than ClaimIdle is renewed, so no other
// member claims it; a member that stops without acking loses it to another.
func TestHeldGroupMessage(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	cfg := redis.Config{Addr: addr, Prefix: prefix, BlockTimeout: 100 * time.Millisecond, ClaimIdle: time.Second}
	transporttest.HeldGroupMessage(t, newNode(t, cfg), newNode(t, cfg), cfg.ClaimIdle, 10*time.Second)
}

func TestHookCalls(t *testing.T) {
	transporttest.RunHookCalls(t, transporttest.HookFeatures{}, nodeMaker(machineRedis(t)))
}
