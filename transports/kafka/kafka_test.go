package kafka

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// cluster is an in-process Kafka-protocol broker (franz-go's kfake) that can be restarted on
// the same port: without kfake.DataDir the restarted broker has lost everything (the topics are
// created again, a new epoch); with it, it keeps its data like a real broker restart.
type cluster struct {
	t    testing.TB
	opts []kfake.Opt
	port int

	mu sync.Mutex
	c  *kfake.Cluster
}

func newCluster(t testing.TB, opts ...kfake.Opt) *cluster {
	t.Helper()
	cl := &cluster{t: t, opts: opts}
	cl.start()
	_, port, err := net.SplitHostPort(cl.c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	cl.port, _ = strconv.Atoi(port)
	t.Cleanup(cl.stop)
	return cl
}

func (cl *cluster) start() {
	opts := append([]kfake.Opt{kfake.NumBrokers(1)}, cl.opts...)
	if cl.port != 0 {
		opts = append(opts, kfake.Ports(cl.port))
	}
	var err error
	// The old listener's port can take a moment to be free again.
	for range 50 {
		var c *kfake.Cluster
		if c, err = kfake.NewCluster(opts...); err == nil {
			cl.mu.Lock()
			cl.c = c
			cl.mu.Unlock()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl.t.Fatalf("start kfake: %v", err)
}

func (cl *cluster) stop() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.c != nil {
		cl.c.Close()
		cl.c = nil
	}
}

// compact has kfake compact its compacted topics now.
func (cl *cluster) compact() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.c.Compact()
}

func (cl *cluster) restart(t *testing.T) {
	cl.stop()
	cl.start()
}

func (cl *cluster) addrs() []string {
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(cl.port))}
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return nil
}

func newBroker(t testing.TB, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	cl := newCluster(t)
	transporttest.Run(t, transporttest.Features{History: true, RestartBroker: cl.restart}, func(t *testing.T, prefix string) transports.Broker {
		return newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix})
	})
}

// TestHookCalls runs the hook calls suite on kfake, with two service partitions so that both
// replicas of the group get requests.
func TestHookCalls(t *testing.T) {
	cl := newCluster(t)
	transporttest.RunHookCalls(t, transporttest.HookFeatures{RestartBroker: cl.restart}, func(t *testing.T, prefix string) transports.Broker {
		return newBroker(t, Config{Brokers: cl.addrs(), Prefix: prefix, ServicePartitions: 2})
	})
}
