package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// entriesOf returns the entries of stream key on addr whose uuid field is uuid.
func entriesOf(t *testing.T, addr, key, uuid string) []goredis.XMessage {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	all, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s on %s: %v", key, addr, err)
	}
	var out []goredis.XMessage
	for _, e := range all {
		if e.Values["uuid"] == uuid {
			out = append(out, e)
		}
	}
	return out
}

// retried publishes msg to topic on b as the router's inbound handler does under its Retry
// middleware: each attempt builds a new message of msg's UUID and payload, and the attempts
// (three, 10 ms apart) go on while the publish fails. It returns the last error, the position
// of the last attempt and how many attempts were made.
func retried(b *redis.Broker, topic string, msg *message.Message) (protocol.Position, int, error) {
	var pos protocol.Position
	attempts := 0
	h := wmw.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond}.Middleware(func(m *message.Message) ([]*message.Message, error) {
		attempts++
		ps, err := b.PublishPositions(topic, message.NewMessage(m.UUID, m.Payload))
		if err == nil {
			pos = ps[0]
		}
		return nil, err
	})
	_, err := h(msg)
	return pos, attempts, err
}

// TestMinReplicasRetryAddsOnce: with min_replicas 1 on a primary without replicas a publish
// fails with ErrUnavailable although XADD put the entry on the primary; the router's retries
// of that message (same UUID), and a retry through another node, must not add it again.
func TestMinReplicasRetryAddsOnce(t *testing.T) {
	primary := startServer(t)
	prefix := transporttest.Prefix(t)
	cfg := redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: 200 * time.Millisecond}
	b := newNode(t, cfg)
	topic := protocol.ChannelTopic("once")
	msg := message.NewMessage(watermill.NewUUID(), []byte(`"once"`))
	_, attempts, err := retried(b, topic, msg)
	if !errors.Is(err, transports.ErrUnavailable) || attempts != 3 {
		t.Fatalf("publish with no replica: %v after %d attempts, want ErrUnavailable after 3", err, attempts)
	}
	if got := entriesOf(t, primary.addr, channelKey(prefix, "once"), msg.UUID); len(got) != 1 {
		t.Fatalf("after 3 failed attempts the stream holds %d entries of the message, want 1", len(got))
	}
	// Another node retrying the same message (a client's retry with the same msg_id, through
	// another node) finds the entry too.
	other := newNode(t, cfg)
	if _, err := other.PublishPositions(topic, message.NewMessage(msg.UUID, msg.Payload)); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("retry through another node: %v, want ErrUnavailable", err)
	}
	if got := entriesOf(t, primary.addr, channelKey(prefix, "once"), msg.UUID); len(got) != 1 {
		t.Fatalf("after a retry through another node the stream holds %d entries of the message, want 1", len(got))
	}
	// The same UUID on another channel of the same shard stream is another message.
	twin := twinChannel("once")
	if _, err := b.PublishPositions(protocol.ChannelTopic(twin), message.NewMessage(msg.UUID, msg.Payload)); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("publish to %s: %v, want ErrUnavailable", twin, err)
	}
	if got := entriesOf(t, primary.addr, channelKey(prefix, "once"), msg.UUID); len(got) != 2 {
		t.Fatalf("the message's UUID on channels once and %s of one shard stream: %d entries, want 2", twin, len(got))
	}
	// Other topics, and batches, alike.
	direct := message.NewMessage(watermill.NewUUID(), []byte(`"direct"`))
	if _, attempts, err := retried(b, protocol.TopicDirect, direct); !errors.Is(err, transports.ErrUnavailable) || attempts != 3 {
		t.Fatalf("direct publish with no replica: %v after %d attempts", err, attempts)
	}
	if got := entriesOf(t, primary.addr, redis.TopicKey(prefix, protocol.TopicDirect), direct.UUID); len(got) != 1 {
		t.Fatalf("direct: %d entries of the message after 3 attempts, want 1", len(got))
	}
	m1, m2 := message.NewMessage(watermill.NewUUID(), []byte("1")), message.NewMessage(watermill.NewUUID(), []byte("2"))
	for range 2 {
		if err := b.Publish(topic, m1, m2); !errors.Is(err, transports.ErrUnavailable) {
			t.Fatalf("batch publish with no replica: %v, want ErrUnavailable", err)
		}
	}
	for _, m := range []*message.Message{m1, m2} {
		if got := entriesOf(t, primary.addr, channelKey(prefix, "once"), m.UUID); len(got) != 1 {
			t.Fatalf("batch published twice: %d entries of message %s, want 1", len(got), m.Payload)
		}
	}
}

// replicaOnline waits until primary counts a replica online: one that acknowledged what it was
// sent (the replica's master_link_status is up a little before).
func replicaOnline(t *testing.T, primary *server) {
	t.Helper()
	poll.Until(t, 20*time.Second, func() error {
		if s := info(primary.addr, "slave0"); !strings.Contains(s, "state=online") {
			return fmt.Errorf("the primary's replica: %q", s)
		}
		return nil
	})
}

// twinChannel is another channel name on the shard stream of channel.
func twinChannel(channel string) string {
	for i := 0; ; i++ {
		if c := fmt.Sprintf("twin%d", i); redis.Shard(c, redis.DefaultShards) == redis.Shard(channel, redis.DefaultShards) {
			return c
		}
	}
}

// TestMinReplicasRetryAfterReplica: a publish that failed for want of a replica is retried once a
// replica is attached: the retry is acked with the position of the entry the first attempt
// added, which the replica holds, and the stream holds it once.
func TestMinReplicasRetryAfterReplica(t *testing.T) {
	primary := startServer(t)
	prefix := transporttest.Prefix(t)
	// The window covers the start of the replica.
	b := newNode(t, redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: time.Second, RetryWindow: time.Minute})
	topic, key := protocol.ChannelTopic("late"), channelKey(prefix, "late")
	msg := message.NewMessage(watermill.NewUUID(), []byte(`"late"`))
	if _, err := b.PublishPositions(topic, msg); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("publish with no replica: %v, want ErrUnavailable", err)
	}
	first := entriesOf(t, primary.addr, key, msg.UUID)
	if len(first) != 1 {
		t.Fatalf("the failed publish left %d entries, want 1 (XADD ran, WAIT failed)", len(first))
	}
	replica := startServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	replicaOnline(t, primary)
	pos, err := b.PublishPositions(topic, message.NewMessage(msg.UUID, msg.Payload))
	if err != nil {
		t.Fatalf("retry with a replica: %v", err)
	}
	if id := fmt.Sprintf("%d-%d", pos[0].Hi, pos[0].Lo); id != first[0].ID {
		t.Fatalf("the retry was acked at %s, want the first attempt's entry %s", id, first[0].ID)
	}
	if got := entriesOf(t, primary.addr, key, msg.UUID); len(got) != 1 {
		t.Fatalf("after the acked retry the stream holds %d entries of the message, want 1", len(got))
	}
	if got := entriesOf(t, replica.addr, key, msg.UUID); len(got) != 1 || got[0].ID != first[0].ID {
		t.Fatalf("the replica holds %v of the acked message, want entry %s", got, first[0].ID)
	}
}

// TestMinReplicasRetryWaitsForReplica: a retry that finds the message's entry is acked only once
// the replicas hold that entry, even on a connection that wrote nothing before (WAIT counts the
// replicas that caught up with the offset of the connection's last write; a bare WAIT on a new
// connection counts every replica online). The replica is stopped (SIGSTOP): the primary still
// counts it as online, but it acknowledges nothing new. (Redis 7.0 moves a connection's offset
// on reads too, so there this passes even without addScript's renewal; versions that move it
// only on writes need it.)
func TestMinReplicasRetryWaitsForReplica(t *testing.T) {
	primary := startServer(t)
	replica := startServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	replicaOnline(t, primary)
	prefix := transporttest.Prefix(t)
	cfg := redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: 400 * time.Millisecond}
	a := newNode(t, cfg)
	topic, key := protocol.ChannelTopic("stopped"), channelKey(prefix, "stopped")
	if _, err := a.PublishPositions(topic, message.NewMessage(watermill.NewUUID(), []byte("0"))); err != nil {
		t.Fatalf("publish with the replica running: %v", err)
	}
	stopped := replica.cmd.Process
	if err := stopped.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stopped.Signal(syscall.SIGCONT) })
	msg := message.NewMessage(watermill.NewUUID(), []byte(`"stopped"`))
	if _, err := a.PublishPositions(topic, msg); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("publish with the replica stopped: %v, want ErrUnavailable", err)
	}
	b := newNode(t, cfg) // its connections have written nothing yet
	if _, err := b.PublishPositions(topic, message.NewMessage(msg.UUID, msg.Payload)); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("retry through another node with the replica stopped: %v, want ErrUnavailable (the replica does not hold the entry)", err)
	}
	if err := stopped.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	first := entriesOf(t, primary.addr, key, msg.UUID)
	if len(first) != 1 {
		t.Fatalf("the stream holds %d entries of the message, want 1", len(first))
	}
	pos, err := b.PublishPositions(topic, message.NewMessage(msg.UUID, msg.Payload))
	if err != nil {
		t.Fatalf("retry with the replica running again: %v", err)
	}
	if id := fmt.Sprintf("%d-%d", pos[0].Hi, pos[0].Lo); id != first[0].ID {
		t.Fatalf("the retry was acked at %s, want the first attempt's entry %s", id, first[0].ID)
	}
	if got := entriesOf(t, replica.addr, key, msg.UUID); len(got) != 1 {
		t.Fatalf("the replica holds %d entries of the acked message, want 1", len(got))
	}
}

// TestMinReplicasGuardKeys: the key that remembers a message's entry lies under the prefix (so
// that the tests' cleanup and an operator's SCAN find it) and expires after Config.RetryWindow;
// without min_replicas none is written. (That it is in the stream's hash slot is
// TestRedisCluster/MinReplicasRepeat's.)
func TestMinReplicasGuardKeys(t *testing.T) {
	primary := startServer(t)
	prefix := transporttest.Prefix(t)
	c := goredis.NewClient(&goredis.Options{Addr: primary.addr})
	defer c.Close()
	ctx := context.Background()
	plain := newNode(t, redis.Config{Addr: primary.addr, Prefix: prefix})
	if err := plain.Publish(protocol.ChannelTopic("g"), message.NewMessage(watermill.NewUUID(), []byte("0"))); err != nil {
		t.Fatal(err)
	}
	if keys, err := c.Keys(ctx, "*").Result(); err != nil || len(keys) != 1 || keys[0] != channelKey(prefix, "g") {
		t.Fatalf("keys after a publish without min_replicas: %q %v, want the stream alone", keys, err)
	}
	window := 3 * time.Second
	b := newNode(t, redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: 100 * time.Millisecond, RetryWindow: window})
	msg := message.NewMessage(watermill.NewUUID(), []byte("1"))
	if err := b.Publish(protocol.ChannelTopic("g"), msg); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("publish with no replica: %v", err)
	}
	guards, err := c.Keys(ctx, "{"+prefix+":*").Result()
	if err != nil || len(guards) != 1 {
		t.Fatalf("keys {%s:* after a publish with min_replicas: %q %v, want one", prefix, guards, err)
	}
	ttl, err := c.PTTL(ctx, guards[0]).Result()
	if err != nil || ttl <= 0 || ttl > window {
		t.Fatalf("guard key %q expires in %v (%v), want within %v", guards[0], ttl, err, window)
	}
}

// TestRetryWindowFrom: a gateway node's broker remembers a message's entry for as long as the
// router may retry it: (router.retry_attempts + 1) attempts of at most websocket.publish_timeout
// each, plus router.retry_max_elapsed of backoff.
func TestRetryWindowFrom(t *testing.T) {
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef", "GATEWAY_BROKER=redis",
		"GATEWAY_REDIS_MIN_REPLICAS=1", "GATEWAY_WS_PUBLISH_TIMEOUT=2s", "GATEWAY_ROUTER_RETRY_ATTEMPTS=4", "GATEWAY_ROUTER_RETRY_MAX_ELAPSED=1s"})
	if err != nil {
		t.Fatal(err)
	}
	if got := redis.ConfigFrom(cfg).RetryWindow; got != 11*time.Second {
		t.Fatalf("ConfigFrom: retry window %v, want 11s", got)
	}
	if cfg, err = configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef", "GATEWAY_BROKER=redis"}); err != nil {
		t.Fatal(err)
	}
	if got := redis.ConfigFrom(cfg).RetryWindow; got != 23*time.Second {
		t.Fatalf("ConfigFrom with the defaults: retry window %v, want 23s", got)
	}
}

// TestConformanceMinReplicas runs the suite with min_replicas 1 against a primary with a replica
// of its own: every publish goes through the append script (fields, binary payloads, batches,
// positions and history as without it).
func TestConformanceMinReplicas(t *testing.T) {
	primary := startServer(t)
	startServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	replicaOnline(t, primary)
	transporttest.Run(t, transporttest.Features{History: true}, func(t *testing.T, prefix string) transports.Broker {
		b, err := redis.New(redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, BlockTimeout: time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	})
}
