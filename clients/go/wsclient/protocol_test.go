package wsclient_test

// Protocol tests against a scripted fake server: the cases a real node produces only by
// accident (duplicates at the seam, foreign epochs, refusals of a resubscription, lost acks).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/clients/go/wsclient"
)

// fakeServer accepts WebSocket connections, sends each a welcome, and hands them to the test.
type fakeServer struct {
	URL   string
	conns chan *fakeConn
	n     atomic.Int64
}

type fakeConn struct {
	t      *testing.T
	ws     *websocket.Conn
	header http.Header // of the upgrade request
}

type obj = map[string]any

func newFakeServer(t *testing.T) *fakeServer { return newFakeServerWelcome(t, nil) }

// newFakeServerWelcome is newFakeServer whose welcome frames carry the fields of extra too.
func newFakeServerWelcome(t *testing.T, extra obj) *fakeServer {
	fs := &fakeServer{conns: make(chan *fakeConn, 16)}
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		n := fs.n.Add(1)
		fc := &fakeConn{t: t, ws: ws, header: r.Header.Clone()}
		welcome := obj{"type": "welcome", "session": fmt.Sprintf("s%d", n), "node": "fake", "user": "u"}
		for k, v := range extra {
			welcome[k] = v
		}
		fc.send(welcome)
		fs.conns <- fc
	}))
	t.Cleanup(func() {
		srv.Close()
		for {
			select {
			case fc := <-fs.conns:
				fc.ws.Close()
			default:
				return
			}
		}
	})
	fs.URL = srv.URL
	return fs
}

// next returns the next connection the client made.
func (fs *fakeServer) next(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-fs.conns:
		t.Cleanup(func() { fc.ws.Close() })
		return fc
	case <-time.After(wait):
		t.Fatal("the client did not connect")
		return nil
	}
}

func (fc *fakeConn) send(v obj) {
	fc.t.Helper()
	if err := fc.ws.WriteJSON(v); err != nil {
		fc.t.Errorf("fake server write: %v", err)
	}
}

// read returns the next frame the client sent, skipping keepalive pings.
func (fc *fakeConn) read() obj {
	fc.t.Helper()
	for {
		_ = fc.ws.SetReadDeadline(time.Now().Add(wait))
		var f obj
		if err := fc.ws.ReadJSON(&f); err != nil {
			fc.t.Fatalf("fake server read: %v", err)
		}
		if f["id"] != "keepalive" {
			return f
		}
	}
}

func (fc *fakeConn) expect(typ string) obj {
	fc.t.Helper()
	f := fc.read()
	if f["type"] != typ {
		fc.t.Fatalf("client sent %v, want type %s", f, typ)
	}
	return f
}

func msg(channel, pos string, data any) obj {
	return obj{"type": "message", "channel": channel, "id": fmt.Sprintf("id-%s-%v", pos, data), "position": pos, "data": data}
}

// subscribeAsync runs Subscribe in a goroutine; the result comes on the returned channel.
func subscribeAsync(c *wsclient.Client, channel string, opts ...wsclient.SubscribeOption) <-chan subResult {
	out := make(chan subResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := c.Subscribe(ctx, channel, opts...)
		out <- subResult{s, err}
	}()
	return out
}

type subResult struct {
	sub *wsclient.Subscription
	err error
}

func (r subResult) get(t *testing.T) *wsclient.Subscription {
	t.Helper()
	if r.err != nil {
		t.Fatalf("subscribe: %v", r.err)
	}
	return r.sub
}

func recvResult[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatal("no result in time")
		var zero T
		return zero
	}
}

// resubs records OnResubscribed calls.
type resubs struct {
	mu    sync.Mutex
	calls []string
}

func (r *resubs) add(channel string, recovered bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("%s:%v", channel, recovered))
}

func (r *resubs) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func TestSeamDedupeAndGaps(t *testing.T) {
	fs := newFakeServer(t)
	var rs resubs
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond, OnResubscribed: rs.add})
	fc := fs.next(t)

	res := subscribeAsync(c, "ch")
	f := fc.expect("subscribe")
	if _, ok := f["since"]; ok {
		t.Fatalf("first subscribe has since: %v", f)
	}
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "e:0:0:cc", "recovered": false})
	sub := recvResult(t, res).get(t)
	if sub.Position() != "e:0:0:cc" || sub.Recovered() {
		t.Fatalf("position %q recovered %v", sub.Position(), sub.Recovered())
	}
	fc.send(msg("ch", "e:0:1:cc", 1))
	fc.send(msg("ch", "e:0:2:cc", 2))
	expectData(t, sub.Messages(), "1", "2")

	// The connection breaks: the client resubscribes after the last position it delivered.
	fc.ws.Close()
	fc = fs.next(t)
	f = fc.expect("subscribe")
	if f["since"] != "e:0:2:cc" || f["channel"] != "ch" {
		t.Fatalf("resubscribe %v", f)
	}
	fc.send(msg("ch", "e:0:2:cc", "dup")) // a duplicate at the seam
	fc.send(msg("ch", "e:0:3:cc", 3))
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "e:0:3:cc", "recovered": true})
	fc.send(msg("ch", "e:0:3:cc", "dup"))
	fc.send(msg("ch", "e:0:4:cc", 4))
	fc.send(msg("ch", "weird", 5)) // unparsable positions are never duplicates
	fc.send(msg("ch", "weird", 6))
	fc.send(msg("ch", "f:0:1:cc", 7)) // another epoch is not comparable
	fc.send(msg("ch", "e:0:1:cc", 8)) // nor is the old one, from there
	for i, m := range expectData(t, sub.Messages(), "3", "4", "5", "6", "7", "8") {
		if m.Gap {
			t.Fatalf("message %d has Gap after a recovered resume", i)
		}
	}
	if got := rs.list(); len(got) != 1 || got[0] != "ch:true" {
		t.Fatalf("OnResubscribed calls %v", got)
	}

	// A resubscription that cannot recover marks the next message with Gap.
	fc.ws.Close()
	fc = fs.next(t)
	f = fc.expect("subscribe")
	if f["since"] != "e:0:1:cc" {
		t.Fatalf("resubscribe %v", f)
	}
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "g:0:9:cc", "recovered": false})
	fc.send(msg("ch", "g:0:10:cc", 9))
	fc.send(msg("ch", "g:0:11:cc", 10))
	got := expectData(t, sub.Messages(), "9", "10")
	if !got[0].Gap || got[1].Gap {
		t.Fatalf("Gap flags %v %v, want true false", got[0].Gap, got[1].Gap)
	}
	if sub.Recovered() || sub.Position() != "g:0:11:cc" {
		t.Fatalf("recovered %v position %q", sub.Recovered(), sub.Position())
	}
	if got := rs.list(); len(got) != 2 || got[1] != "ch:false" {
		t.Fatalf("OnResubscribed calls %v", got)
	}
}

func TestPayloadsAndDirect(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL})
	fc := fs.next(t)
	if c.Session() != "s1" || c.Node() != "fake" || c.User() != "u" {
		t.Fatalf("welcome: %q %q %q", c.Session(), c.Node(), c.User())
	}
	res := subscribeAsync(c, "$user")
	f := fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "$user", "position": "e:0:0:cc"})
	sub := recvResult(t, res).get(t)
	fc.send(obj{"type": "message", "channel": "$user", "id": "b", "position": "e:0:1:cc", "data": "AAEC/w==", "encoding": "base64"})
	fc.send(obj{"type": "message", "channel": "$user", "id": "j", "position": "e:0:2:cc", "data": obj{"k": "v"},
		"from": obj{"user": "bob", "session": "s9"}})
	m := next(t, sub.Messages())
	if !m.Binary || m.Data != nil || string(m.Bytes) != "\x00\x01\x02\xff" || m.From != nil {
		t.Fatalf("binary message %+v", m)
	}
	m = next(t, sub.Messages())
	var v struct{ K string }
	if m.Binary || string(m.Data) != `{"k":"v"}` || m.Decode(&v) != nil || v.K != "v" || m.From == nil || m.From.User != "bob" {
		t.Fatalf("json message %+v", m)
	}
	fc.send(obj{"type": "message", "to": "session", "id": "d1", "data": "aGk=", "encoding": "base64"})
	fc.send(obj{"type": "message", "to": "all", "id": "d2", "data": 42})
	if m := next(t, c.Direct()); m.To != "session" || string(m.Bytes) != "hi" || m.ID != "d1" {
		t.Fatalf("direct %+v", m)
	}
	if m := next(t, c.Direct()); m.To != "all" || string(m.Data) != "42" {
		t.Fatalf("broadcast %+v", m)
	}
}

type pubResult struct {
	ack wsclient.Ack
	err error
}

func publishAsync(c *wsclient.Client, data any, opts ...wsclient.PublishOption) <-chan pubResult {
	out := make(chan pubResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		ack, err := c.Publish(ctx, "ch", data, opts...)
		out <- pubResult{ack, err}
	}()
	return out
}

func TestAckRetries(t *testing.T) {
	t.Run("Timeout", func(t *testing.T) {
		fs := newFakeServer(t)
		c := dial(t, wsclient.Options{URL: fs.URL, AckTimeout: 500 * time.Millisecond, MaxRetries: 20})
		fc := fs.next(t)
		res := publishAsync(c, obj{"n": 1})
		first := fc.expect("publish")
		second := fc.expect("publish") // no reply in time: sent again with the same msg_id
		if first["msg_id"] == "" || first["msg_id"] != second["msg_id"] || first["id"] == second["id"] {
			t.Fatalf("attempts %v and %v", first, second)
		}
		if d, _ := json.Marshal(second["data"]); string(d) != `{"n":1}` {
			t.Fatalf("data %s", d)
		}
		// A late ack of the first attempt answers the call.
		fc.send(obj{"type": "ack", "id": first["id"], "msg_id": first["msg_id"]})
		if r := recvResult(t, res); r.err != nil || r.ack.Attempts < 2 || r.ack.MsgID != first["msg_id"] {
			t.Fatalf("publish: %+v %v", r.ack, r.err)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		fs := newFakeServer(t)
		c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: time.Millisecond})
		fc := fs.next(t)
		// unavailable is retried; forbidden is not.
		res := publishAsync(c, "x", wsclient.WithMsgID("mine"))
		f := fc.expect("publish")
		fc.send(obj{"type": "error", "id": f["id"], "code": "unavailable", "message": "broker down"})
		f2 := fc.expect("publish")
		if f2["msg_id"] != "mine" || f2["id"] == f["id"] {
			t.Fatalf("retry %v after %v", f2, f)
		}
		fc.send(obj{"type": "error", "id": f2["id"], "code": "forbidden", "message": "no"})
		r := recvResult(t, res)
		var e *wsclient.Error
		if !errors.As(r.err, &e) || e.Code != wsclient.CodeForbidden || e.Message != "no" || r.ack.Attempts != 2 {
			t.Fatalf("publish: %+v %v", r.ack, r.err)
		}
		// Frames over the limit are refused before they are sent.
		big := make([]byte, 70<<10)
		if _, err := c.Publish(context.Background(), "ch", string(big)); !errors.As(err, &e) || e.Code != wsclient.CodeTooLarge {
			t.Fatalf("big publish: %v", err)
		}
		if _, err := c.Publish(context.Background(), "ch", json.RawMessage("{bad")); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
			t.Fatalf("invalid raw JSON: %v", err)
		}
	})
	t.Run("GiveUp", func(t *testing.T) {
		fs := newFakeServer(t)
		c := dial(t, wsclient.Options{URL: fs.URL, AckTimeout: 100 * time.Millisecond, MaxRetries: 3})
		fc := fs.next(t)
		res := publishAsync(c, "y")
		for range 4 {
			fc.expect("publish")
		}
		r := recvResult(t, res)
		if !errors.Is(r.err, wsclient.ErrAckTimeout) || r.ack.Attempts != 4 {
			t.Fatalf("publish: %+v %v", r.ack, r.err)
		}
	})
}

func TestResubscribeRefused(t *testing.T) {
	fs := newFakeServer(t)
	var rs resubs
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond, OnResubscribed: rs.add})
	fc := fs.next(t)
	subs := map[string]*wsclient.Subscription{}
	for _, ch := range []string{"a", "b", "c"} {
		res := subscribeAsync(c, ch)
		f := fc.expect("subscribe")
		fc.send(obj{"type": "subscribed", "id": f["id"], "channel": ch, "position": "e:0:5:" + ch})
		subs[ch] = recvResult(t, res).get(t)
	}
	fc.ws.Close()
	fc = fs.next(t)
	got := map[string]obj{}
	for range 3 {
		f := fc.expect("subscribe")
		got[f["channel"].(string)] = f
	}
	// a: forbidden now (the new token lost it); b: the position is refused; c: fine.
	fc.send(obj{"type": "error", "id": got["a"]["id"], "code": "forbidden", "message": "not any more"})
	fc.send(obj{"type": "error", "id": got["b"]["id"], "code": "bad_request", "message": "since: malformed position"})
	fc.send(obj{"type": "subscribed", "id": got["c"]["id"], "channel": "c", "position": "e:0:5:c", "recovered": true})
	f := fc.expect("subscribe")
	if f["channel"] != "b" || f["since"] != nil {
		t.Fatalf("after a refused since the client sent %v", f)
	}
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "b", "position": "e:0:9:b", "recovered": false})

	if _, ok := <-subs["a"].Messages(); ok {
		t.Fatal("a message on a refused subscription")
	}
	var e *wsclient.Error
	if err := subs["a"].Err(); !errors.As(err, &e) || e.Code != wsclient.CodeForbidden {
		t.Fatalf("a ended with %v", err)
	}
	fc.send(msg("b", "e:0:10:b", "b1"))
	if m := next(t, subs["b"].Messages()); !m.Gap {
		t.Fatalf("b: %+v", m)
	}
	waitFor(t, func() error {
		if got := fmt.Sprint(rs.list()); got != "[c:true b:false]" {
			return fmt.Errorf("OnResubscribed calls %s", got)
		}
		return nil
	})
	// a is not resubscribed on the next connection.
	fc.ws.Close()
	fc = fs.next(t)
	seen := map[any]bool{}
	for range 2 {
		seen[fc.expect("subscribe")["channel"]] = true
	}
	if !seen["b"] || !seen["c"] {
		t.Fatalf("resubscribed %v", seen)
	}
}

func TestDisconnectFrames(t *testing.T) {
	fs := newFakeServer(t)
	var mu sync.Mutex
	var causes []error
	var states []wsclient.State
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond,
		OnDisconnect: func(err error) { mu.Lock(); causes = append(causes, err); mu.Unlock() },
		OnState:      func(s wsclient.State) { mu.Lock(); states = append(states, s); mu.Unlock() },
	})
	fc := fs.next(t)
	res := subscribeAsync(c, "ch")
	f := fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "e:0:0:cc"})
	sub := recvResult(t, res).get(t)

	// reconnect true: the client comes back.
	fc.send(obj{"type": "disconnect", "code": "slow_consumer", "reason": "send buffer full", "reconnect": true})
	_ = fc.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1013, "slow_consumer"))
	fc.ws.Close()
	fc = fs.next(t)
	f = fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "e:0:0:cc", "recovered": true})
	waitFor(t, func() error {
		if c.State() != wsclient.StateConnected || c.Session() != "s2" {
			return fmt.Errorf("state %v session %s", c.State(), c.Session())
		}
		return nil
	})

	// reconnect false: the client stops and says why.
	fc.send(obj{"type": "disconnect", "code": "policy", "reason": "banned", "reconnect": false})
	_ = fc.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1008, "policy"))
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("the client did not stop")
	}
	var de *wsclient.DisconnectError
	if !errors.As(c.Err(), &de) || de.Code != "policy" || de.Reconnect {
		t.Fatalf("Err %v", c.Err())
	}
	if _, ok := <-sub.Messages(); ok || !errors.As(sub.Err(), &de) {
		t.Fatalf("subscription still open, or ended with %v", sub.Err())
	}
	if _, err := c.Publish(context.Background(), "ch", 1); !errors.Is(err, wsclient.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(causes) != 2 || !errors.As(causes[0], &de) || de.Code != "slow_consumer" {
		t.Fatalf("OnDisconnect %v", causes)
	}
	want := "[connecting connected disconnected connecting connected closed]"
	if fmt.Sprint(states) != want {
		t.Fatalf("states %v, want %s", states, want)
	}
	if fs.n.Load() != 2 {
		t.Fatalf("%d connections", fs.n.Load())
	}
}

// A message id seen recently is a repeat even at another position: one msg_id published through
// two nodes is two broker entries with one id.
func TestRepeatedIDDropped(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond})
	fc := fs.next(t)
	res := subscribeAsync(c, "ch")
	f := fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "ch", "position": "e:0:0:cc", "recovered": false})
	sub := recvResult(t, res).get(t)
	fc.send(obj{"type": "message", "channel": "ch", "id": "same", "position": "e:0:1:cc", "data": 1})
	fc.send(obj{"type": "message", "channel": "ch", "id": "same", "position": "e:0:2:cc", "data": 1})
	fc.send(obj{"type": "message", "channel": "ch", "id": "other", "position": "e:0:3:cc", "data": 2})
	expectData(t, sub.Messages(), "1", "2")
}

type rpcResult struct {
	data json.RawMessage
	err  error
}

// rpcAsync runs RPC in a goroutine, bounded by ctx; the result comes on the returned channel.
func rpcAsync(ctx context.Context, c *wsclient.Client, method string, data any) <-chan rpcResult {
	out := make(chan rpcResult, 1)
	go func() {
		d, err := c.RPC(ctx, method, data)
		out <- rpcResult{d, err}
	}()
	return out
}

func TestRPC(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond})
	fc := fs.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	t.Run("Result", func(t *testing.T) {
		res := rpcAsync(ctx, c, "rooms.list", obj{"page": 2})
		f := fc.expect("rpc")
		if d, _ := json.Marshal(f["data"]); f["method"] != "rooms.list" || string(d) != `{"page":2}` || f["id"] == "" {
			t.Fatalf("rpc frame %v", f)
		}
		fc.send(obj{"type": "rpc_result", "id": f["id"], "data": obj{"rooms": []string{"a", "b"}}})
		if r := recvResult(t, res); r.err != nil || string(r.data) != `{"rooms":["a","b"]}` {
			t.Fatalf("rpc: %s %v", r.data, r.err)
		}
		// No data: no data field sent; a result without data is nil.
		res = rpcAsync(ctx, c, "ping.backend", nil)
		f = fc.expect("rpc")
		if _, ok := f["data"]; ok {
			t.Fatalf("rpc frame without data %v", f)
		}
		fc.send(obj{"type": "rpc_result", "id": f["id"]})
		if r := recvResult(t, res); r.err != nil || r.data != nil {
			t.Fatalf("rpc: %q %v", r.data, r.err)
		}
	})

	t.Run("Errors", func(t *testing.T) {
		// Every refusal is an *Error with the server's code, and none is sent again (the next
		// frame the server reads is the next call's).
		for _, code := range []string{"not_member", wsclient.CodeUnavailable, wsclient.CodeNotFound, wsclient.CodeRateLimited} {
			res := rpcAsync(ctx, c, "m."+code, 1)
			f := fc.expect("rpc")
			if f["method"] != "m."+code {
				t.Fatalf("rpc frame %v: a refused rpc was sent again", f)
			}
			fc.send(obj{"type": "error", "id": f["id"], "code": code, "message": "no " + code})
			var e *wsclient.Error
			if r := recvResult(t, res); !errors.As(r.err, &e) || e.Code != code || e.Message != "no "+code || r.data != nil {
				t.Fatalf("rpc refused with %s: %q %v", code, r.data, r.err)
			}
		}
		// Refused before anything is sent.
		var e *wsclient.Error
		if _, err := c.RPC(ctx, "big", string(make([]byte, 70<<10))); !errors.As(err, &e) || e.Code != wsclient.CodeTooLarge {
			t.Fatalf("big rpc: %v", err)
		}
		if _, err := c.RPC(ctx, "", 1); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
			t.Fatalf("rpc without method: %v", err)
		}
		if _, err := c.RPC(ctx, "m", json.RawMessage("{bad")); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
			t.Fatalf("rpc with invalid raw JSON: %v", err)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
		defer stop()
		res := rpcAsync(short, c, "slow", 1)
		f := fc.expect("rpc")
		r := recvResult(t, res)
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("rpc past its ctx: %q %v", r.data, r.err)
		}
		// Its late result is dropped; the next call gets its own.
		fc.send(obj{"type": "rpc_result", "id": f["id"], "data": "late"})
		res = rpcAsync(ctx, c, "next", 1)
		f = fc.expect("rpc")
		fc.send(obj{"type": "rpc_result", "id": f["id"], "data": "mine"})
		if r := recvResult(t, res); r.err != nil || string(r.data) != `"mine"` {
			t.Fatalf("rpc after a late result: %s %v", r.data, r.err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		// Many calls at once, answered in the reverse order: each gets the result of its id.
		const n = 20
		results := make([]<-chan rpcResult, n)
		for i := range n {
			results[i] = rpcAsync(ctx, c, fmt.Sprintf("m%d", i), i)
		}
		frames := make([]obj, n)
		for i := range n {
			frames[i] = fc.expect("rpc")
		}
		for i := n - 1; i >= 0; i-- {
			f := frames[i]
			fc.send(obj{"type": "rpc_result", "id": f["id"], "data": obj{"method": f["method"], "data": f["data"]}})
		}
		for i, ch := range results {
			r := recvResult(t, ch)
			want := fmt.Sprintf(`{"data":%d,"method":"m%d"}`, i, i)
			if r.err != nil || string(r.data) != want {
				t.Fatalf("rpc %d: %s %v, want %s", i, r.data, r.err, want)
			}
		}
	})

	t.Run("ConnectionLost", func(t *testing.T) {
		// The connection breaks before the result: the call fails and is not sent again.
		res := rpcAsync(ctx, c, "charge", obj{"cents": 100})
		fc.expect("rpc")
		fc.ws.Close()
		if r := recvResult(t, res); !errors.Is(r.err, wsclient.ErrConnectionLost) {
			t.Fatalf("rpc cut by a lost connection: %q %v", r.data, r.err)
		}
		fc = fs.next(t)
		pinged := make(chan error, 1)
		go func() { _, err := c.Ping(ctx); pinged <- err }()
		f := fc.read()
		if f["type"] != "ping" {
			t.Fatalf("first frame on the new connection %v, want the ping (the rpc must not be sent again)", f)
		}
		fc.send(obj{"type": "pong", "id": f["id"]})
		if err := recvResult(t, pinged); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRefresh(t *testing.T) {
	bearer := func(fc *fakeConn) string { return fc.header.Get("Authorization") }
	refreshAsync := func(ctx context.Context, c *wsclient.Client, token string) <-chan error {
		out := make(chan error, 1)
		go func() {
			exp, err := c.Refresh(ctx, token)
			if err == nil && !exp.IsZero() && exp.Unix() != 1900000000 {
				err = fmt.Errorf("expires %v", exp)
			}
			out <- err
		}()
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	t.Run("StaticToken", func(t *testing.T) {
		fs := newFakeServer(t)
		c := dial(t, wsclient.Options{URL: fs.URL, Token: "t1", MinBackoff: 10 * time.Millisecond})
		fc := fs.next(t)
		if got := bearer(fc); got != "Bearer t1" {
			t.Fatalf("first connection with %q", got)
		}
		var exp time.Time
		done := make(chan error, 1)
		go func() {
			var err error
			exp, err = c.Refresh(ctx, "t2")
			done <- err
		}()
		f := fc.expect("refresh")
		if f["token"] != "t2" {
			t.Fatalf("refresh frame %v", f)
		}
		fc.send(obj{"type": "refreshed", "id": f["id"], "expires": 1900000000})
		if err := recvResult(t, done); err != nil || !exp.Equal(time.Unix(1900000000, 0)) {
			t.Fatalf("refresh: %v %v", exp, err)
		}

		// Without a token the server's hook decides; no expiry is the zero time.
		go func() {
			var err error
			exp, err = c.Refresh(ctx, "")
			done <- err
		}()
		f = fc.expect("refresh")
		if _, ok := f["token"]; ok {
			t.Fatalf("refresh frame without a token %v", f)
		}
		fc.send(obj{"type": "refreshed", "id": f["id"], "expires": 0})
		if err := recvResult(t, done); err != nil || !exp.IsZero() {
			t.Fatalf("refresh: %v %v", exp, err)
		}

		// A refused token is an *Error and is not kept.
		res := refreshAsync(ctx, c, "t-bad")
		f = fc.expect("refresh")
		fc.send(obj{"type": "error", "id": f["id"], "code": "unauthorized", "message": "token expired"})
		var e *wsclient.Error
		if err := recvResult(t, res); !errors.As(err, &e) || e.Code != wsclient.CodeUnauthorized {
			t.Fatalf("refused refresh: %v", err)
		}

		// Every reconnection uses the token refreshed last.
		for range 2 {
			fc.ws.Close()
			fc = fs.next(t)
			if got := bearer(fc); got != "Bearer t2" {
				t.Fatalf("reconnected with %q, want the refreshed token", got)
			}
		}
	})

	t.Run("TokenFunc", func(t *testing.T) {
		fs := newFakeServer(t)
		var calls atomic.Int64
		c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond,
			TokenFunc: func(context.Context) (string, error) { return fmt.Sprintf("f%d", calls.Add(1)), nil }})
		fc := fs.next(t)
		if got := bearer(fc); got != "Bearer f1" {
			t.Fatalf("first connection with %q", got)
		}
		res := refreshAsync(ctx, c, "r1")
		f := fc.expect("refresh")
		fc.send(obj{"type": "refreshed", "id": f["id"], "expires": 1900000000})
		if err := recvResult(t, res); err != nil {
			t.Fatal(err)
		}
		// The next attempt uses the refreshed token, without asking TokenFunc; the one after asks.
		fc.ws.Close()
		fc = fs.next(t)
		if got := bearer(fc); got != "Bearer r1" || calls.Load() != 1 {
			t.Fatalf("reconnected with %q after %d TokenFunc calls, want the refreshed token", got, calls.Load())
		}
		fc.ws.Close()
		fc = fs.next(t)
		if got := bearer(fc); got != "Bearer f2" {
			t.Fatalf("reconnected with %q, want TokenFunc's", got)
		}
	})

	t.Run("ContextAndLoss", func(t *testing.T) {
		fs := newFakeServer(t)
		c := dial(t, wsclient.Options{URL: fs.URL, Token: "t1", MinBackoff: 10 * time.Millisecond})
		fc := fs.next(t)
		short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
		defer stop()
		res := refreshAsync(short, c, "t2")
		fc.expect("refresh")
		if err := recvResult(t, res); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("refresh past its ctx: %v", err)
		}
		res = refreshAsync(ctx, c, "t3")
		fc.expect("refresh")
		fc.ws.Close()
		if err := recvResult(t, res); !errors.Is(err, wsclient.ErrConnectionLost) {
			t.Fatalf("refresh cut by a lost connection: %v", err)
		}
		// Neither was accepted: the reconnection keeps the token it had.
		fc = fs.next(t)
		if got := bearer(fc); got != "Bearer t1" {
			t.Fatalf("reconnected with %q", got)
		}
	})
}

func TestHookData(t *testing.T) {
	fs := newFakeServerWelcome(t, obj{"data": obj{"plan": "pro"}})
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond})
	fc := fs.next(t)
	if got := string(c.WelcomeData()); got != `{"plan":"pro"}` {
		t.Fatalf("welcome data %q", got)
	}
	res := subscribeAsync(c, "room")
	f := fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "room", "position": "e:0:0:cc",
		"data": obj{"topic": "hi"}, "expires": 1900000000})
	room := recvResult(t, res).get(t)
	if string(room.Data()) != `{"topic":"hi"}` || !room.Expires().Equal(time.Unix(1900000000, 0)) {
		t.Fatalf("subscription data %q expires %v", room.Data(), room.Expires())
	}
	res = subscribeAsync(c, "plain")
	f = fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "plain", "position": "e:0:0:cc"})
	plain := recvResult(t, res).get(t)
	if plain.Data() != nil || !plain.Expires().IsZero() {
		t.Fatalf("subscription without hook: data %q expires %v", plain.Data(), plain.Expires())
	}
	// A resubscription asks the hook again: its answer replaces the first.
	fc.ws.Close()
	fc = fs.next(t)
	for range 2 {
		f := fc.expect("subscribe")
		r := obj{"type": "subscribed", "id": f["id"], "channel": f["channel"], "position": "e:0:0:cc", "recovered": true}
		if f["channel"] == "room" {
			r["data"] = obj{"topic": "new"}
		}
		fc.send(r)
	}
	waitFor(t, func() error {
		if string(room.Data()) != `{"topic":"new"}` || !room.Expires().IsZero() {
			return fmt.Errorf("after the resubscription: data %q expires %v", room.Data(), room.Expires())
		}
		return nil
	})
}

func TestServerUnsubscribe(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond})
	fc := fs.next(t)
	subs := map[string]*wsclient.Subscription{}
	for _, ch := range []string{"a", "b", "c"} {
		res := subscribeAsync(c, ch)
		f := fc.expect("subscribe")
		fc.send(obj{"type": "subscribed", "id": f["id"], "channel": ch, "position": "e:0:0:" + ch, "expires": 1900000000})
		subs[ch] = recvResult(t, res).get(t)
	}
	// a: its expiry came; b: the backend unsubscribed the user (no reason).
	fc.send(obj{"type": "unsubscribed", "channel": "a", "reason": "expired"})
	fc.send(obj{"type": "unsubscribed", "channel": "b"})
	fc.send(msg("c", "e:0:1:c", "still here"))
	expectData(t, subs["c"].Messages(), `"still here"`)
	for ch, reason := range map[string]string{"a": wsclient.UnsubscribeExpired, "b": ""} {
		select {
		case <-subs[ch].Done():
		case <-time.After(wait):
			t.Fatalf("%s: the subscription did not end", ch)
		}
		if _, ok := <-subs[ch].Messages(); ok {
			t.Fatalf("%s: a message after the server unsubscribed it", ch)
		}
		var ue *wsclient.UnsubscribedError
		err := subs[ch].Err()
		if !errors.As(err, &ue) || ue.Channel != ch || ue.Reason != reason || !errors.Is(err, wsclient.ErrUnsubscribed) {
			t.Fatalf("%s ended with %v", ch, err)
		}
	}
	if err := subs["c"].Err(); err != nil {
		t.Fatalf("c ended with %v", err)
	}
	// Neither is renewed on the next connection; c is.
	fc.ws.Close()
	fc = fs.next(t)
	f := fc.expect("subscribe")
	if f["channel"] != "c" {
		t.Fatalf("resubscribed %v", f)
	}
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "c", "position": "e:0:1:c", "recovered": true})
	// The application may subscribe again.
	res := subscribeAsync(c, "a")
	f = fc.expect("subscribe")
	if f["channel"] != "a" {
		t.Fatalf("client sent %v", f)
	}
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "a", "position": "e:0:5:a"})
	recvResult(t, res).get(t)
}
