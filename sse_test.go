package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

// streamEvent is one event of a one-way stream: a frame with the event id it carried ("" for
// none), or a heartbeat, or the end of the stream (err).
type streamEvent struct {
	id        string
	frame     wstest.Frame
	heartbeat bool
	err       error
}

// streamClient reads GET /sse (Server-Sent Events) or GET /stream (NDJSON) like a browser's
// EventSource would: it keeps the last event id.
type streamClient struct {
	t      testing.TB
	resp   *http.Response
	events chan streamEvent
	lastID string
}

// tryStream opens path (/sse or /stream) on base with the query q, the token in the
// Authorization header (none when empty), and header; a refused request is returned as the
// response, with its body for the caller to close.
func tryStream(t testing.TB, base, path string, q url.Values, token string, header http.Header) (*streamClient, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path+"?"+q.Encode(), nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 { // the caller reads the body and closes it
		return nil, resp
	}
	c := &streamClient{t: t, resp: resp, events: make(chan streamEvent, 1024)}
	t.Cleanup(func() { resp.Body.Close() })
	go c.read(path == "/sse")
	return c, resp
}

func openStream(t testing.TB, base, path string, q url.Values, token string, header http.Header) *streamClient {
	t.Helper()
	c, resp := tryStream(t, base, path, q, token, header)
	if c == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("%s: status %d %s", path, resp.StatusCode, b)
	}
	return c
}

func (c *streamClient) read(sse bool) {
	defer close(c.events)
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	id, data := "", ""
	for sc.Scan() {
		line := sc.Text()
		if !sse {
			var f wstest.Frame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				c.events <- streamEvent{err: err}
				return
			}
			if f.Str("type") == "heartbeat" {
				c.events <- streamEvent{heartbeat: true}
				continue
			}
			c.events <- streamEvent{id: f.Str("event_id"), frame: f}
			continue
		}
		switch {
		case line == "":
			if data != "" {
				var f wstest.Frame
				if err := json.Unmarshal([]byte(data), &f); err != nil {
					c.events <- streamEvent{err: err}
					return
				}
				c.events <- streamEvent{id: id, frame: f}
			}
			id, data = "", ""
		case strings.HasPrefix(line, ":"):
			c.events <- streamEvent{heartbeat: true}
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	c.events <- streamEvent{err: io.EOF}
}

// next returns the next event; heartbeats too when beats is set.
func (c *streamClient) next(beats bool) streamEvent {
	c.t.Helper()
	timeout := time.After(wstest.Timeout)
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				return streamEvent{err: io.EOF}
			}
			if e.heartbeat && !beats {
				continue
			}
			if e.id != "" {
				c.lastID = e.id
			}
			return e
		case <-timeout:
			c.t.Fatal("no stream event in time")
		}
	}
}

// expect reads the next frame and fails unless it is of type typ.
func (c *streamClient) expect(typ string) wstest.Frame {
	c.t.Helper()
	e := c.next(false)
	if e.err != nil || e.frame.Str("type") != typ {
		c.t.Fatalf("got %v (%v), want a %s frame", e.frame, e.err, typ)
	}
	return e.frame
}

func TestStreamResume(t *testing.T) {
	for _, cb := range nodetest.Brokers {
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: each its own prefix (kafka: its own kfake)
			t.Run("SSE", func(t *testing.T) { testStreamResume(t, cb, "/sse") })
			t.Run("NDJSON", func(t *testing.T) { testStreamResume(t, cb, "/stream") })
		})
	}
}

// testStreamResume: a stream of a channel and $user on one node, closed abruptly; the client
// resumes on the other node from the last event id with every message once, or is told
// recovered:false on a broker without history.
func testStreamResume(t *testing.T, cb nodetest.Broker, path string) {
	nodes := cluster(t, cb, 2)
	streamResume(t, cb, path, nodes[0].URL, nodes[1].URL, func() {
		if err := nodes[0].Close(); err != nil { // abruptly: no last event
			t.Fatal(err)
		}
	})
}

// TestStreamResumeAfterSIGKILL is issue 16's "HTTP streaming the same way from Go": two gateway
// node processes on each broker that has a server of its own (jetstream, redis, kafka on an
// in-process kfake, nats), a stream on the first, SIGKILLed; the client resumes on the second from
// its last event id with every message once (recovered:false on nats).
func TestStreamResumeAfterSIGKILL(t *testing.T) {
	for _, cb := range nodetest.Brokers {
		if cb.InProcess {
			continue // memory: its nodes cannot be processes (TestStreamResume covers it)
		}
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: each its own prefix (kafka: its own kfake)
			for _, path := range []string{"/stream", "/sse"} {
				t.Run(path[1:], func(t *testing.T) {
					cluster := cb.Setup(t)
					prefix := cluster.Prefix(t) // its keys and streams go after the nodes died
					env := append([]string{"GATEWAY_JWT_SECRET=" + testSecret, "GATEWAY_API_KEY=" + testAPIKey,
						"GATEWAY_NATS_URL=nats://" + nodetest.NATSAddr, "GATEWAY_REDIS_ADDR=" + nodetest.RedisAddr,
						"GATEWAY_TOPIC_PREFIX=" + prefix}, cluster.Env...)
					a := nodetest.Start(t, append(env, "GATEWAY_NODE_ID=n1")...)
					b := nodetest.Start(t, append(env, "GATEWAY_NODE_ID=n2")...)
					streamResume(t, cb, path, a.URL, b.URL, a.Kill)
				})
			}
		})
	}
}

// streamResume opens a stream of a channel and $user on node a, reads two messages, kills a, and
// resumes on node b from the last event id: every message it missed once (or recovered:false
// with no replay on a broker without history), then live.
func streamResume(t *testing.T, cb nodetest.Broker, path, a, b string, kill func()) {
	t.Helper()
	tok := allowAll(t, "alice")
	q := url.Values{"channel": {"r", "$user"}}
	c := openStream(t, a, path, q, tok, nil)
	c.expect("welcome")
	c.expect("subscribed")
	c.expect("subscribed")
	mustAPIPublish(t, b, map[string]any{"channel": "r", "data": "r1"})
	mustAPIPublish(t, b, map[string]any{"user": "alice", "data": "u1"})
	got := map[string]bool{}
	for range 2 {
		got[c.expect("message").Data()] = true
	}
	if !got[`"r1"`] || !got[`"u1"`] {
		t.Fatalf("got %v", got)
	}
	last := c.lastID
	kill()
	if e := c.next(false); e.err == nil { // the stream ends with its node, with no last event
		t.Fatalf("the stream of the node killed went on: %v", e.frame)
	}
	mustAPIPublish(t, b, map[string]any{"channel": "r", "data": "r2"})
	mustAPIPublish(t, b, map[string]any{"user": "alice", "data": "u2"})
	mustAPIPublish(t, b, map[string]any{"channel": "r", "data": "r3"})

	q2 := url.Values{"channel": q["channel"]}
	var header http.Header
	if path == "/sse" {
		header = http.Header{"Last-Event-Id": {last}}
	} else {
		q2.Set("since", last)
	}
	r := openStream(t, b, path, q2, tok, header)
	r.expect("welcome")
	var replayed []string
	for subscribed := 0; subscribed < 2; {
		f := r.expect2("message", "subscribed")
		if f.Str("type") == "message" {
			replayed = append(replayed, f.Str("channel")+"="+f.Data())
			continue
		}
		subscribed++
		if f.Bool("recovered") != cb.History {
			t.Fatalf("%s: %v", cb.Name, f)
		}
	}
	want := []string{`r="r2"`, `r="r3"`, `$user="u2"`}
	if !cb.History {
		want = nil
	}
	if strings.Join(replayed, " ") != strings.Join(want, " ") {
		t.Fatalf("replayed %v, want %v", replayed, want)
	}
	// Live, once each.
	for _, d := range []string{"r4", "r5"} {
		mustAPIPublish(t, b, map[string]any{"channel": "r", "data": d})
		if m := r.expect("message"); m.Data() != `"`+d+`"` {
			t.Fatalf("got %v, want %s", m, d)
		}
	}
}

// expect2 reads the next frame and fails unless it is of type a or b.
func (c *streamClient) expect2(a, b string) wstest.Frame {
	c.t.Helper()
	e := c.next(false)
	if e.err != nil || (e.frame.Str("type") != a && e.frame.Str("type") != b) {
		c.t.Fatalf("got %v (%v), want a %s or %s frame", e.frame, e.err, a, b)
	}
	return e.frame
}

// Every refusal of a stream comes before it starts, as a status with a JSON error.
func TestStreamRefusals(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_LIMITS_CONNECTIONS_PER_USER=1", "GATEWAY_STREAM_MAX_CHANNELS=2"))
	newsOnly := token(t, "bob", time.Hour, []string{"news"}, nil)
	for _, tc := range []struct {
		name   string
		q      url.Values
		token  string
		header http.Header
		status int
		code   string
	}{
		{"too many channels", url.Values{"channel": {"news", "public", "$user"}}, newsOnly, nil, 400, "bad_request"},
		{"a bad name", url.Values{"channel": {"no spaces"}}, newsOnly, nil, 400, "bad_request"},
		{"a channel twice", url.Values{"channel": {"news", "news"}}, newsOnly, nil, 400, "bad_request"},
		{"no token", url.Values{"channel": {"news"}}, "", nil, 401, "unauthorized"},
		{"a bad token", url.Values{"channel": {"news"}, "token": {"x.y.z"}}, "", nil, 401, "unauthorized"},
		{"a forbidden channel", url.Values{"channel": {"news", "secret"}}, newsOnly, nil, 403, "forbidden"},
		{"an origin not allowed", url.Values{"channel": {"news"}}, newsOnly, http.Header{"Origin": {"https://evil.example"}}, 403, "forbidden"},
	} {
		for _, path := range []string{"/sse", "/stream"} {
			c, resp := tryStream(t, n.URL, path, tc.q, tc.token, tc.header)
			if c != nil {
				t.Fatalf("%s %s: the stream started", path, tc.name)
			}
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || body.Error.Code != tc.code || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: %d %q (%s), want %d %q", path, tc.name, resp.StatusCode, body.Error.Code, resp.Header.Get("Content-Type"), tc.status, tc.code)
			}
		}
	}
	// A public channel and $user need no claim; the token may come in the query (EventSource).
	c := openStream(t, n.URL, "/sse", url.Values{"channel": {"news", "public"}, "token": {newsOnly}}, "", nil)
	c.expect("welcome")
	c.expect("subscribed")
	c.expect("subscribed")
	// The connection limit counts streams and WebSockets alike.
	if _, resp := tryStream(t, n.URL, "/stream", url.Values{"channel": {"news"}}, newsOnly, nil); resp.Body.Close() != nil || resp.StatusCode != 429 {
		t.Fatalf("a second connection of bob: %d, want 429", resp.StatusCode)
	}
	if _, resp, err := wstest.TryDial(t, n.URL, newsOnly, nil); err == nil || resp.StatusCode != 429 {
		t.Fatalf("a WebSocket beside bob's stream: %v", err)
	}
}

// A draining node ends a stream with a disconnect event (shutdown, reconnect) and refuses new
// ones; heartbeats keep an idle stream alive past the HTTP read timeout.
func TestStreamDrainAndHeartbeat(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_STREAM_HEARTBEAT=20ms", "GATEWAY_HTTP_READ_TIMEOUT=100ms"))
	sse := openStream(t, n.URL, "/sse", url.Values{"channel": {"$user"}}, allowAll(t, "alice"), nil)
	nd := openStream(t, n.URL, "/stream", url.Values{"channel": {"$user"}}, allowAll(t, "bob"), nil)
	for _, c := range []*streamClient{sse, nd} {
		c.expect("welcome")
		c.expect("subscribed")
		// Heartbeats come for longer than the read timeout, and the stream still works.
		deadline := time.Now().Add(300 * time.Millisecond)
		for beats := 0; beats < 3 || time.Now().Before(deadline); beats++ {
			if e := c.next(true); !e.heartbeat {
				t.Fatalf("got %v (%v), want a heartbeat", e.frame, e.err)
			}
		}
	}
	mustAPIPublish(t, n.URL, map[string]any{"user": "alice", "data": "still"})
	if m := sse.expect("message"); m.Data() != `"still"` {
		t.Fatalf("got %v", m)
	}
	done := make(chan struct{})
	go func() { defer close(done); n.Drain() }()
	for _, c := range []*streamClient{sse, nd} {
		d := c.expect("disconnect")
		if d.Str("code") != "shutdown" || !d.Bool("reconnect") {
			t.Fatalf("disconnect %v", d)
		}
		for e := c.next(true); e.err == nil; e = c.next(true) {
			if !e.heartbeat {
				t.Fatalf("after the disconnect: %v", e.frame)
			}
		}
	}
	if _, resp := tryStream(t, n.URL, "/sse", url.Values{"channel": {"$user"}}, allowAll(t, "carol"), nil); resp.Body.Close() != nil || resp.StatusCode != 503 {
		t.Fatalf("a stream while draining: %d, want 503", resp.StatusCode)
	}
	<-done
}

// The hooks are asked about a stream as about a WebSocket, told its transport; a channel the
// subscribe hook refuses comes as an error event answering that channel's subscribe, and the
// other channels stream.
func TestStreamHooks(t *testing.T) {
	b := newHookBackend(t, func(req protocol.HookRequest) *protocol.HookReply {
		if req.Hook == protocol.HookSubscribe && req.Channel == "room:closed" {
			return deny("closed", "the room is closed")
		}
		return nil
	})
	n := startNode(t, testConfig(t, append(hookEnv(b.URL, "connect", "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*")...))
	tok := token(t, "alice", time.Hour, []string{"news"}, nil) // not room:*: the hook decides there
	for _, path := range []string{"/sse", "/stream"} {
		c := openStream(t, n.URL, path, url.Values{"channel": {"news", "room:closed", "room:open"}}, tok, nil)
		c.expect("welcome")
		got := map[string]string{}
		for range 3 {
			f := c.expect2("subscribed", "error")
			got[f.Str("id")] = f.Str("type") + " " + f.Str("channel") + f.Str("code")
		}
		if got["1"] != "subscribed news" || got["2"] != "error closed" || got["3"] != "subscribed room:open" {
			t.Fatalf("%s: %v", path, got)
		}
		mustAPIPublish(t, n.URL, map[string]any{"channel": "room:open", "data": path})
		if m := c.expect("message"); m.Data() != `"`+path+`"` {
			t.Fatalf("%s: %v", path, m)
		}
		want := map[string]string{"/sse": "sse", "/stream": "stream"}[path]
		for _, hook := range []string{protocol.HookConnect, protocol.HookSubscribe} {
			reqs := b.requests(hook)
			if last := reqs[len(reqs)-1]; last.Transport != want {
				t.Errorf("%s: the %s hook was told transport %q", path, hook, last.Transport)
			}
		}
	}
}

// An event id given as ?last_event_id= resumes like the header; one that is not an id of this
// stream (garbage, another channel list) resumes nothing: recovered:false, no replay.
func TestStreamEventIDs(t *testing.T) {
	n := startNode(t, testConfig(t))
	tok := allowAll(t, "alice")
	c := openStream(t, n.URL, "/sse", url.Values{"channel": {"a", "b"}}, tok, nil)
	c.expect("welcome")
	c.expect("subscribed")
	c.expect("subscribed")
	mustAPIPublish(t, n.URL, map[string]any{"channel": "a", "data": 1})
	c.expect("message")
	id := c.lastID
	mustAPIPublish(t, n.URL, map[string]any{"channel": "a", "data": 2})
	mustAPIPublish(t, n.URL, map[string]any{"channel": "b", "data": 3})
	for _, tc := range []struct {
		name     string
		channels []string
		id       string
		replay   []string
	}{
		{"the query", []string{"a", "b"}, id, []string{"2", "3"}},
		{"garbage", []string{"a", "b"}, "1.x:y.z", nil},
		{"the channels swapped", []string{"b", "a"}, id, nil},
		{"another channel list", []string{"a"}, id, nil},
	} {
		r := openStream(t, n.URL, "/sse", url.Values{"channel": tc.channels, "last_event_id": {tc.id}}, tok, nil)
		r.expect("welcome")
		var replay []string
		for subscribed := 0; subscribed < len(tc.channels); {
			f := r.expect2("message", "subscribed")
			if f.Str("type") == "message" {
				replay = append(replay, f.Data())
				continue
			}
			subscribed++
			if f.Bool("recovered") != (tc.replay != nil) {
				t.Fatalf("%s: %v", tc.name, f)
			}
		}
		if strings.Join(replay, ",") != strings.Join(tc.replay, ",") {
			t.Fatalf("%s: replayed %v, want %v", tc.name, replay, tc.replay)
		}
	}
}

// TestStreamEndsWithNode: the node's Close returns once the streams that took their connection
// over have ended: no goroutine of theirs (the writer, the reader waiting for the client) is
// left, and the client sees its stream end.
func TestStreamEndsWithNode(t *testing.T) {
	n := startNode(t, testConfig(t))
	sse := openStream(t, n.URL, "/sse", url.Values{"channel": {"$user"}}, allowAll(t, "alice"), nil)
	sse.expect("welcome")
	sse.expect("subscribed")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"stream.(*Hijacked)", "handlers.(*HTTP).goStream", "handlers.(*HTTP).serveOn"} {
		if strings.Contains(stacks, f) {
			t.Errorf("a goroutine in %s is left after the node's Close", f)
		}
	}
	for e := sse.next(true); e.err == nil; e = sse.next(true) {
	}
}
