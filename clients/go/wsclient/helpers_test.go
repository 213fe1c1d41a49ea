package wsclient_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/wsclient"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/transports/memory"
)

// wait bounds every wait of these tests (the machine running them may be slow).
const wait = 30 * time.Second

const (
	testSecret = "wsclient-test-secret-0123456789abcdef"
	testAPIKey = "wsclient-test-api-key-0123456789"
)

// dial connects a client and closes it at the end of the test.
func dial(t *testing.T, opts wsclient.Options) *wsclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := wsclient.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func subscribe(t *testing.T, c *wsclient.Client, channel string, opts ...wsclient.SubscribeOption) *wsclient.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := c.Subscribe(ctx, channel, opts...)
	if err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return s
}

func publish(t *testing.T, c *wsclient.Client, channel string, data any, opts ...wsclient.PublishOption) wsclient.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := c.Publish(ctx, channel, data, opts...)
	if err != nil {
		t.Fatalf("publish on %s: %v", channel, err)
	}
	return ack
}

// next returns the next message of ch, failing when none comes in time or ch is closed.
func next(t *testing.T, ch <-chan wsclient.Message) wsclient.Message {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-timer.C:
		t.Fatal("no message in time")
		return wsclient.Message{}
	}
}

// expectData reads len(want) messages and checks their data, in order.
func expectData(t *testing.T, ch <-chan wsclient.Message, want ...string) []wsclient.Message {
	t.Helper()
	out := make([]wsclient.Message, 0, len(want))
	for i, w := range want {
		m := next(t, ch)
		if string(m.Data) != w {
			t.Fatalf("message %d: data %s (position %s), want %s", i, m.Data, m.Position, w)
		}
		out = append(out, m)
	}
	return out
}

// waitFor polls fn until it returns nil, failing with its last error after wait.
func waitFor(t *testing.T, fn func() error) {
	t.Helper()
	poll.Until(t, wait, fn)
}

func token(t *testing.T, user string, ttl time.Duration, channels, publish []string) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, ttl, channels, publish)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func allowAll(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// newBroker is a memory broker the nodes of one test share.
func newBroker(t *testing.T) (*memory.Broker, string) {
	b := memory.NewBroker(memory.Config{HistorySize: 10000})
	t.Cleanup(b.Close)
	var r [4]byte
	_, _ = rand.Read(r[:])
	return b, "wsc" + hex.EncodeToString(r[:])
}

// node is an in-process gateway node served twice: URL goes through a tapListener the test
// controls (cut, refuse, mute), AltURL is a plain listener for publishers and the HTTP API.
type node struct {
	ID     string
	G      *gateway.Gateway
	URL    string
	AltURL string
	Tap    *tapListener
}

func startNode(t *testing.T, broker *memory.Broker, prefix, id string, env ...string) *node {
	t.Helper()
	return startNodeBuf(t, broker, prefix, id, 0, env...)
}

// startNodeBuf is startNode with SO_SNDBUF set to sendBuf on the tapped listener's connections.
func startNodeBuf(t *testing.T, broker *memory.Broker, prefix, id string, sendBuf int, env ...string) *node {
	t.Helper()
	environ := append([]string{
		"GATEWAY_JWT_SECRET=" + testSecret,
		"GATEWAY_API_KEY=" + testAPIKey,
		"GATEWAY_DRAIN_PERIOD=200ms",
		"GATEWAY_NODE_ID=" + id,
	}, env...)
	cfg, err := configs.Load("", environ)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, gateway.WithBroker(broker.Node(prefix)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(g.Handler())
	tap := &tapListener{Listener: srv.Listener, sendBuf: sendBuf, conns: map[*tapConn]struct{}{}}
	srv.Listener = tap
	srv.Start()
	alt := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		tap.Cut()
		srv.Close()
		alt.Close()
		_ = g.Close()
	})
	return &node{ID: id, G: g, URL: srv.URL, AltURL: alt.URL, Tap: tap}
}

var apiClient = &http.Client{Timeout: wait}

// apiPublish publishes through POST /api/publish.
func apiPublish(t *testing.T, base string, body map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", base+"/api/publish", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var out bytes.Buffer
		_, _ = out.ReadFrom(resp.Body)
		t.Fatalf("api publish %s: %d %s", b, resp.StatusCode, out.String())
	}
}

// tapListener lets a test break connections: Cut closes them, SetDown refuses new ones (the
// node looks dead), Mute swallows everything the server writes on the open ones.
type tapListener struct {
	net.Listener
	down    atomic.Bool
	sendBuf int // SO_SNDBUF of accepted connections when > 0

	mu    sync.Mutex
	conns map[*tapConn]struct{}
}

type tapConn struct {
	net.Conn
	l     *tapListener
	muted atomic.Bool
}

func (l *tapListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.down.Load() {
			c.Close()
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok && l.sendBuf > 0 {
			_ = tc.SetWriteBuffer(l.sendBuf)
		}
		tc := &tapConn{Conn: c, l: l}
		l.mu.Lock()
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

func (c *tapConn) Write(b []byte) (int, error) {
	if c.muted.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *tapConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func (l *tapListener) open() []*tapConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*tapConn, 0, len(l.conns))
	for c := range l.conns {
		out = append(out, c)
	}
	return out
}

// Cut closes every open connection and returns how many.
func (l *tapListener) Cut() int {
	conns := l.open()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// SetDown makes the listener refuse (close at once) new connections, or accept them again.
func (l *tapListener) SetDown(down bool) { l.down.Store(down) }

// Mute swallows what the server writes on the connections open now.
func (l *tapListener) Mute() {
	for _, c := range l.open() {
		c.muted.Store(true)
	}
}

// events records the callbacks of a client.
type events struct {
	mu          sync.Mutex
	states      []wsclient.State
	disconnects []error
	resubs      []string
}

func (e *events) options(o wsclient.Options) wsclient.Options {
	o.OnState = func(s wsclient.State) { e.mu.Lock(); e.states = append(e.states, s); e.mu.Unlock() }
	o.OnDisconnect = func(err error) { e.mu.Lock(); e.disconnects = append(e.disconnects, err); e.mu.Unlock() }
	o.OnResubscribed = func(ch string, rec bool) {
		e.mu.Lock()
		e.resubs = append(e.resubs, fmt.Sprintf("%s:%v", ch, rec))
		e.mu.Unlock()
	}
	return o
}

func (e *events) resubscribed() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.resubs...)
}

func (e *events) disconnected() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.disconnects...)
}

func (e *events) stateList() []wsclient.State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]wsclient.State(nil), e.states...)
}

// waitDisconnected waits until c has lost its connection.
func waitDisconnected(t *testing.T, c *wsclient.Client) {
	t.Helper()
	waitFor(t, func() error {
		if s := c.State(); s == wsclient.StateConnected {
			return fmt.Errorf("still %v", s)
		}
		return nil
	})
}
