package nats_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// startServer runs an in-process nats-server on 127.0.0.1:port (0: a free port).
func startServer(t testing.TB, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not start")
	}
	return s
}

func stopServer(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

func serverURL(s *server.Server) string {
	return "nats://" + s.Addr().String()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newNode connects a Broker that reconnects quickly, as the tests restart servers.
func newNode(t testing.TB, url, prefix string) *nats.Broker {
	t.Helper()
	b, err := nats.New(nats.Config{
		URL:             url,
		Prefix:          prefix,
		Name:            "test-" + prefix,
		ReconnectWait:   50 * time.Millisecond,
		ReconnectJitter: 50 * time.Millisecond,
	}, testLogger(t))
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
	srv := startServer(t, 0)
	port := srv.Addr().(*net.TCPAddr).Port
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.Run(t, transporttest.Features{
		EndsOnDisconnect: true,
		RestartBroker: func(t *testing.T) {
			stopServer(srv)
			srv = startServer(t, port) // same port: the clients reconnect to the URL they know
		},
	}, func(t *testing.T, prefix string) transports.Broker {
		return newNode(t, url, prefix)
	})
}

// TestConformanceLocalServer runs the suite against the machine's nats-server when it runs.
func TestConformanceLocalServer(t *testing.T) {
	const addr = "127.0.0.1:4222"
	conn, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		t.Skipf("no nats-server on %s: %v", addr, err)
	}
	_ = conn.Close()
	transporttest.Run(t, transporttest.Features{EndsOnDisconnect: true}, func(t *testing.T, prefix string) transports.Broker {
		return newNode(t, "nats://"+addr, prefix)
	})
}

func TestSubjects(t *testing.T) {
	for _, tc := range []struct{ topic, want string }{
		{protocol.ChannelTopic("news"), "ws.ch.news"},
		{protocol.ChannelTopic("room:1.a_b"), "ws.ch.room_3a1_2ea_5fb"},
		{protocol.ChannelTopic(protocol.UserChannelFor("alice")), "ws.ch._24user_3aalice"},
		{protocol.ChannelTopic("a*>b c"), "ws.ch.a_2a_3eb_20c"},
		{protocol.TopicDirect, "ws.direct"},
		{protocol.TopicInbound, "ws.inbound"},
		{protocol.TopicEvents, "ws.events"},
		{protocol.TopicHooks, "ws.hooks"},
		{protocol.TopicReplies, "ws.replies"},
		{"ch", "ws.ch"},
		{"x.y*", "ws.x.y_2a"},
	} {
		if got := nats.Subject("ws", tc.topic); got != tc.want {
			t.Errorf("Subject(ws, %q) = %q, want %q", tc.topic, got, tc.want)
		}
	}
	if got := nats.QueueGroup("ws", "svc a"); got != "ws.svc_20a" {
		t.Errorf("QueueGroup = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  nats.Config
		ok   bool
	}{
		{"defaults", nats.Config{URL: "nats://127.0.0.1:4222"}, true},
		{"dotted prefix", nats.Config{URL: "nats://h:1", Prefix: "acme.ws"}, true},
		{"no url", nats.Config{}, false},
		{"wildcard prefix", nats.Config{URL: "nats://h:1", Prefix: "ws.*"}, false},
		{"empty token", nats.Config{URL: "nats://h:1", Prefix: "a..b"}, false},
		{"space", nats.Config{URL: "nats://h:1", Prefix: "a b"}, false},
		{"negative timeout", nats.Config{URL: "nats://h:1", Timeout: -time.Second}, false},
		{"tight reconnect", nats.Config{URL: "nats://h:1", ReconnectWait: time.Nanosecond}, false},
		{"negative pending limit", nats.Config{URL: "nats://h:1", PendingLimit: -1}, false},
		{"url nats.go cannot parse", nats.Config{URL: "nats://h:1, nats://bad host:4222"}, false},
		{"url without scheme", nats.Config{URL: "h:1,h2"}, true},
		{"presence heartbeat", nats.Config{URL: "nats://h:1", Presence: transports.PresenceConfig{Heartbeat: time.Millisecond}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := nats.New(tc.cfg, nil)
			if tc.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = b.Close()
				return
			}
			if err == nil {
				_ = b.Close()
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

// freePort returns a port nothing listens on (for a moment).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestBrokerDown: a node comes up without its broker, reports it, fails publishes at once,
// recovers by itself, and fails publishes at once again when the broker goes away.
func TestBrokerDown(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	prefix := transporttest.Prefix(t)
	node := newNode(t, url, prefix)
	ctx := t.Context()

	if err := node.Ping(ctx); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Ping without a broker: %v, want ErrUnavailable", err)
	}
	expectUnavailable(t, node)
	topic := protocol.ChannelTopic("down")
	ch, err := node.Subscribe(ctx, topic) // kept by the client, sent when it connects
	if err != nil {
		t.Fatalf("Subscribe without a broker: %v", err)
	}

	srv := startServer(t, port)
	defer func() { stopServer(srv) }()
	transporttest.WaitFor(t, 10*time.Second, func() error { return node.Ping(ctx) })
	other := newNode(t, url, prefix)
	transporttest.WaitFor(t, 10*time.Second, func() error { return other.Ping(ctx) })
	if err := other.Publish(topic, transporttest.NewMessage("hello")); err != nil {
		t.Fatal(err)
	}
	if got := transporttest.Receive(t, ch, 1, 10*time.Second); string(got[0].Payload) != "hello" {
		t.Fatalf("got %q", got[0].Payload)
	}

	stopServer(srv)
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if err := node.Ping(ctx); err == nil {
			return errors.New("Ping still succeeds after the broker stopped")
		}
		return nil
	})
	expectUnavailable(t, node)
}

func expectUnavailable(t *testing.T, b transports.Broker) {
	t.Helper()
	start := time.Now()
	err := b.Publish(protocol.ChannelTopic("down"), transporttest.NewMessage("x"))
	if !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Publish without a broker: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Publish without a broker took %v", d)
	}
}

func TestNackRedelivers(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	node := newNode(t, serverURL(srv), transporttest.Prefix(t))
	topic := protocol.TopicDirect
	ch, err := node.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Publish(topic, transporttest.NewMessage("a"), transporttest.NewMessage("b")); err != nil {
		t.Fatal(err)
	}
	next := func() *message.Message {
		select {
		case m := <-ch:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
			return nil
		}
	}
	first := next()
	first.Nack()
	again := next()
	if string(again.Payload) != "a" || again.UUID != first.UUID {
		t.Fatalf("after a nack got %q, want a again", again.Payload)
	}
	again.Ack()
	if m := next(); string(m.Payload) != "b" {
		t.Fatalf("after the ack got %q, want b", m.Payload)
	}
}

// TestSlowSubscriptionEnds: when nats.go drops messages of a subscription whose consumer fell
// too far behind (slow consumer), the subscription ends, so that its clients resume and learn
// what was lost, instead of going on past the gap.
func TestSlowSubscriptionEnds(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	b, err := nats.New(nats.Config{URL: serverURL(srv), Prefix: transporttest.Prefix(t), PendingLimit: 10}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	topic := protocol.ChannelTopic("slow")
	ch, err := b.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads ch: the first message waits for its consumer, 10 more wait in nats.go, and
	// the rest are dropped.
	for i := range 50 {
		if err := b.Publish(topic, transporttest.NewMessage(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	transporttest.ReceiveUntilClosed(t, ch, 50, 10*time.Second)
}

// cliExample is what docs/brokers/nats.md tells services to run, and the message each line
// must become.
var cliExample = []struct {
	subject string
	body    string
	headers [][2]string // in order, as given with -H
	topic   string
	meta    map[string]string
}{
	{"ws.ch.news", `{"text":"hello"}`, nil, protocol.ChannelTopic("news"), map[string]string{}},
	{
		"ws.ch.news", `{"text":"hello"}`, [][2]string{{"channel", "news"}, {"msg_id", "news-1"}},
		protocol.ChannelTopic("news"), map[string]string{"channel": "news", "msg_id": "news-1"},
	},
	{
		"ws.ch._24user_3aalice", `{"text":"hi alice"}`, [][2]string{{"channel", "$user:alice"}, {"msg_id", "alice-1"}},
		protocol.ChannelTopic(protocol.UserChannelFor("alice")), map[string]string{"channel": "$user:alice", "msg_id": "alice-1"},
	},
}

// TestCLIExample sends the documented `nats pub` lines through the raw client (and through the
// nats CLI when it is installed) and checks that the broker delivers them.
func TestCLIExample(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	node := newNode(t, serverURL(srv), "ws")
	subs := map[string]<-chan *message.Message{}
	for _, ex := range cliExample {
		if nats.Subject("ws", ex.topic) != ex.subject {
			t.Fatalf("documented subject %s is not Subject(ws, %q) = %s", ex.subject, ex.topic, nats.Subject("ws", ex.topic))
		}
		if subs[ex.topic] == nil {
			ch, err := node.Subscribe(t.Context(), ex.topic)
			if err != nil {
				t.Fatal(err)
			}
			subs[ex.topic] = ch
		}
	}
	check := func(t *testing.T, i int) {
		ex := cliExample[i]
		m := transporttest.Receive(t, subs[ex.topic], 1, 10*time.Second)[0]
		if string(m.Payload) != ex.body || m.UUID != "" {
			t.Fatalf("line %d: payload %q uuid %q", i, m.Payload, m.UUID)
		}
		if len(m.Metadata) != len(ex.meta) {
			t.Fatalf("line %d: metadata %v, want %v", i, m.Metadata, ex.meta)
		}
		for k, v := range ex.meta {
			if m.Metadata.Get(k) != v {
				t.Fatalf("line %d: metadata %v, want %v", i, m.Metadata, ex.meta)
			}
		}
	}

	t.Run("GoClient", func(t *testing.T) {
		nc, err := natsgo.Connect(serverURL(srv))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for i, ex := range cliExample {
			msg := &natsgo.Msg{Subject: ex.subject, Data: []byte(ex.body)}
			if ex.headers != nil {
				msg.Header = natsgo.Header{}
				for _, h := range ex.headers {
					msg.Header.Add(h[0], h[1])
				}
			}
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			check(t, i)
		}
	})

	t.Run("CLI", func(t *testing.T) {
		cli, err := exec.LookPath("nats")
		if err != nil {
			t.Skip("nats CLI not installed")
		}
		for i, ex := range cliExample {
			args := []string{"--server", serverURL(srv), "pub", ex.subject, ex.body}
			for _, h := range ex.headers {
				args = append(args, "-H", fmt.Sprintf("%s:%s", h[0], h[1]))
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("nats %v: %v\n%s", args, err, out)
			}
			check(t, i)
		}
	})
}

// TestNewWithConn: the Broker leaves a connection it does not own open, and ends its
// subscriptions on Close.
func TestNewWithConn(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	nc, err := natsgo.Connect(serverURL(srv), natsgo.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	b, err := nats.NewWithConn(nc, nats.Config{Prefix: transporttest.Prefix(t)}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ch, err := b.Subscribe(context.Background(), protocol.TopicEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(protocol.TopicEvents, transporttest.NewMessage("e")); err != nil {
		t.Fatal(err)
	}
	transporttest.Receive(t, ch, 1, 10*time.Second)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("subscription open after Close")
	}
	if nc.IsClosed() || nc.NumSubscriptions() != 0 {
		t.Fatalf("connection closed %v, %d subscriptions left", nc.IsClosed(), nc.NumSubscriptions())
	}
	if err := b.Publish(protocol.TopicEvents, transporttest.NewMessage("x")); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
}

// TestOddMessages: messages the broker cannot turn into watermill messages are dropped and
// the subscription goes on.
func TestOddMessages(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	prefix := transporttest.Prefix(t)
	node := newNode(t, serverURL(srv), prefix)
	topic := protocol.TopicDirect
	ch, err := node.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	subject := nats.Subject(prefix, topic)
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	hpub := func(hdr, body string) string {
		return fmt.Sprintf("HPUB %s %d %d\r\n%s%s\r\n", subject, len(hdr), len(hdr)+len(body), hdr, body)
	}
	raw := `CONNECT {"verbose":false,"headers":true}` + "\r\n" +
		hpub("NATS/1.0 503\r\n\r\n", "") + // no-responders status, empty body
		hpub("NATS/1.0\r\nmsg_id: a\r\nmsg_id: b\r\n\r\n", "twice") + // one key twice
		hpub("NATS/1.0\r\nmsg_id: ok\r\n\r\n", "fine") +
		"PING\r\n"
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the server's answer: %v", err)
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("server: %s", line)
		}
		if strings.HasPrefix(line, "PONG") {
			break
		}
	}
	m := transporttest.Receive(t, ch, 1, 10*time.Second)[0]
	if string(m.Payload) != "fine" || m.Metadata.Get(protocol.MetaMsgID) != "ok" {
		t.Fatalf("got %q %v, want the well-formed message", m.Payload, m.Metadata)
	}
}

// TestHookCalls runs the hook calls suite on an embedded server.
func TestHookCalls(t *testing.T) {
	srv := startServer(t, 0)
	port := srv.Addr().(*net.TCPAddr).Port
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.RunHookCalls(t, transporttest.HookFeatures{RestartBroker: func(t *testing.T) {
		stopServer(srv)
		srv = startServer(t, port)
	}}, func(t *testing.T, prefix string) transports.Broker {
		return newNode(t, url, prefix)
	})
}
