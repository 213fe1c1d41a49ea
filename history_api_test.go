package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// historyNodes starts two nodes on one cluster of cb, with env added to their settings, and
// waits until both are ready.
func historyNodes(t testing.TB, newBroker func(t testing.TB, prefix string) transports.Broker, env ...string) [2]*node {
	t.Helper()
	prefix := transporttest.Prefix(t)
	var nodes [2]*node
	for i := range nodes {
		cfg := testConfig(t, append([]string{"GATEWAY_NODE_ID=hist" + strconv.Itoa(i+1)}, env...)...)
		nodes[i] = startNode(t, cfg, gateway.WithBroker(newBroker(t, prefix)))
		wstest.WaitFor(t, func() error {
			if s := readyStatus(nodes[i].URL); s != 200 {
				return fmt.Errorf("/readyz %d", s)
			}
			return nil
		})
	}
	return nodes
}

// publishN publishes data 0..n-1 to channel through the API of the node at base and returns
// the positions the API answered.
func publishN(t *testing.T, base, channel string, n int) []string {
	t.Helper()
	var pos []string
	for i := 0; i < n; i++ {
		status, out := apiPublish(t, base, map[string]any{"channel": channel, "data": i})
		p, _ := out["position"].(string)
		if status != 200 || p == "" {
			t.Fatalf("publish %d to %s: %d %v; want 200 with a position", i, channel, status, out)
		}
		pos = append(pos, p)
	}
	return pos
}

// historyPage is GET /api/history's answer: the data of its messages, and next.
func historyPage(t *testing.T, base string, q url.Values) (status int, data []string, next string, out map[string]any) {
	t.Helper()
	status, out = apiGet(t, base, "/api/history", q)
	msgs, _ := out["messages"].([]any)
	for _, m := range msgs {
		f := m.(map[string]any)
		if f["type"] != "message" || f["channel"] != q.Get("channel") || f["position"] == "" || f["id"] == "" {
			t.Fatalf("history message %v is not a message frame of %s", f, q.Get("channel"))
		}
		b, _ := json.Marshal(f["data"])
		data = append(data, string(b))
	}
	next, _ = out["next"].(string)
	return status, data, next, out
}

func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// TestHistoryAPIAndFrame: on every broker with history, two nodes: positions answered by the
// publish API (and the batch, and a client's ack) are the ones subscribers see and resume from
// exactly the next message; GET /api/history and the history frame page forwards and backwards;
// limit, history.max_replay and the channel rules (count, age) bound them; the frame is refused
// on channels the client may not subscribe to; GET /api/position is the channel's current
// position. Core NATS answers unavailable and gives no positions.
func TestHistoryAPIAndFrame(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel()
			nodes := historyNodes(t, cb.Setup(t).New, "GATEWAY_HISTORY_MAX_REPLAY=8",
				"GATEWAY_HISTORY_CHANNELS=short:*=3,stale:*=/300ms")
			a, b := nodes[0].URL, nodes[1].URL
			if !cb.History {
				testNoHistory(t, a)
				return
			}

			// Positions on publish: each resumes, on the other node, from exactly the next one.
			live, _ := wstest.Dial(t, b, allowAll(t, "alice"))
			live.Subscribe("logs")
			pos := publishN(t, a, "logs", 10)
			for i := range pos {
				f := live.Expect("message")
				if f.Str("position") != pos[i] || f.Data() != strconv.Itoa(i) {
					t.Fatalf("live message %d: %v; the API said position %s", i, f, pos[i])
				}
			}
			for _, i := range []int{1, 4, 9} {
				got, ok := resumeOn(t, b, "alice", "logs", pos[i])
				want := []string{}
				for j := i + 1; j < 10; j++ {
					want = append(want, strconv.Itoa(j))
				}
				if !ok || strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("resume from the published position %d: %v recovered %v; want %v", i, got, ok, want)
				}
			}
			// The batch answers a position per message, and a client's ack carries its own.
			batch := apiBatch(t, a, []map[string]any{{"channel": "logs", "data": 10}, {"broadcast": true, "data": "x"}, {"channel": "logs", "data": 11}})
			pub, _ := wstest.Dial(t, a, allowAll(t, "bob"))
			pub.Send(map[string]any{"type": "publish", "id": "pub", "channel": "logs", "data": 12})
			ack := pub.Next()
			for ack.Str("type") == "message" && ack.Str("to") == "all" { // the batch's broadcast may reach this new connection first
				ack = pub.Next()
			}
			if ack.Str("type") != "ack" {
				t.Fatalf("publish: got %v, want an ack", ack)
			}
			for i, want := range []string{batch[0], "", batch[2], ack.Str("position")} {
				if i == 1 {
					if want != "" {
						t.Fatalf("a broadcast in a batch has a position: %q", want)
					}
					continue
				}
				f := live.Expect("message")
				for f.Str("to") == "all" { // the batch's broadcast
					f = live.Expect("message")
				}
				if want == "" || f.Str("position") != want {
					t.Fatalf("message %v: the publisher was told position %q", f, want)
				}
			}

			// The current position: what comes after it is what is published next.
			_, cur := apiGet(t, a, "/api/position", q("channel", "logs"))
			if cur["position"] != ack.Str("position") {
				t.Fatalf("/api/position = %v; want the last published %s", cur, ack.Str("position"))
			}
			publishN(t, a, "logs", 1)
			if got, ok := resumeOn(t, b, "alice", "logs", cur["position"].(string)); !ok || strings.Join(got, ",") != "0" {
				t.Fatalf("resume from /api/position: %v %v; want [0] true", got, ok)
			}

			// Paging over 10 messages of a channel of its own.
			pos = publishN(t, a, "page", 10)
			check := func(what string, query url.Values, want, wantNext string) string {
				t.Helper()
				status, data, next, out := historyPage(t, b, query)
				if status != 200 || strings.Join(data, ",") != want || (next != "") != (wantNext != "") || (wantNext != "" && wantNext != "any" && next != wantNext) {
					t.Fatalf("%s: %d %v next %q; want [%s] next %q (%v)", what, status, data, next, want, wantNext, out)
				}
				return next
			}
			// Forward from a position, following next.
			next := check("forward from 1", q("channel", "page", "since", pos[1], "limit", "3"), "2,3,4", pos[4])
			next = check("forward page 2", q("channel", "page", "since", next, "limit", "3"), "5,6,7", pos[7])
			check("forward page 3", q("channel", "page", "since", next, "limit", "3"), "8,9", "")
			check("forward from the last", q("channel", "page", "since", pos[9]), "", "")
			// Without since: the newest, oldest first; max_replay (8) caps the page.
			check("newest 3", q("channel", "page", "limit", "3"), "7,8,9", "")
			check("newest, capped by max_replay", q("channel", "page", "limit", "100"), "2,3,4,5,6,7,8,9", "")
			// Backwards, following next.
			next = check("reverse", q("channel", "page", "reverse", "true", "limit", "4"), "9,8,7,6", pos[6])
			next = check("reverse page 2", q("channel", "page", "reverse", "true", "limit", "4", "since", next), "5,4,3,2", pos[2])
			check("reverse page 3", q("channel", "page", "reverse", "true", "limit", "4", "since", next), "1,0", "")

			// Bounds: limit, malformed since, a since of another channel.
			for _, bad := range []url.Values{
				q("channel", "page", "limit", "0"), q("channel", "page", "limit", "1001"),
				q("channel", "page", "since", "nope"), q("channel", "logs", "since", pos[3]),
				q("channel", "page", "reverse", "maybe"), q("channel", "$user"),
			} {
				if status, out := apiGet(t, b, "/api/history", bad); status != 400 || out["error"] == nil {
					t.Fatalf("/api/history?%s: %d %v; want 400", bad.Encode(), status, out)
				}
			}
			// The count rule (short:* keeps 3): no read reaches past the newest 3.
			pos = publishN(t, a, "short:a", 5)
			check("short, newest", q("channel", "short:a", "limit", "10"), "2,3,4", "")
			check("short, reverse", q("channel", "short:a", "reverse", "1"), "4,3,2", "")
			check("short, reverse from 4", q("channel", "short:a", "reverse", "1", "since", pos[4]), "3,2", "")
			check("short, reverse from 2", q("channel", "short:a", "reverse", "1", "since", pos[2]), "", "")
			check("short, forward from 1", q("channel", "short:a", "since", pos[1]), "2,3,4", "")
			if status, out := apiGet(t, b, "/api/history", q("channel", "short:a", "since", pos[0])); status != 404 || out["error"] == nil {
				t.Fatalf("forward from beyond the count rule: %d %v; want 404 not_found", status, out)
			}
			// The age rule (stale:* keeps 300 ms): once older, nothing is read.
			stale := publishN(t, a, "stale:a", 2)
			wstest.WaitFor(t, func() error {
				if status, data, _, _ := historyPage(t, b, q("channel", "stale:a")); status != 200 || len(data) != 0 {
					return fmt.Errorf("stale:a: %d %v; want nothing once older than 300ms", status, data)
				}
				return nil
			})
			if status, out := apiGet(t, b, "/api/history", q("channel", "stale:a", "since", stale[0])); status != 404 {
				t.Fatalf("forward from before messages past the age rule: %d %v; want 404 not_found", status, out)
			}

			// The history frame: the same pages, for channels the client may subscribe to.
			c, _ := wstest.Dial(t, b, token(t, "carol", time.Hour, []string{"page", "room:*"}, nil))
			c.Send(map[string]any{"type": "history", "id": "h1", "channel": "page", "limit": 2, "reverse": true})
			h := c.Expect("history")
			msgs, _ := h["messages"].([]any)
			if h.Str("id") != "h1" || h.Str("channel") != "page" || len(msgs) != 2 || h.Str("next") == "" {
				t.Fatalf("history frame: %v", h)
			}
			c.Send(map[string]any{"type": "history", "id": "h2", "channel": "page", "limit": 2, "since": h.Str("next")})
			h = c.Expect("history")
			if msgs, _ = h["messages"].([]any); len(msgs) != 1 || fmt.Sprint(msgs[0].(map[string]any)["data"]) != "9" {
				t.Fatalf("history frame forward from next: %v; want the message 9 alone", h)
			}
			for _, bad := range []struct {
				frame map[string]any
				code  string
			}{
				{map[string]any{"type": "history", "id": "f", "channel": "logs"}, "forbidden"},
				{map[string]any{"type": "history", "id": "f", "channel": "page", "limit": 1001}, "bad_request"},
				{map[string]any{"type": "history", "id": "f", "channel": "page", "since": pos[0]}, "bad_request"},
				{map[string]any{"type": "subscribe", "id": "f", "channel": "page", "rewind": 9}, "bad_request"},
				{map[string]any{"type": "subscribe", "id": "f", "channel": "page", "rewind": 2, "since": pos[0]}, "bad_request"},
			} {
				c.Send(bad.frame)
				if e := c.Expect("error"); e.Str("code") != bad.code || e.Str("id") != "f" {
					t.Fatalf("%v: %v; want %s", bad.frame, e, bad.code)
				}
			}
			c.Send(map[string]any{"type": "history", "id": "h3", "channel": "room:empty"})
			if h = c.Expect("history"); h["messages"] == nil || len(h["messages"].([]any)) != 0 {
				t.Fatalf("history of an empty channel: %v", h)
			}

			// Rewind: the newest N, then subscribed (recovered), then live.
			c.Send(map[string]any{"type": "subscribe", "id": "rw", "channel": "page", "rewind": 3})
			var got []string
			for f := c.Next(); ; f = c.Next() {
				if f.Str("type") == "subscribed" {
					if !f.Bool("recovered") || f.Str("position") != publishedLast(t, a, "page") {
						t.Fatalf("subscribed after a rewind: %v", f)
					}
					break
				}
				got = append(got, f.Data())
			}
			if strings.Join(got, ",") != "7,8,9" {
				t.Fatalf("rewind 3: %v; want 7,8,9", got)
			}
			publishN(t, a, "page", 1)
			if f := c.Expect("message"); f.Data() != "0" {
				t.Fatalf("live after a rewind: %v", f)
			}
		})
	}
}

// publishedLast is GET /api/position of channel.
func publishedLast(t *testing.T, base, channel string) string {
	t.Helper()
	status, out := apiGet(t, base, "/api/position", q("channel", channel))
	if status != 200 {
		t.Fatalf("/api/position: %d %v", status, out)
	}
	return out["position"].(string)
}

// testNoHistory: a broker that keeps no history answers the history and position API and the
// history frame unavailable, gives no positions on publish, and a rewind says recovered:false.
func testNoHistory(t *testing.T, base string) {
	for _, path := range []string{"/api/history", "/api/position"} {
		status, out := apiGet(t, base, path, q("channel", "logs"))
		e, _ := out["error"].(map[string]any)
		if status != 503 || e["code"] != "unavailable" || !strings.Contains(fmt.Sprint(e["message"]), "no history") {
			t.Fatalf("%s: %d %v; want 503 unavailable, no history", path, status, out)
		}
	}
	if status, out := apiPublish(t, base, map[string]any{"channel": "logs", "data": 1}); status != 200 || out["position"] != nil {
		t.Fatalf("publish: %d %v; want 200 without a position", status, out)
	}
	c, _ := wstest.Dial(t, base, allowAll(t, "alice"))
	c.Send(map[string]any{"type": "history", "id": "h", "channel": "logs"})
	if e := c.Expect("error"); e.Str("code") != "unavailable" {
		t.Fatalf("history frame: %v", e)
	}
	c.Send(map[string]any{"type": "subscribe", "id": "s", "channel": "logs", "rewind": 3})
	if f := c.Expect("subscribed"); f.Bool("recovered") {
		t.Fatalf("rewind without history: %v; want recovered false", f)
	}
}

// apiBatch posts messages to /api/batch and returns the position of each result ("" for none).
func apiBatch(t *testing.T, base string, messages []map[string]any) []string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"messages": messages})
	req, _ := http.NewRequest("POST", base+"/api/batch", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			ID       string `json:"id"`
			Position string `json:"position"`
			Error    any    `json:"error"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Results) != len(messages) {
		t.Fatalf("batch: %d %v %+v", resp.StatusCode, err, out)
	}
	pos := make([]string, len(out.Results))
	for i, r := range out.Results {
		if r.Error != nil || r.ID == "" {
			t.Fatalf("batch result %d: %+v", i, r)
		}
		pos[i] = r.Position
	}
	return pos
}

// TestRewindSeam: on every broker with history, clients subscribe with rewind (and one resumes
// with since) on one node while a service publishes through the other without pause: each gets
// the newest messages (or what it missed), then live, every message once and none missing
// between them.
func TestRewindSeam(t *testing.T) {
	for _, cb := range clusterBrokers {
		if !cb.History {
			continue
		}
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel()
			nodes := historyNodes(t, cb.Setup(t).New)
			const total, rewind = 300, 5
			var (
				mu        sync.Mutex
				published int
				positions []string
				failed    error
			)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < total; i++ {
					b, _ := json.Marshal(map[string]any{"channel": "seam", "data": i})
					req, _ := http.NewRequest("POST", nodes[0].URL+"/api/publish", bytes.NewReader(b))
					req.Header.Set("Authorization", "Bearer "+testAPIKey)
					resp, err := http.DefaultClient.Do(req)
					var out struct{ Position string }
					if err == nil {
						err = json.NewDecoder(resp.Body).Decode(&out)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					mu.Lock()
					if err != nil && failed == nil {
						failed = err
					}
					positions = append(positions, out.Position)
					published = i + 1
					mu.Unlock()
				}
			}()
			// Subscribers join at several moments of the stream, and read concurrently: three
			// with rewind, one resuming (since) from 10 messages back, the same seam.
			type result struct {
				got     []int
				rewound int
				from    int // the first message expected (-1: any, with rewind)
				err     error
			}
			results := make(chan result, 4)
			for k, at := range []int{20, 100, 150, 200} {
				wstest.WaitFor(t, func() error {
					mu.Lock()
					defer mu.Unlock()
					if published < at {
						return fmt.Errorf("%d published", published)
					}
					return nil
				})
				c, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice"))
				frame := map[string]any{"type": "subscribe", "id": "s", "channel": "seam", "rewind": rewind}
				from := -1
				if k == 2 {
					mu.Lock()
					from = published - 10
					frame = map[string]any{"type": "subscribe", "id": "s", "channel": "seam", "since": positions[from-1]}
					mu.Unlock()
				}
				c.Send(frame)
				go func() {
					r := result{rewound: -1, from: from}
					defer func() { results <- r }()
					for r.rewound < 0 || len(r.got) == 0 || r.got[len(r.got)-1] != total-1 {
						f, err := c.Read(wstest.Timeout)
						if err != nil {
							r.err = fmt.Errorf("after %v: %w", r.got, err)
							return
						}
						switch f.Str("type") {
						case "subscribed":
							if !f.Bool("recovered") {
								r.err = fmt.Errorf("subscribed after a rewind: %v", f)
								return
							}
							r.rewound = len(r.got)
						case "message":
							n, _ := strconv.Atoi(f.Data())
							r.got = append(r.got, n)
						default:
							r.err = fmt.Errorf("frame %v", f)
							return
						}
					}
				}()
			}
			for range 4 {
				r := <-results
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.from >= 0 && (r.got[0] != r.from || r.rewound < 10) {
					t.Fatalf("resumed from message %d: first %d, %d replayed: %v", r.from-1, r.got[0], r.rewound, r.got)
				}
				if r.from < 0 && r.rewound != rewind {
					t.Fatalf("%d messages before subscribed; want %d: %v", r.rewound, rewind, r.got)
				}
				for i := 1; i < len(r.got); i++ {
					if r.got[i] != r.got[i-1]+1 {
						t.Fatalf("%d after %d (a gap or a duplicate): %v", r.got[i], r.got[i-1], r.got)
					}
				}
			}
			<-done
			if failed != nil {
				t.Fatal(failed)
			}
		})
	}
}
