package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

const (
	testSecret = "test-secret-0123456789abcdef"
	// wait bounds every wait (the machine may be loaded).
	wait = 60 * time.Second
)

// syncBuffer is a bytes.Buffer safe for the command's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command runs the echo command until the test ends; it returns the addresses ready reported.
func command(t *testing.T, args []string, env ...string) addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	readyc := make(chan addrs, 1)
	exited := make(chan struct{})
	code := -1
	go func() {
		defer close(exited)
		code = run(ctx, args, env, &logs, func(a addrs) { readyc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
			if code != 0 {
				t.Errorf("echo exited with %d\n%s", code, logs.String())
			}
		case <-time.After(wait):
			t.Errorf("echo did not stop in time\n%s", logs.String())
		}
	})
	select {
	case addr := <-readyc:
		return addr
	case <-exited:
		t.Fatalf("echo exited before it was ready")
	case <-time.After(wait):
		t.Fatalf("echo not ready in time\n%s", logs.String())
	}
	return addrs{}
}

// deleteStreams removes the JetStream streams (and presence bucket) of prefix when the test
// ends, so that tests do not fill the server (each stream reserves its max_bytes).
func deleteStreams(t *testing.T, prefix string) {
	t.Cleanup(func() { nodetest.DeleteStreams(prefix) })
}

func dial(t *testing.T, base, user string) (*wstest.Client, string) {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	if err != nil {
		t.Fatal(err)
	}
	c, w := wstest.Dial(t, base, tok)
	return c, w.Str("session")
}

// checkEcho sends from alice and expects the echo on alice's session only.
func checkEcho(t *testing.T, base string) {
	t.Helper()
	alice, _ := dial(t, base, "alice")
	bob, _ := dial(t, base, "bob")
	alice2, _ := dial(t, base, "alice") // the same user on another connection gets nothing
	alice.Send(`{"type":"send","id":"s1","data":{"hello":"world"},"msg_id":"k1"}`)
	frames := alice.ExpectAll("ack", "message") // the echo may overtake the ack
	if ack := frames["ack"]; ack.Str("id") != "s1" || ack.Str("msg_id") != "k1" {
		t.Fatalf("ack %v", ack)
	}
	if m := frames["message"]; m.Str("to") != "session" || m.Data() != `{"echo":{"hello":"world"},"from":"alice"}` {
		t.Fatalf("echo %v", m)
	}
	bob.Send(`{"type":"send","id":"s2","data":"plain"}`)
	if m := bob.ExpectAll("ack", "message")["message"]; m.Data() != `{"echo":"plain","from":"bob"}` {
		t.Fatalf("echo %v", m)
	}
	for _, c := range []*wstest.Client{alice, bob, alice2} {
		c.Send(`{"type":"ping","id":"end"}`)
		if f := c.Next(); f.Str("type") != "pong" {
			t.Fatalf("unexpected frame %v", f)
		}
	}
}

// TestEchoEmbedded runs `echo -embedded`: a gateway node and the service in one process, on the
// memory broker.
func TestEchoEmbedded(t *testing.T) {
	at := command(t, []string{"-embedded"}, "GATEWAY_ADDR=127.0.0.1:0", "GATEWAY_JWT_SECRET="+testSecret,
		"GATEWAY_DRAIN_PERIOD=100ms", "GATEWAY_LOG_LEVEL=debug")
	if at.health != "" {
		t.Errorf("health endpoint at %s without -health-addr", at.health)
	}
	checkEcho(t, "http://"+at.gateway)
}

// TestEchoNATS runs the echo command as a separate service against a gateway node on NATS, both
// configured by the same GATEWAY_* environment.
func TestEchoNATS(t *testing.T) {
	for _, broker := range []string{"nats", "jetstream"} {
		t.Run(broker, func(t *testing.T) {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second); err != nil {
				t.Skip("no NATS server on 127.0.0.1:4222")
			} else {
				c.Close()
			}
			prefix := transporttest.Prefix(t)
			deleteStreams(t, prefix)
			env := []string{"GATEWAY_BROKER=" + broker, "GATEWAY_NATS_URL=nats://127.0.0.1:4222",
				"GATEWAY_TOPIC_PREFIX=" + prefix, "GATEWAY_JWT_SECRET=" + testSecret,
				"GATEWAY_WS_PUBLISH_TIMEOUT=20s", "GATEWAY_DRAIN_PERIOD=100ms",
				"GATEWAY_JETSTREAM_MAX_AGE=1h", "GATEWAY_JETSTREAM_MAX_BYTES=16777216"}
			cfg, err := configs.Load("", env)
			if err != nil {
				t.Fatal(err)
			}
			g, err := gateway.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if err := g.Start(ctx); err != nil {
				_ = g.Close()
				t.Fatal(err)
			}
			srv := httptest.NewServer(g.Handler())
			t.Cleanup(func() {
				srv.CloseClientConnections()
				srv.Close()
				_ = g.Close()
			})
			at := command(t, []string{"-health-addr", "127.0.0.1:0"}, env...)
			checkEcho(t, srv.URL)
			expectHealth(t, at.health, http.StatusOK, "ok\n")
		})
	}
}

func TestEchoNeedsABrokerItCanShare(t *testing.T) {
	var logs syncBuffer
	code := run(context.Background(), nil, []string{"GATEWAY_JWT_SECRET=" + testSecret}, &logs, nil)
	if code != 2 || !strings.Contains(logs.String(), "-embedded") {
		t.Fatalf("exit %d, output %s", code, logs.String())
	}
	if code := run(context.Background(), []string{"-bogus"}, nil, &logs, nil); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code := run(context.Background(), nil, []string{"GATEWAY_BROKER=bogus"}, &logs, nil); code != 2 {
		t.Fatalf("bad setting: exit %d", code)
	}
	for _, args := range [][]string{{"extra"}, {"-group", ""}} {
		if code := run(context.Background(), args, []string{"GATEWAY_BROKER=nats"}, &logs, nil); code != 2 {
			t.Errorf("%q: exit %d", args, code)
		}
	}
}

// getHealth asks GET /healthz at addr.
func getHealth(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: wait}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func expectHealth(t *testing.T, addr string, status int, body string) {
	t.Helper()
	if addr == "" {
		t.Fatal("no health address reported")
	}
	if code, got := getHealth(t, addr, healthPath); code != status || got != body {
		t.Errorf("GET %s: %d %q, want %d %q", healthPath, code, got, status, body)
	}
}

// TestEchoHealthEndpoint runs echo with -health-addr: /healthz is 200 once it consumes, other
// paths are not served, and the endpoint is gone once echo stopped.
func TestEchoHealthEndpoint(t *testing.T) {
	var at addrs
	t.Run("running", func(t *testing.T) {
		at = command(t, []string{"-embedded", "-health-addr", "127.0.0.1:0"}, "GATEWAY_ADDR=127.0.0.1:0",
			"GATEWAY_JWT_SECRET="+testSecret, "GATEWAY_DRAIN_PERIOD=100ms")
		expectHealth(t, at.health, http.StatusOK, "ok\n")
		if code, _ := getHealth(t, at.health, "/readyz"); code != http.StatusNotFound {
			t.Errorf("GET /readyz on the health address: %d, want 404", code)
		}
		checkEcho(t, "http://"+at.gateway) // the health endpoint is not the gateway's listener
	})
	// The subtest's cleanup stopped echo, and with it the endpoint.
	if c, err := net.DialTimeout("tcp", at.health, time.Second); err == nil {
		c.Close()
		t.Errorf("health endpoint %s still accepts connections after echo stopped", at.health)
	}
}

// pingSwitch is a broker whose broker can be made unreachable.
type pingSwitch struct {
	transports.Broker
	down atomic.Bool
}

func (p *pingSwitch) Ping(ctx context.Context) error {
	if p.down.Load() {
		return errors.New("broker down")
	}
	return p.Broker.Ping(ctx)
}

// TestHealthStates checks each answer of /healthz: starting, consuming, broker unreachable,
// stopped consuming.
func TestHealthStates(t *testing.T) {
	h := &health{}
	probe := func(status int, body string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, healthPath, nil))
		if rec.Code != status || rec.Body.String() != body {
			t.Errorf("%d %q, want %d %q", rec.Code, rec.Body.String(), status, body)
		}
	}
	probe(http.StatusServiceUnavailable, "starting\n")

	broker := memory.NewBroker(memory.Config{})
	defer broker.Close()
	b := &pingSwitch{Broker: broker.Node("health")}
	svc, err := service.New(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped, err := start(ctx, svc, "echo", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h.consuming(svc, stopped)
	probe(http.StatusOK, "ok\n")

	b.down.Store(true)
	probe(http.StatusServiceUnavailable, "broker unreachable\n")
	b.down.Store(false)
	probe(http.StatusOK, "ok\n")

	cancel() // the consumer stops
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("the consumer did not stop")
	}
	probe(http.StatusServiceUnavailable, "not consuming\n")
}

// TestHealthAddrErrors: a malformed -health-addr is a usage error (2), one that cannot be listened
// on a failure (1), both before anything consumes.
func TestHealthAddrErrors(t *testing.T) {
	env := []string{"GATEWAY_JWT_SECRET=" + testSecret, "GATEWAY_ADDR=127.0.0.1:0"}
	var logs syncBuffer
	if code := run(context.Background(), []string{"-embedded", "-health-addr", "8081"}, env, &logs, nil); code != 2 || !strings.Contains(logs.String(), "-health-addr") {
		t.Errorf("-health-addr 8081: exit %d, output %s", code, logs.String())
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	logs = syncBuffer{}
	if code := run(context.Background(), []string{"-embedded", "-health-addr", busy.Addr().String()}, env, &logs, nil); code != 1 || !strings.Contains(logs.String(), "-health-addr") {
		t.Errorf("-health-addr on a port in use: exit %d, output %s", code, logs.String())
	}
}
