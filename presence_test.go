package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// presenceHeartbeat is the memory broker's presence heartbeat in these tests: reaping takes
// a few of them.
const presenceHeartbeat = 250 * time.Millisecond

// presenceCluster is nodes sharing one memory broker, with presence on room:* (join and leave
// frames too) and on quiet:* (no join and leave frames).
type presenceCluster struct {
	broker *memory.Broker
	prefix string
	nodes  []*node
	links  []*memory.Node // each node's broker node: closing one is the node losing its broker
}

func newPresenceCluster(t *testing.T, n int, env ...string) *presenceCluster {
	t.Helper()
	pc := &presenceCluster{
		broker: memory.NewBroker(memory.Config{HistorySize: 1000, Presence: transports.PresenceConfig{Heartbeat: presenceHeartbeat}}),
		prefix: transporttest.Prefix(t),
	}
	t.Cleanup(pc.broker.Close)
	for i := range n {
		link := pc.broker.Node(pc.prefix)
		cfg := testConfig(t, append([]string{fmt.Sprintf("GATEWAY_NODE_ID=p%d", i+1), "GATEWAY_PRESENCE_CHANNELS=room:*,quiet:*",
			"GATEWAY_PRESENCE_JOIN_LEAVE=room:*", "GATEWAY_EVENTS_HEARTBEAT=50ms"}, env...)...)
		pc.nodes = append(pc.nodes, startNode(t, cfg, gateway.WithBroker(link)))
		pc.links = append(pc.links, link)
	}
	return pc
}

// infoToken is a token for user that may subscribe anywhere, with the info claim.
func infoToken(t *testing.T, user, info string) string {
	t.Helper()
	tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, auth.WithInfo(json.RawMessage(info)))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expectJoinLeave reads the next frame: a join or leave (typ) of session in channel, with a
// position; it returns the frame.
func expectJoinLeave(t *testing.T, c *wstest.Client, typ, channel, session string) wstest.Frame {
	t.Helper()
	f := c.Expect(typ)
	m, _ := f["member"].(map[string]any)
	if f.Str("channel") != channel || m["session"] != session || f.Str("position") == "" {
		t.Fatalf("got %v, want a %s of %s in %s with a position", f, typ, session, channel)
	}
	return f
}

// joinLeaveMembers are the members a join or leave frame tells of: its member, or its members
// (a coalesced window).
func joinLeaveMembers(f wstest.Frame) []map[string]any {
	if m, ok := f["member"].(map[string]any); ok {
		return []map[string]any{m}
	}
	return membersOf(f)
}

// expectLeaves reads c's next frames, leaves with a position of members of node, one or several
// a frame, until it has read the leaves of sessions (each once, in any order).
func expectLeaves(t *testing.T, c *wstest.Client, node string, sessions []string) {
	t.Helper()
	var left []string
	for len(left) < len(sessions) {
		f := c.Next()
		ms := joinLeaveMembers(f)
		if f.Str("type") != "leave" || f.Str("position") == "" || len(ms) == 0 {
			t.Fatalf("got %v, want the leave of a member of %s", f, node)
		}
		for _, m := range ms {
			if m["node"] != node {
				t.Fatalf("got %v, want the leave of a member of %s", f, node)
			}
			left = append(left, m["session"].(string))
		}
	}
	want := slices.Clone(sessions)
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("leaves of %v, want %v", left, want)
	}
}

// presenceOf asks c for a page of channel's members and returns the answer.
func presenceOf(t *testing.T, c *wstest.Client, channel, after string, limit int) wstest.Frame {
	t.Helper()
	req := map[string]any{"type": "presence", "id": "p", "channel": channel}
	if after != "" {
		req["after"] = after
	}
	if limit > 0 {
		req["limit"] = limit
	}
	c.Send(req)
	return c.Expect("presence")
}

func membersOf(f wstest.Frame) []map[string]any {
	var out []map[string]any
	list, _ := f["members"].([]any)
	for _, m := range list {
		out = append(out, m.(map[string]any))
	}
	return out
}

func apiGet(t testing.TB, base, path string, q url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path+"?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestPresenceAcrossNodes: the members of two nodes, one user with a tab on each, listed and
// counted from either node, paged, with join frames; and the HTTP API.
func TestPresenceAcrossNodes(t *testing.T) {
	pc := newPresenceCluster(t, 2)
	n1, n2 := pc.nodes[0], pc.nodes[1]
	a1, w1 := wstest.Dial(t, n1.URL, allowAll(t, "alice"))
	a2, w2 := wstest.Dial(t, n2.URL, allowAll(t, "alice"))
	bob, wb := wstest.Dial(t, n2.URL, infoToken(t, "bob", `{"name":"Bob"}`))
	s1, s2, sb := w1.Str("session"), w2.Str("session"), wb.Str("session")

	a1.Subscribe("room:1")
	expectJoinLeave(t, a1, "join", "room:1", s1) // its own join comes after subscribed
	a2.Subscribe("room:1")
	expectJoinLeave(t, a2, "join", "room:1", s2)
	expectJoinLeave(t, a1, "join", "room:1", s2)
	bob.Subscribe("room:1")
	expectJoinLeave(t, bob, "join", "room:1", sb)
	j := expectJoinLeave(t, a1, "join", "room:1", sb)
	if m := j["member"].(map[string]any); m["user"] != "bob" || m["node"] != "p2" || fmt.Sprint(m["info"]) != "map[name:Bob]" {
		t.Fatalf("bob's join %v", j)
	}
	expectJoinLeave(t, a2, "join", "room:1", sb)

	// Every member from either node, ordered by session id, with its node and the token's info.
	want := []string{s1, s2, sb}
	slices.Sort(want)
	for _, c := range []*wstest.Client{a1, bob} {
		f := presenceOf(t, c, "room:1", "", 0)
		var got []string
		for _, m := range membersOf(f) {
			got = append(got, m["session"].(string))
			wantNode := map[string]string{s1: "p1", s2: "p2", sb: "p2"}[m["session"].(string)]
			if m["node"] != wantNode {
				t.Fatalf("member %v: node %v, want %s", m, m["node"], wantNode)
			}
			if _, has := m["info"]; has != (m["session"] == sb) {
				t.Fatalf("member %v: info only from bob's token", m)
			}
		}
		if !slices.Equal(got, want) || f["next"] != nil || f.Str("id") != "p" {
			t.Fatalf("presence %v, want sessions %v and no next", f, want)
		}
	}
	// Pages of 2: the first says where the next starts.
	f := presenceOf(t, a2, "room:1", "", 2)
	if ms := membersOf(f); len(ms) != 2 || f.Str("next") != want[1] {
		t.Fatalf("first page of 2: %v", f)
	}
	f = presenceOf(t, a2, "room:1", want[1], 2)
	if ms := membersOf(f); len(ms) != 1 || ms[0]["session"] != want[2] || f["next"] != nil {
		t.Fatalf("second page of 2: %v", f)
	}
	// Alice's two tabs count once.
	a1.Send(`{"type":"presence_stats","id":"st","channel":"room:1"}`)
	if st := a1.Expect("presence_stats"); st["connections"] != 3.0 || st["users"] != 2.0 || st.Str("channel") != "room:1" || st.Str("id") != "st" {
		t.Fatalf("presence_stats %v, want 3 connections of 2 users", st)
	}

	// The HTTP API, from either node.
	status, out := apiGet(t, n2.URL, "/api/presence", url.Values{"channel": {"room:1"}, "limit": {"2"}})
	if status != 200 || len(out["members"].([]any)) != 2 || out["next"] != want[1] {
		t.Fatalf("GET /api/presence: %d %v", status, out)
	}
	status, out = apiGet(t, n1.URL, "/api/presence", url.Values{"channel": {"room:1"}, "after": {want[1]}})
	if status != 200 || len(out["members"].([]any)) != 1 || out["next"] != nil {
		t.Fatalf("GET /api/presence after: %d %v", status, out)
	}
	status, out = apiGet(t, n1.URL, "/api/presence_stats", url.Values{"channel": {"room:1"}})
	if status != 200 || out["connections"] != 3.0 || out["users"] != 2.0 {
		t.Fatalf("GET /api/presence_stats: %d %v", status, out)
	}
	bob.Subscribe("quiet:2")
	status, out = apiGet(t, n1.URL, "/api/channels", url.Values{"pattern": {"room:*"}})
	if cs, _ := out["channels"].([]any); status != 200 || len(cs) != 1 || cs[0].(map[string]any)["channel"] != "room:1" ||
		cs[0].(map[string]any)["users"] != 2.0 {
		t.Fatalf("GET /api/channels?pattern=room:*: %d %v", status, out)
	}
	wstest.WaitFor(t, func() error {
		status, out = apiGet(t, n1.URL, "/api/channels", url.Values{"limit": {"1"}})
		if cs, _ := out["channels"].([]any); status != 200 || len(cs) != 1 || out["next"] != "quiet:2" {
			return fmt.Errorf("GET /api/channels?limit=1: %d %v", status, out)
		}
		return nil
	})
	if status, out := apiGet(t, n1.URL, "/api/presence", url.Values{"channel": {"news"}}); status != 400 {
		t.Fatalf("GET /api/presence of a channel without presence: %d %v", status, out)
	}
	req, _ := http.NewRequest("GET", n1.URL+"/api/presence?channel=room:1", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("GET /api/presence without the API key: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A leave: bob unsubscribes, the others see it; the channel without join_leave sends none.
	bob.Send(`{"type":"unsubscribe","id":"u","channel":"room:1"}`)
	bob.Expect("unsubscribed")
	expectJoinLeave(t, a1, "leave", "room:1", sb)
	expectJoinLeave(t, a2, "leave", "room:1", sb)
	a1.Send(`{"type":"presence_stats","id":"st","channel":"quiet:2"}`)
	if st := a1.Expect("presence_stats"); st["connections"] != 1.0 {
		t.Fatalf("presence_stats of quiet:2 %v", st)
	}
	bob.Send(`{"type":"ping","id":"x"}`)
	bob.Expect("pong") // no join of its own on quiet:2
}

// TestPresenceAuthorization: presence only for a channel the client may subscribe to, only on
// presence channels, and on a broker that keeps presence.
func TestPresenceAuthorization(t *testing.T) {
	pc := newPresenceCluster(t, 1)
	c, _ := wstest.Dial(t, pc.nodes[0].URL, token(t, "carol", time.Hour, []string{"room:1", "other"}, nil))
	for _, tc := range []struct{ frame, code string }{
		{`{"type":"presence","id":"a","channel":"room:2"}`, "forbidden"},
		{`{"type":"presence_stats","id":"b","channel":"room:2"}`, "forbidden"},
		{`{"type":"presence","id":"c","channel":"other"}`, "bad_request"},
		{`{"type":"presence","id":"d","channel":"$user"}`, "bad_request"},
		{`{"type":"presence","id":"e","channel":"room:1","limit":5000}`, "bad_request"},
	} {
		c.Send(tc.frame)
		if e := c.Expect("error"); e.Str("code") != tc.code {
			t.Fatalf("%s: %v, want %s", tc.frame, e, tc.code)
		}
	}
	c.Subscribe("other") // not a presence channel: no member, no join
	c.Send(`{"type":"presence","id":"f","channel":"room:1"}`)
	if f := c.Expect("presence"); len(membersOf(f)) != 0 {
		t.Fatalf("presence of an empty channel %v", f)
	}

	// A node whose broker keeps no presence answers unavailable, and refuses presence.channels.
	plain := startNode(t, testConfig(t), gateway.WithBroker(noPresence{pc.broker.Node(transporttest.Prefix(t))}))
	p, _ := wstest.Dial(t, plain.URL, allowAll(t, "dan"))
	p.Send(`{"type":"presence","id":"g","channel":"room:1"}`)
	if e := p.Expect("error"); e.Str("code") != "unavailable" || !strings.Contains(e.Str("message"), "no presence") {
		t.Fatalf("presence on a broker without it: %v", e)
	}
	_, err := gateway.New(testConfig(t, "GATEWAY_PRESENCE_CHANNELS=room:*"), gateway.WithBroker(noPresence{pc.broker.Node("x")}))
	if err == nil || !strings.Contains(err.Error(), "presence.channels") {
		t.Fatalf("New with presence.channels on a broker without presence: %v", err)
	}
	// Core NATS keeps presence (in its nodes, transports/nats/presence.go): Check accepts it.
	if err := gateway.Check(testConfig(t, "GATEWAY_BROKER=nats", "GATEWAY_PRESENCE_CHANNELS=room:*")); err != nil {
		t.Fatalf("Check of presence.channels on nats: %v", err)
	}
	if err := gateway.Check(testConfig(t, "GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS=127.0.0.1:9092", "GATEWAY_PRESENCE_CHANNELS=room:*")); err != nil {
		t.Fatalf("Check of presence.channels on kafka, which keeps presence: %v", err)
	}
}

// noPresence is a broker that keeps no presence (it hides memory.Node's).
type noPresence struct{ b transports.Broker }

func (n noPresence) Publish(topic string, msgs ...*message.Message) error {
	return n.b.Publish(topic, msgs...)
}
func (n noPresence) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return n.b.Subscribe(ctx, topic)
}
func (n noPresence) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	return n.b.SubscribeGroup(ctx, topic, group)
}
func (n noPresence) Start(ctx context.Context) error { return n.b.Start(ctx) }
func (n noPresence) Ping(ctx context.Context) error  { return n.b.Ping(ctx) }
func (n noPresence) Close() error                    { return n.b.Close() }

// TestPresenceResumeReplaysJoinLeave: a client that resumes gets the joins and leaves it missed,
// in order with the messages, at the positions a client that stayed saw them.
func TestPresenceResumeReplaysJoinLeave(t *testing.T) {
	pc := newPresenceCluster(t, 2)
	n1, n2 := pc.nodes[0], pc.nodes[1]
	w, ww := wstest.Dial(t, n1.URL, allowAll(t, "watcher"))
	w.Subscribe("room:r")
	expectJoinLeave(t, w, "join", "room:r", ww.Str("session"))
	a, wa := wstest.Dial(t, n1.URL, allowAll(t, "ann"))
	a.Subscribe("room:r")
	since := expectJoinLeave(t, a, "join", "room:r", wa.Str("session")).Str("position")
	expectJoinLeave(t, w, "join", "room:r", wa.Str("session"))

	// What ann misses, as the watcher sees it live.
	a.Conn.Close()
	missed := []wstest.Frame{expectJoinLeave(t, w, "leave", "room:r", wa.Str("session"))}
	b, wb := wstest.Dial(t, n2.URL, allowAll(t, "ben"))
	b.Subscribe("room:r")
	missed = append(missed, expectJoinLeave(t, w, "join", "room:r", wb.Str("session")))
	b.Send(map[string]any{"type": "publish", "id": "pub", "channel": "room:r", "data": "hello"})
	missed = append(missed, w.Expect("message"))
	b.Send(`{"type":"unsubscribe","id":"u","channel":"room:r"}`)
	missed = append(missed, expectJoinLeave(t, w, "leave", "room:r", wb.Str("session")))

	// Ann comes back and resumes: the same frames, in the same order, then subscribed.
	a2, wa2 := wstest.Dial(t, n2.URL, allowAll(t, "ann"))
	a2.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "room:r", "since": since})
	for i, want := range missed {
		got := a2.Next()
		if got.Str("type") != want.Str("type") || got.Str("position") != want.Str("position") ||
			fmt.Sprint(got["member"]) != fmt.Sprint(want["member"]) || got.Data() != want.Data() {
			t.Fatalf("replayed frame %d: %v, want %v", i, got, want)
		}
	}
	if s := a2.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("resume %v", s)
	}
	expectJoinLeave(t, a2, "join", "room:r", wa2.Str("session"))
}

// eventLog reads the lifecycle events of a cluster (one group of the events topic).
func eventLog(t *testing.T, pc *presenceCluster) <-chan protocol.Event {
	t.Helper()
	service := pc.broker.Node(pc.prefix)
	t.Cleanup(func() { _ = service.Close() })
	msgs, err := service.SubscribeGroup(t.Context(), protocol.TopicEvents, "test")
	if err != nil {
		t.Fatal(err)
	}
	return decodeEvents(msgs, 1000)
}

// decodeEvents acks every message of msgs and passes on the lifecycle events they carry (at most
// size waiting; more are dropped); it ends when msgs closes (the test's context ends).
func decodeEvents(msgs <-chan *message.Message, size int) <-chan protocol.Event {
	out := make(chan protocol.Event, size)
	go func() {
		for m := range msgs {
			m.Ack()
			var ev protocol.Event
			if json.Unmarshal(m.Payload, &ev) == nil {
				select {
				case out <- ev:
				default:
				}
			}
		}
	}()
	return out
}

// TestPresenceNodeLost: a node that loses its broker without leaving (as a node killed) has its
// members reaped: the others get their leaves once, the services one member_left each and one
// channel_vacated for the channel only it had.
func TestPresenceNodeLost(t *testing.T) {
	pc := newPresenceCluster(t, 2)
	events := eventLog(t, pc)
	n1, n2 := pc.nodes[0], pc.nodes[1]
	w, ww := wstest.Dial(t, n1.URL, allowAll(t, "watcher"))
	w.Subscribe("room:k")
	expectJoinLeave(t, w, "join", "room:k", ww.Str("session"))
	var lost []string
	for _, user := range []string{"x", "y"} {
		c, wc := wstest.Dial(t, n2.URL, allowAll(t, user))
		c.Subscribe("room:k")
		expectJoinLeave(t, c, "join", "room:k", wc.Str("session"))
		expectJoinLeave(t, w, "join", "room:k", wc.Str("session"))
		lost = append(lost, wc.Str("session"))
	}
	z, _ := wstest.Dial(t, n2.URL, allowAll(t, "z"))
	z.Subscribe("quiet:alone")

	_ = pc.links[1].Close()        // node 2 loses its broker: no leave, no more lease renewal
	expectLeaves(t, w, "p2", lost) // in one frame when the reaping fell in one window
	wstest.WaitFor(t, func() error {
		if ms := membersOf(presenceOf(t, w, "room:k", "", 0)); len(ms) != 1 || ms[0]["session"] != ww.Str("session") {
			return fmt.Errorf("members after the reaping: %v", ms)
		}
		return nil
	})

	// The dead node closes: nothing more is announced. The watcher's node heartbeats a few
	// times meanwhile, so a late event would be among those read.
	_ = n2.Close()
	w.Send(`{"type":"ping","id":"after"}`)
	w.Expect("pong")
	counts := map[string]int{}
	beats := 0
	deadline := time.After(wstest.Timeout)
	for beats < 10 {
		select {
		case ev := <-events:
			switch ev.Type {
			case protocol.EventNodeAlive:
				if ev.Node == "p1" && counts[protocol.EventChannelVacated+":quiet:alone"] > 0 && counts[protocol.EventMemberLeft] >= 3 {
					beats++
				}
			case protocol.EventMemberLeft:
				if ev.Reason != "reaped" || ev.Node != "p1" {
					t.Fatalf("member_left %+v, want reaped, told by p1", ev)
				}
				counts[ev.Type]++
				counts[ev.Type+":"+ev.Session]++
			case protocol.EventChannelVacated:
				counts[ev.Type+":"+ev.Channel]++
			}
		case <-deadline:
			t.Fatalf("events %v: no heartbeat of p1 after the reaping", counts)
		}
	}
	if counts[protocol.EventMemberLeft] != 3 || counts[protocol.EventChannelVacated+":quiet:alone"] != 1 ||
		counts[protocol.EventChannelVacated+":room:k"] != 0 {
		t.Fatalf("events %v: want 3 member_left (once each) and one channel_vacated of quiet:alone", counts)
	}
	for _, s := range lost {
		if counts[protocol.EventMemberLeft+":"+s] != 1 {
			t.Fatalf("member_left of %s %d times", s, counts[protocol.EventMemberLeft+":"+s])
		}
	}
}

// TestPresenceCountsOnlyBeyondMax: beyond presence.max_members, presence answers the counts
// without members, by frame and by API.
func TestPresenceCountsOnlyBeyondMax(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_MAX_MEMBERS=1"))
	a, _ := wstest.Dial(t, n.URL, allowAll(t, "ann"))
	a.Subscribe("room:m")
	if f := presenceOf(t, a, "room:m", "", 0); len(membersOf(f)) != 1 {
		t.Fatalf("presence at the cap %v", f)
	}
	b, _ := wstest.Dial(t, n.URL, allowAll(t, "ben"))
	b.Subscribe("room:m")
	f := presenceOf(t, a, "room:m", "", 0)
	if _, has := f["members"]; has || f["connections"] != 2.0 || f["users"] != 2.0 {
		t.Fatalf("presence beyond the cap %v, want counts only", f)
	}
	status, out := apiGet(t, n.URL, "/api/presence", url.Values{"channel": {"room:m"}})
	if _, has := out["members"]; status != 200 || has || out["connections"] != 2.0 {
		t.Fatalf("GET /api/presence beyond the cap: %d %v", status, out)
	}
}

// TestClientCannotForgeJoin: what a client publishes is a message whatever it looks like; only a
// node publishes joins and leaves.
func TestClientCannotForgeJoin(t *testing.T) {
	n := startNode(t, testConfig(t, "GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_JOIN_LEAVE=room:*"))
	a, wa := wstest.Dial(t, n.URL, allowAll(t, "ann"))
	a.Subscribe("room:f")
	expectJoinLeave(t, a, "join", "room:f", wa.Str("session"))
	forged := map[string]any{"user": "mallory", "session": "s-forged", "node": "n"}
	a.Send(map[string]any{"type": "publish", "id": "p", "channel": "room:f", "data": forged})
	got := a.ExpectAll("ack", "message")
	if m := got["message"]; m.Str("channel") != "room:f" || m["member"] != nil {
		t.Fatalf("a client's publish came as %v", m)
	}
	mustAPIPublish(t, n.URL, map[string]any{"channel": "room:f", "data": forged})
	if m := a.Expect("message"); m["member"] != nil {
		t.Fatalf("an API publish came as %v", m)
	}
}
