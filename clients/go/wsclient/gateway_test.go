package wsclient_test

// Tests against real in-process gateway nodes (memory broker; nodes of one test share it).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/clients/go/wsclient"
)

func TestRoundTrip(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	alice := dial(t, wsclient.Options{URL: n.URL, Token: allowAll(t, "alice")})
	bob := dial(t, wsclient.Options{URL: n.URL + "/", Token: allowAll(t, "bob")})
	if alice.User() != "alice" || alice.Node() != "node-a" || alice.Session() == "" || alice.Session() == bob.Session() {
		t.Fatalf("welcome: user %q node %q session %q", alice.User(), alice.Node(), alice.Session())
	}
	sub := subscribe(t, alice, "room:1")
	if sub.Position() == "" || sub.Recovered() {
		t.Fatalf("subscription position %q recovered %v", sub.Position(), sub.Recovered())
	}
	last := sub.Position() // before publishing: Position moves as soon as a message is queued
	var acks []wsclient.Ack
	for i := range 5 {
		acks = append(acks, publish(t, bob, "room:1", map[string]int{"n": i}))
	}
	for i, m := range expectData(t, sub.Messages(), `{"n":0}`, `{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`) {
		if m.Channel != "room:1" || m.ID == "" || m.From == nil || m.From.User != "bob" || m.From.Session != bob.Session() || m.Gap {
			t.Fatalf("message %+v", m)
		}
		if !strings.HasPrefix(m.Position, strings.SplitN(last, ":", 2)[0]+":") || m.Position == last {
			t.Fatalf("position %q after %q", m.Position, last)
		}
		last = m.Position
		if acks[i].MsgID == "" || acks[i].Attempts != 1 {
			t.Fatalf("ack %+v", acks[i])
		}
	}
	if sub.Position() != last {
		t.Fatalf("Position %q, last delivered %q", sub.Position(), last)
	}

	// A msg_id given by the application is kept, and a repeat is delivered once.
	if ack := publish(t, bob, "room:1", "x", wsclient.WithMsgID("m-1")); ack.MsgID != "m-1" {
		t.Fatalf("ack %+v", ack)
	}
	publish(t, bob, "room:1", "x", wsclient.WithMsgID("m-1"))
	publish(t, bob, "room:1", "y")
	expectData(t, sub.Messages(), `"x"`, `"y"`)

	// Send goes to the services only; $user, session and broadcast messages arrive.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if ack, err := alice.Send(ctx, map[string]string{"to": "service"}); err != nil || ack.MsgID == "" {
		t.Fatalf("send: %+v %v", ack, err)
	}
	user := subscribe(t, alice, "$user")
	apiPublish(t, n.AltURL, map[string]any{"user": "alice", "data": "for-alice"})
	if m := next(t, user.Messages()); m.Channel != "$user" || string(m.Data) != `"for-alice"` || m.From != nil {
		t.Fatalf("user message %+v", m)
	}
	apiPublish(t, n.AltURL, map[string]any{"session": alice.Session(), "data": "for-session"})
	apiPublish(t, n.AltURL, map[string]any{"broadcast": true, "data": "for-all"})
	if m := next(t, alice.Direct()); m.To != "session" || string(m.Data) != `"for-session"` {
		t.Fatalf("session message %+v", m)
	}
	if m := next(t, alice.Direct()); m.To != "all" || string(m.Data) != `"for-all"` {
		t.Fatalf("broadcast %+v", m)
	}
	if rtt, err := alice.Ping(ctx); err != nil || rtt <= 0 {
		t.Fatalf("ping: %v %v", rtt, err)
	}

	// Unsubscribe closes the channel; the server stops sending (the next frames on the
	// connection are replies, not messages of room:1).
	if err := alice.Unsubscribe(ctx, "room:1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.Messages(); ok {
		t.Fatal("message after unsubscribe")
	}
	if !errors.Is(sub.Err(), wsclient.ErrUnsubscribed) {
		t.Fatalf("Err %v", sub.Err())
	}
	if err := alice.Unsubscribe(ctx, "room:1"); !errors.Is(err, wsclient.ErrNotSubscribed) {
		t.Fatalf("second unsubscribe: %v", err)
	}
	publish(t, bob, "room:1", "unheard")
	again := subscribe(t, alice, "room:1")
	publish(t, bob, "room:1", "heard")
	expectData(t, again.Messages(), `"heard"`)
}

func TestTypedErrors(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	c := dial(t, wsclient.Options{URL: n.URL, Token: token(t, "carol", time.Hour, []string{"room:*"}, []string{"room:*"})})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	var e *wsclient.Error
	ack, err := c.Publish(ctx, "secret", "x")
	if !errors.As(err, &e) || e.Code != wsclient.CodeForbidden || ack.Attempts != 1 {
		t.Fatalf("publish to a forbidden channel: %+v %v", ack, err)
	}
	if _, err := c.Publish(ctx, "$user", "x"); !errors.As(err, &e) || e.Code != wsclient.CodeForbidden {
		t.Fatalf("publish to $user: %v", err)
	}
	if _, err := c.Publish(ctx, "bad channel!", "x"); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
		t.Fatalf("publish to a bad name: %v", err)
	}
	if _, err := c.Subscribe(ctx, "secret"); !errors.As(err, &e) || e.Code != wsclient.CodeForbidden {
		t.Fatalf("subscribe to a forbidden channel: %v", err)
	}
	// A refused subscribe leaves nothing behind: the channel can be tried again.
	if _, err := c.Subscribe(ctx, "secret"); !errors.As(err, &e) || e.Code != wsclient.CodeForbidden {
		t.Fatalf("subscribe again: %v", err)
	}
	if _, err := c.Subscribe(ctx, "room:1", wsclient.WithSince("not-a-position")); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
		t.Fatalf("subscribe with a bad since: %v", err)
	}
	sub := subscribe(t, c, "room:1")
	if _, err := c.Subscribe(ctx, "room:1"); !errors.Is(err, wsclient.ErrAlreadySubscribed) {
		t.Fatalf("subscribe twice: %v", err)
	}
	if err := c.Unsubscribe(ctx, "room:2"); !errors.Is(err, wsclient.ErrNotSubscribed) {
		t.Fatalf("unsubscribe: %v", err)
	}
	publish(t, c, "room:1", "still works")
	expectData(t, sub.Messages(), `"still works"`)

	// Refused upgrades are typed too.
	_, err = wsclient.Dial(ctx, wsclient.Options{URL: n.URL, Token: "garbage"})
	var he *wsclient.HandshakeError
	if !errors.As(err, &he) || he.Status != 401 || he.Code != "unauthorized" {
		t.Fatalf("dial with a bad token: %v", err)
	}
}

// TestReconnectResume: the connection breaks and the node refuses connections for a while;
// what was published meanwhile arrives after the reconnect, once, in order.
func TestReconnectResume(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	var ev events
	c := dial(t, ev.options(wsclient.Options{URL: n.URL, Token: allowAll(t, "alice"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}))
	sub := subscribe(t, c, "r")
	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			apiPublish(t, n.AltURL, map[string]any{"channel": "r", "data": i})
		}
	}
	want := func(from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, strconv.Itoa(i))
		}
		return out
	}
	pub(1, 5)
	expectData(t, sub.Messages(), want(1, 5)...)
	session := c.Session()

	n.Tap.SetDown(true)
	if n.Tap.Cut() != 1 {
		t.Fatal("expected one connection to cut")
	}
	waitDisconnected(t, c)
	pub(6, 20) // while the client is away
	n.Tap.SetDown(false)
	for _, m := range expectData(t, sub.Messages(), want(6, 20)...) {
		if m.Gap {
			t.Fatalf("gap at %+v", m)
		}
	}
	pub(21, 21)
	expectData(t, sub.Messages(), "21")
	// Nothing else is pending: the next message is the marker.
	apiPublish(t, n.AltURL, map[string]any{"channel": "r", "data": "end"})
	expectData(t, sub.Messages(), `"end"`)

	if c.Session() == session {
		t.Fatal("same session after a reconnect")
	}
	if got := ev.resubscribed(); len(got) != 1 || got[0] != "r:true" {
		t.Fatalf("OnResubscribed %v", got)
	}
	if !sub.Recovered() {
		t.Fatal("Recovered false")
	}
	states := fmt.Sprint(ev.stateList())
	if !strings.HasPrefix(states, "[connecting connected disconnected connecting") || !strings.HasSuffix(states, "connected]") {
		t.Fatalf("states %s", states)
	}
}

// TestResumeOnAnotherNode: node A's connections die and it refuses new ones; the client goes to
// node B (the next of its URLs) and resumes there.
func TestResumeOnAnotherNode(t *testing.T) {
	broker, prefix := newBroker(t)
	a := startNode(t, broker, prefix, "node-a")
	b := startNode(t, broker, prefix, "node-b")
	var ev events
	c := dial(t, ev.options(wsclient.Options{URLs: []string{a.URL, b.URL}, Token: allowAll(t, "alice"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}))
	if c.Node() != "node-a" {
		t.Fatalf("first node %s", c.Node())
	}
	sub := subscribe(t, c, "room:x")
	user := subscribe(t, c, "$user")
	for i := 1; i <= 3; i++ {
		apiPublish(t, b.AltURL, map[string]any{"channel": "room:x", "data": i})
	}
	apiPublish(t, b.AltURL, map[string]any{"user": "alice", "data": "u1"})
	expectData(t, sub.Messages(), "1", "2", "3")
	expectData(t, user.Messages(), `"u1"`)

	a.Tap.SetDown(true)
	b.Tap.SetDown(true)
	a.Tap.Cut()
	waitDisconnected(t, c)
	for i := 4; i <= 6; i++ { // through A, which still runs: only its client listener is dead
		apiPublish(t, a.AltURL, map[string]any{"channel": "room:x", "data": i})
	}
	apiPublish(t, a.AltURL, map[string]any{"user": "alice", "data": "u2"})
	b.Tap.SetDown(false)

	expectData(t, sub.Messages(), "4", "5", "6")
	expectData(t, user.Messages(), `"u2"`)
	if c.Node() != "node-b" {
		t.Fatalf("resumed on %s", c.Node())
	}
	apiPublish(t, a.AltURL, map[string]any{"channel": "room:x", "data": 7})
	expectData(t, sub.Messages(), "7")
	waitFor(t, func() error {
		got := ev.resubscribed()
		if len(got) != 2 || !contains(got, "room:x:true") || !contains(got, "$user:true") {
			return fmt.Errorf("OnResubscribed %v", got)
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestDrainMovesToAnotherNode: a draining node says `disconnect` shutdown; the client reconnects
// at once to the other node and resumes.
func TestDrainMovesToAnotherNode(t *testing.T) {
	broker, prefix := newBroker(t)
	a := startNode(t, broker, prefix, "node-a")
	b := startNode(t, broker, prefix, "node-b")
	var ev events
	c := dial(t, ev.options(wsclient.Options{URLs: []string{a.URL, b.URL}, Token: allowAll(t, "alice")}))
	sub := subscribe(t, c, "d")
	apiPublish(t, b.AltURL, map[string]any{"channel": "d", "data": 1})
	expectData(t, sub.Messages(), "1")

	drained := make(chan struct{})
	go func() { defer close(drained); a.G.Drain() }()
	waitFor(t, func() error {
		if c.Node() != "node-b" || c.State() != wsclient.StateConnected {
			return fmt.Errorf("node %s state %v", c.Node(), c.State())
		}
		return nil
	})
	select {
	case <-drained:
	case <-time.After(wait):
		t.Fatal("drain did not end")
	}
	apiPublish(t, b.AltURL, map[string]any{"channel": "d", "data": 2})
	expectData(t, sub.Messages(), "2")
	var de *wsclient.DisconnectError
	if got := ev.disconnected(); len(got) != 1 || !errors.As(got[0], &de) || de.Code != wsclient.DisconnectShutdown || !de.Reconnect {
		t.Fatalf("OnDisconnect %v", got)
	}
}

// TestTokenRefresh: tokens that expire on open connections are replaced by TokenFunc.
func TestTokenRefresh(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	var calls atomic.Int64
	var ev events
	c := dial(t, ev.options(wsclient.Options{URL: n.URL, MinBackoff: 20 * time.Millisecond,
		TokenFunc: func(ctx context.Context) (string, error) {
			calls.Add(1)
			// exp has a one-second resolution: 3 s leaves at least 2 s to connect.
			return token(t, "alice", 3*time.Second, []string{"*"}, []string{"*"}), nil
		}}))
	sub := subscribe(t, c, "t")
	apiPublish(t, n.AltURL, map[string]any{"channel": "t", "data": 1})
	expectData(t, sub.Messages(), "1")
	waitFor(t, func() error {
		if calls.Load() < 3 || c.State() != wsclient.StateConnected {
			return fmt.Errorf("%d tokens, state %v", calls.Load(), c.State())
		}
		return nil
	})
	apiPublish(t, n.AltURL, map[string]any{"channel": "t", "data": 2})
	expectData(t, sub.Messages(), "2")
	var de *wsclient.DisconnectError
	got := ev.disconnected()
	if len(got) < 2 || !errors.As(got[0], &de) || de.Code != wsclient.DisconnectTokenExpired {
		t.Fatalf("OnDisconnect %v", got)
	}
	if c.Err() != nil {
		t.Fatalf("Err %v", c.Err())
	}
}

// TestStaticTokenExpiry: without TokenFunc an expired token cannot be renewed: the client stops.
func TestStaticTokenExpiry(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	c := dial(t, wsclient.Options{URL: n.URL, Token: token(t, "alice", 3*time.Second, []string{"*"}, nil), MinBackoff: 20 * time.Millisecond})
	sub := subscribe(t, c, "t")
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("the client did not stop")
	}
	var he *wsclient.HandshakeError
	if !errors.As(c.Err(), &he) || he.Status != 401 {
		t.Fatalf("Err %v", c.Err())
	}
	if _, ok := <-sub.Messages(); ok {
		t.Fatal("subscription open")
	}
	if c.State() != wsclient.StateClosed {
		t.Fatalf("state %v", c.State())
	}
}

// TestMsgIDKeptAcrossRetry: the ack of a publish is lost with the connection; the client
// publishes again after the reconnect with the same msg_id and the message is delivered once.
func TestMsgIDKeptAcrossRetry(t *testing.T) {
	for _, explicit := range []bool{false, true} {
		t.Run("explicit="+strconv.FormatBool(explicit), func(t *testing.T) {
			broker, prefix := newBroker(t)
			a := startNode(t, broker, prefix, "node-a")
			b := startNode(t, broker, prefix, "node-b")
			reader := dial(t, wsclient.Options{URL: b.AltURL, Token: allowAll(t, "reader")})
			sub := subscribe(t, reader, "m")
			// AckTimeout is long so that the only retry is the one after the cut.
			pub := dial(t, wsclient.Options{URL: a.URL, Token: allowAll(t, "writer"), AckTimeout: 2 * wait,
				MinBackoff: 20 * time.Millisecond})

			a.Tap.Mute() // the publisher's connection: the server's replies are lost
			var opts []wsclient.PublishOption
			if explicit {
				opts = append(opts, wsclient.WithMsgID("fixed-1"))
			}
			type result struct {
				ack wsclient.Ack
				err error
			}
			res := make(chan result, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
				defer cancel()
				ack, err := pub.Publish(ctx, "m", "once", opts...)
				res <- result{ack, err}
			}()
			expectData(t, sub.Messages(), `"once"`) // it reached the broker; its ack did not come back
			a.Tap.Cut()
			r := recvResult(t, res)
			if r.err != nil || r.ack.Attempts != 2 || (explicit && r.ack.MsgID != "fixed-1") {
				t.Fatalf("publish: %+v %v", r.ack, r.err)
			}
			publish(t, pub, "m", "after")
			expectData(t, sub.Messages(), `"after"`) // not a second "once"
		})
	}
}

// TestSlowConsumerResumes: the application stops reading; the reader blocks, the server
// disconnects the client as slow, and once the application reads again everything arrives.
func TestSlowConsumerResumes(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNodeBuf(t, broker, prefix, "node-a", 4096, "GATEWAY_WS_SEND_BUFFER=16")
	var ev events
	dialer := &websocket.Dialer{HandshakeTimeout: wait, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		return conn, err
	}}
	c := dial(t, ev.options(wsclient.Options{URL: n.URL, Token: allowAll(t, "alice"), Dialer: dialer,
		BufferSize: 1, MinBackoff: 20 * time.Millisecond}))
	sub := subscribe(t, c, "s")
	const total = 300
	pad := strings.Repeat("x", 1000)
	for i := 1; i <= total; i++ {
		apiPublish(t, n.AltURL, map[string]any{"channel": "s", "data": map[string]any{"i": i, "pad": pad}})
	}
	waitFor(t, func() error { // the server gave up on the client (and closed its socket)
		if len(n.Tap.open()) != 0 {
			return fmt.Errorf("%d connections open", len(n.Tap.open()))
		}
		return nil
	})
	for i := 1; i <= total; i++ {
		m := next(t, sub.Messages())
		var v struct{ I int }
		if err := m.Decode(&v); err != nil || v.I != i {
			t.Fatalf("message %d: %s (%v)", i, truncate(m.Data), err)
		}
	}
	waitFor(t, func() error { // the replay comes before the reply that ends it
		if got := ev.resubscribed(); len(got) == 0 || got[0] != "s:true" {
			return fmt.Errorf("OnResubscribed %v", got)
		}
		return nil
	})
	t.Logf("disconnects: %v", ev.disconnected())
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// TestCloseStopsEverything: Close is idempotent, ends subscriptions and leaves no goroutine,
// whether connected or in the middle of reconnecting.
func TestCloseStopsEverything(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// A first client warms the node up (some of its goroutines start lazily); then the count
	// of goroutines is what the node alone needs.
	warm, err := wsclient.Dial(ctx, wsclient.Options{URL: n.URL, Token: allowAll(t, "warm")})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, warm, "c", 0)
	expectData(t, subscribe(t, warm, "c").Messages()) // subscribed
	publish(t, warm, "c", 0)
	_ = warm.Close()
	before, beforeClient := settledGoroutines(), clientGoroutines()
	c, err := wsclient.Dial(ctx, wsclient.Options{URL: n.URL, Token: allowAll(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, c, "c")
	publish(t, c, "c", 1)
	expectData(t, sub.Messages(), "1")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.Messages(); ok {
		t.Fatal("subscription open after Close")
	}
	if _, ok := <-c.Direct(); ok {
		t.Fatal("Direct open after Close")
	}
	if c.State() != wsclient.StateClosed || !errors.Is(c.Err(), wsclient.ErrClosed) || !errors.Is(sub.Err(), wsclient.ErrClosed) {
		t.Fatalf("state %v, Err %v, sub.Err %v", c.State(), c.Err(), sub.Err())
	}
	if _, err := c.Publish(ctx, "c", 2); !errors.Is(err, wsclient.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if _, err := c.Subscribe(ctx, "c2"); !errors.Is(err, wsclient.ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}

	// Closed while reconnecting to a node that refuses connections.
	c2, err := wsclient.Dial(ctx, wsclient.Options{URL: n.URL, Token: allowAll(t, "bob"), MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, c2, "c")
	n.Tap.SetDown(true)
	n.Tap.Cut()
	waitDisconnected(t, c2)
	blocked := make(chan error, 1)
	go func() { _, err := c2.Publish(context.Background(), "c", "pending"); blocked <- err }()
	_ = c2.Close()
	if err := recvResult(t, blocked); !errors.Is(err, wsclient.ErrClosed) {
		t.Fatalf("publish pending at Close: %v", err)
	}
	n.Tap.SetDown(false)

	deadline := time.Now().Add(wait)
	for clientGoroutines() > beforeClient || runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("%d goroutines (%d of the client), %d before (%d)", runtime.NumGoroutine(), clientGoroutines(), before, beforeClient)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settledGoroutines is runtime.NumGoroutine once it stopped falling.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return n
		}
		n = m
	}
	return n
}

// clientGoroutines counts the goroutines running code of package wsclient.
func clientGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "/clients/go/wsclient.") {
			n++
		}
	}
	return n
}
