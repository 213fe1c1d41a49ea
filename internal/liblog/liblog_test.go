package liblog_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/IBM/sarama"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/liblog"
)

// TestLibraryLogsGoThroughSlog: go-redis's and sarama's own log lines reach the slog logger
// given to Set (at debug level), not the process's stderr. It lives in a package of its own: the
// loggers are process-global, and setting them while another test's sarama client closes races.
func TestLibraryLogsGoThroughSlog(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	logs := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	liblog.Set(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { liblog.Set(slog.New(slog.DiscardHandler)) })

	client := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(closedPort(t)), DialerRetries: 1, MaxRetries: -1})
	defer client.Close()
	if err := client.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	sarama.Logger.Printf("hello from sarama")
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{"library=go-redis", "failed to dial", "library=sarama", "hello from sarama"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the slog output:\n%s", want, out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// closedPort is a loopback port nothing listens on (now).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
