package hookbus_test

import (
	"context"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/hookbus"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkCall measures one hook call's round trip (request, handler, reply), one at a time:
// ns/op is its latency. nats and redis use the machine's servers and are skipped without them.
func BenchmarkCall(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		broker := memory.NewBroker(memory.Config{})
		b.Cleanup(broker.Close)
		benchCall(b, broker.Node("bench"), broker.Node("bench"))
	})
	b.Run("nats", func(b *testing.B) {
		if !reachable("127.0.0.1:4222") {
			b.Skip("no nats-server on 127.0.0.1:4222")
		}
		prefix := transporttest.Prefix(b)
		mk := func() transports.Broker {
			n, err := nats.New(nats.Config{URL: "nats://127.0.0.1:4222", Prefix: prefix}, nil)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
		benchCall(b, mk(), mk())
	})
	b.Run("redis", func(b *testing.B) {
		if !reachable("127.0.0.1:6379") {
			b.Skip("no redis-server on 127.0.0.1:6379")
		}
		prefix := transporttest.Prefix(b)
		b.Cleanup(func() {
			rc := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379"})
			defer rc.Close()
			rc.Del(context.Background(), redis.TopicKey(prefix, protocol.TopicHooks), redis.TopicKey(prefix, protocol.TopicReplies))
		})
		mk := func() transports.Broker {
			r, err := redis.New(redis.Config{Addr: "127.0.0.1:6379", Prefix: prefix, BlockTimeout: time.Second}, nil)
			if err != nil {
				b.Fatal(err)
			}
			return r
		}
		benchCall(b, mk(), mk())
	})
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func benchCall(b *testing.B, svc, node transports.Broker) {
	for _, br := range []transports.Broker{svc, node} {
		b.Cleanup(func() { _ = br.Close() })
		if err := br.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		transporttest.WaitFor(b, 10*time.Second, func() error { return br.Ping(context.Background()) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	if _, err := hookbus.Serve(ctx, hookbus.ServeConfig{Broker: svc, Handler: func(context.Context, *protocol.HookRequest) (protocol.HookReply, error) {
		return protocol.HookReply{}, nil
	}}); err != nil {
		b.Fatal(err)
	}
	c, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: node, NodeID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, Channel: "news"})
		return err
	}
	transporttest.WaitFor(b, 10*time.Second, call) // the service consumes
	b.ResetTimer()
	for range b.N {
		if err := call(); err != nil {
			b.Fatal(err)
		}
	}
}
