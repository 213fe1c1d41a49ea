package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// startWait bounds how long a test waits for a node to notice its broker came up: Kafka's
// client backs off up to 10s between attempts, NATS's up to 3s.
const startWait = 30 * time.Second

// logBuffer is an io.Writer for a slog handler that tests read while the node writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serving is a node run by Serve on a listener of the test's.
type serving struct {
	base string
	logs *logBuffer
	done chan error // Serve's result
}

// serve builds a node from env and runs Serve until the test ends.
func serve(t *testing.T, env ...string) *serving {
	t.Helper()
	s := &serving{logs: &logBuffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(s.logs, nil))
	g, err := gateway.New(testConfig(t, env...), gateway.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.base = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.done <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(startWait):
			t.Error("Serve did not return after its context ended")
		}
	})
	return s
}

// status is the HTTP status of GET path, 0 when the request fails.
func (s *serving) status(path string) int {
	resp, err := http.Get(s.base + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitUnreachable waits until the node logged that its broker is unreachable, and checks that
// meanwhile /readyz answers 503 and /ws refuses with 503.
func (s *serving) waitUnreachable(t *testing.T) {
	t.Helper()
	wstest.WaitFor(t, func() error {
		if s.logs.count("broker unreachable") == 0 {
			return errors.New("no \"broker unreachable\" in the log yet")
		}
		return nil
	})
	if st := s.status("/readyz"); st != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d while the broker is down, want 503", st)
	}
	if st := s.status("/ws"); st != http.StatusServiceUnavailable {
		t.Fatalf("/ws %d while the broker is down, want 503", st)
	}
}

// waitReady waits for /readyz 200 and checks that the outage and the recovery were each logged
// once.
func (s *serving) waitReady(t *testing.T) {
	t.Helper()
	transporttest.WaitFor(t, startWait, func() error {
		if st := s.status("/readyz"); st != http.StatusOK {
			return fmt.Errorf("/readyz %d", st)
		}
		return nil
	})
	if n, m := s.logs.count("broker unreachable"), s.logs.count("broker reachable"); n != 1 || m != 1 {
		t.Fatalf("logged \"broker unreachable\" %d times and \"broker reachable\" %d times, want once each:\n%s", n, m, s.logs)
	}
}

// TestStartWaitsForTheBroker: a node started while its broker is down stays up with /readyz
// 503, says once that the broker is unreachable, and becomes ready when the broker comes up.
func TestStartWaitsForTheBroker(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			t.Skip("no redis-server on PATH (scripts/test.sh installs it)")
		}
		port := nodetest.FreePort(t)
		s := serve(t, "GATEWAY_WS_PUBLISH_TIMEOUT=300ms", "GATEWAY_BROKER=redis", "GATEWAY_REDIS_ADDR=127.0.0.1:"+strconv.Itoa(port), "GATEWAY_TOPIC_PREFIX="+transporttest.Prefix(t))
		s.waitUnreachable(t)
		redis := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := redis.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = redis.Process.Kill(); _ = redis.Wait() })
		s.waitReady(t)
	})
	for _, broker := range []string{"nats", "jetstream"} {
		t.Run(broker, func(t *testing.T) {
			port := nodetest.FreePort(t)
			s := serve(t, "GATEWAY_WS_PUBLISH_TIMEOUT=300ms", "GATEWAY_BROKER="+broker, fmt.Sprintf("GATEWAY_NATS_URL=nats://127.0.0.1:%d", port),
				"GATEWAY_TOPIC_PREFIX="+transporttest.Prefix(t), "GATEWAY_JETSTREAM_MAX_BYTES=16777216")
			s.waitUnreachable(t)
			srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
				JetStream: broker == "jetstream", StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			go srv.Start()
			t.Cleanup(srv.Shutdown)
			s.waitReady(t)
		})
	}
	t.Run("kafka", func(t *testing.T) {
		port := nodetest.FreePort(t)
		s := serve(t, "GATEWAY_WS_PUBLISH_TIMEOUT=300ms", "GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS=127.0.0.1:"+strconv.Itoa(port),
			"GATEWAY_KAFKA_PARTITIONS=2", "GATEWAY_TOPIC_PREFIX="+transporttest.Prefix(t))
		s.waitUnreachable(t)
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		s.waitReady(t)
	})
}

// TestBrokerConnectTimeout: with broker_connect_timeout set, a node whose broker never answers
// gives up, and the error names the broker and its address.
func TestBrokerConnectTimeout(t *testing.T) {
	port := strconv.Itoa(nodetest.FreePort(t))
	for broker, addr := range map[string]string{
		"redis":     "GATEWAY_REDIS_ADDR=127.0.0.1:" + port,
		"nats":      "GATEWAY_NATS_URL=nats://127.0.0.1:" + port,
		"jetstream": "GATEWAY_NATS_URL=nats://127.0.0.1:" + port,
		"kafka":     "GATEWAY_KAFKA_BROKERS=127.0.0.1:" + port,
	} {
		t.Run(broker, func(t *testing.T) {
			s := serve(t, "GATEWAY_BROKER="+broker, addr, "GATEWAY_BROKER_CONNECT_TIMEOUT=200ms", "GATEWAY_TOPIC_PREFIX="+transporttest.Prefix(t))
			var err error
			select {
			case err = <-s.done:
				s.done <- err // for the cleanup
			case <-time.After(startWait):
				t.Fatal("Serve did not give up")
			}
			if !errors.Is(err, gateway.ErrBrokerUnreachable) || !strings.Contains(err.Error(), broker+" at ") ||
				!strings.Contains(err.Error(), "127.0.0.1:"+port) || !strings.Contains(err.Error(), "broker_connect_timeout") {
				t.Fatalf("Serve: %v, want ErrBrokerUnreachable naming %s, its address and broker_connect_timeout", err, broker)
			}
		})
	}
}
