package redis_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// BenchmarkPublishMinReplicas: one message per PublishPositions, as a client's publish, with
// the metadata the gateway gives it, to a primary with one replica on loopback (both started by
// the benchmark); sequential, and 16 publishers at once.
func BenchmarkPublishMinReplicas(b *testing.B) {
	primary := benchServer(b)
	replica := benchServer(b, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	poll.Until(b, 20*time.Second, func() error {
		if s := info(primary.addr, "slave0"); !strings.Contains(s, "state=online") {
			return fmt.Errorf("the primary's replica: %q", s)
		}
		return nil
	})
	_ = replica
	payload := `{"text":"a message of about a hundred bytes, like a chat line with some metadata around"}`
	msg := func() *message.Message {
		return transporttest.NewMessage(payload, protocol.MetaMsgID, watermill.NewUUID(), protocol.MetaUser, "alice",
			protocol.MetaSession, watermill.NewUUID(), protocol.MetaNode, "node-1", protocol.MetaKind, protocol.KindPublish,
			protocol.MetaTarget, protocol.TargetChannel, protocol.MetaChannel, "bench", protocol.MetaSentAt, "1733480000000000000")
	}
	for _, minReplicas := range []int{0, 1} {
		node, err := redis.New(redis.Config{Addr: primary.addr, Prefix: transporttest.Prefix(b), MinReplicas: minReplicas}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := node.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		topic := protocol.ChannelTopic("bench")
		b.Run(fmt.Sprintf("min_replicas=%d", minReplicas), func(b *testing.B) {
			for range b.N {
				if _, err := node.PublishPositions(topic, msg()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("min_replicas=%d/publishers=16", minReplicas), func(b *testing.B) {
			b.SetParallelism(16 / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := node.PublishPositions(topic, msg()); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		_ = node.Close()
	}
}

// benchServer starts a redis-server on a free port for a benchmark, stopped when it ends.
func benchServer(b *testing.B, args ...string) *server {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		b.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir := b.TempDir()
	s := &server{bin: bin, dir: dir, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.cmd = exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}, args...)...)
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.stop)
	poll.Until(b, 10*time.Second, func() error {
		if !reachable(s.addr) {
			return fmt.Errorf("redis-server on %s does not answer", s.addr)
		}
		return nil
	})
	return s
}
