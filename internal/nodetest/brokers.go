package nodetest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/kafka"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// Where the shared brokers of the tests listen (scripts/test.sh and CI start them).
const (
	NATSAddr  = "127.0.0.1:4222"
	RedisAddr = "127.0.0.1:6379"
)

// Reachable reports whether something accepts TCP connections on addr within a second.
func Reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// SkipUnreachable skips t when nothing listens on addr, naming what should: "NATS", "Redis".
func SkipUnreachable(t testing.TB, what, addr string) {
	t.Helper()
	if !Reachable(addr) {
		t.Skipf("no %s server on %s (scripts/test.sh starts one)", what, addr)
	}
}

// Broker is one kind of broker the tests that run on every broker use.
type Broker struct {
	Name    string
	History bool // resuming on another node works (the broker keeps channel history)
	// InProcess: the broker lives in the test's process (memory), so its nodes cannot be
	// processes of their own; Cluster.Env is nil.
	InProcess bool
	// Setup skips t when the broker's server is not reachable, else returns one cluster on it
	// (for kafka, an in-process kfake cluster that ends with the test).
	Setup func(t testing.TB) *Cluster
}

// Cluster is one broker that the nodes of a test share.
type Cluster struct {
	// Env are the GATEWAY_* settings of a node process on it, without the topic prefix; nil
	// when InProcess.
	Env []string
	// Build returns the broker of one node under prefix as its package's New does: not started,
	// not closed when the test ends. What it keeps on a shared server under prefix (JetStream's
	// streams and buckets, Redis keys) is deleted when the test ends, after it closed.
	Build func(t testing.TB, prefix string) (transports.Broker, error)
	// drop deletes what nodes under a prefix keep on the shared server; nil where nothing
	// outlives the test (memory, and kfake, which ends with it; core NATS keeps nothing).
	drop func(prefix string)
}

// Prefix returns a topic prefix of t's own for nodes on c. What they keep under it on the
// shared server (JetStream streams and buckets, Redis keys) is deleted when t ends, after what t
// starts from now on has stopped (cleanups run last in, first out): node processes that t kills
// leave nothing behind either.
func (c *Cluster) Prefix(t testing.TB) string {
	prefix := transporttest.Prefix(t)
	if c.drop != nil {
		t.Cleanup(func() { c.drop(prefix) })
	}
	return prefix
}

// New returns the started broker of one node under prefix (nodes with the same prefix share one
// broker namespace), closed when the test ends; a node given it with gateway.WithBroker may
// close it first.
func (c *Cluster) New(t testing.TB, prefix string) transports.Broker {
	t.Helper()
	b, err := c.Build(t, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// Brokers are the brokers every cross-broker test runs on: memory, nats, jetstream, redis and
// kafka (on kfake).
var Brokers = []Broker{
	{Name: "memory", History: true, InProcess: true, Setup: func(t testing.TB) *Cluster {
		broker := memory.NewBroker(memory.Config{HistorySize: 10000})
		t.Cleanup(broker.Close)
		return &Cluster{Build: func(_ testing.TB, prefix string) (transports.Broker, error) {
			return broker.Node(prefix), nil
		}}
	}},
	{Name: "nats", Setup: func(t testing.TB) *Cluster {
		SkipUnreachable(t, "NATS", NATSAddr)
		return &Cluster{
			Env: []string{"GATEWAY_BROKER=nats"},
			Build: func(_ testing.TB, prefix string) (transports.Broker, error) {
				return nats.New(nats.Config{URL: "nats://" + NATSAddr, Prefix: prefix}, nil)
			},
		}
	}},
	{Name: "jetstream", History: true, Setup: func(t testing.TB) *Cluster {
		SkipUnreachable(t, "NATS", NATSAddr)
		return &Cluster{
			Env:  []string{"GATEWAY_BROKER=jetstream", "GATEWAY_JETSTREAM_MAX_BYTES=16777216", "GATEWAY_JETSTREAM_MAX_AGE=10m"},
			drop: DeleteStreams,
			Build: func(t testing.TB, prefix string) (transports.Broker, error) {
				t.Cleanup(func() { DeleteStreams(prefix) })
				return jetstream.New(jetstream.Config{URL: "nats://" + NATSAddr, Prefix: prefix, MaxAge: time.Hour, MaxBytes: 16 << 20}, nil)
			},
		}
	}},
	{Name: "redis", History: true, Setup: func(t testing.TB) *Cluster {
		SkipUnreachable(t, "Redis", RedisAddr)
		return &Cluster{
			Env:  []string{"GATEWAY_BROKER=redis", "GATEWAY_REDIS_SHARDS=4"},
			drop: func(prefix string) { DeleteRedisKeys(RedisAddr, prefix) },
			Build: func(t testing.TB, prefix string) (transports.Broker, error) {
				t.Cleanup(func() { DeleteRedisKeys(RedisAddr, prefix) })
				return redis.New(redis.Config{Addr: RedisAddr, Prefix: prefix, Shards: 4, MaxLen: 10000}, nil)
			},
		}
	}},
	{Name: "kafka", History: true, Setup: func(t testing.TB) *Cluster {
		// A real Kafka-protocol broker, in process.
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return &Cluster{
			Env: []string{"GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS=" + strings.Join(c.ListenAddrs(), ","), "GATEWAY_KAFKA_PARTITIONS=4"},
			Build: func(_ testing.TB, prefix string) (transports.Broker, error) {
				return kafka.New(kafka.Config{Brokers: c.ListenAddrs(), Prefix: prefix, Partitions: 4}, nil)
			},
		}
	}},
}

// DeleteStreams removes the JetStream streams and key-value buckets of prefix from the shared
// NATS server, which keeps them after the test.
func DeleteStreams(prefix string) {
	nc, err := natsgo.Connect("nats://" + NATSAddr)
	if err != nil {
		return
	}
	defer nc.Close()
	if js, err := nc.JetStream(); err == nil {
		for _, suffix := range []string{"_channels", "_inbound"} {
			_ = js.DeleteStream(transports.SafeName(prefix) + suffix)
		}
		_ = js.DeleteKeyValue(transports.SafeName(prefix) + "_presence") // every node makes it at start
		_ = js.DeleteKeyValue(transports.SafeName(prefix) + "_control")  // made by the first control command
	}
}

// SharedPrefix returns a topic prefix of t's own for nodes and services that t puts on the shared
// servers (NATS on NATSAddr, Redis on RedisAddr) without a Cluster. Whatever they keep there
// under it, JetStream streams and buckets and Redis keys, is deleted when t ends, after what t
// starts from now on has stopped.
func SharedPrefix(t testing.TB) string {
	prefix := transporttest.Prefix(t)
	t.Cleanup(func() {
		DeleteStreams(prefix)
		DeleteRedisKeys(RedisAddr, prefix)
	})
	return prefix
}

// DeleteRedisKeys removes every key of prefix from the Redis server at addr: the streams
// ("<prefix>:…") and the presence and control keys ("{<prefix>:…", whose hash tag starts with a
// brace). A prefix of the tests is its own (transporttest.Prefix: one letter, 8 hex digits), so
// "<prefix>:" matches no other test's keys.
func DeleteRedisKeys(addr, prefix string) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pattern := range []string{prefix + ":*", "{" + prefix + ":*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			_ = c.Del(ctx, iter.Val()).Err()
		}
	}
}
