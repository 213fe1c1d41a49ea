package gateway_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

// brokerPresenceCluster is gateway nodes on one broker namespace of a broker that keeps
// presence, each node with a broker of its own, presence on room:* with join and leave frames,
// and presence.heartbeat of presenceHeartbeat. On a broker with a server the last node is a
// process of its own, which kill ends with SIGKILL; on memory kill closes that node's broker (a
// node that lost its broker: no leave, no more lease renewal).
type brokerPresenceCluster struct {
	urls   []string
	kill   func()                              // the last node dies without leaving
	newOne func(node string) transports.Broker // a broker for the node of that id
}

// newBrokerPresenceCluster starts n nodes p1..pn on cb, or skips t when cb keeps no presence or
// its server is unreachable. What the nodes create on the shared servers is deleted when t ends.
func newBrokerPresenceCluster(t *testing.T, cb nodetest.Broker, n int) *brokerPresenceCluster {
	t.Helper()
	cluster := cb.Setup(t)
	prefix := cluster.Prefix(t)
	t.Logf("prefix %s", prefix)
	env := []string{"GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_JOIN_LEAVE=room:*",
		"GATEWAY_PRESENCE_HEARTBEAT=" + presenceHeartbeat.String(), "GATEWAY_EVENTS_HEARTBEAT=50ms",
		"GATEWAY_TOPIC_PREFIX=" + prefix}
	pc := &brokerPresenceCluster{}
	if cb.InProcess {
		shared := memory.NewBroker(memory.Config{HistorySize: 1000, Presence: transports.PresenceConfig{Heartbeat: presenceHeartbeat}})
		t.Cleanup(shared.Close)
		pc.newOne = func(string) transports.Broker {
			b := shared.Node(prefix)
			t.Cleanup(func() { _ = b.Close() })
			return b
		}
	} else {
		brokerEnv := append(append([]string{"GATEWAY_NATS_URL=nats://" + nodetest.NATSAddr, "GATEWAY_REDIS_ADDR=" + nodetest.RedisAddr},
			cluster.Env...), "GATEWAY_PRESENCE_HEARTBEAT="+presenceHeartbeat.String(), "GATEWAY_TOPIC_PREFIX="+prefix)
		// presence.channels is the nodes' setting (NewBroker refuses it on a broker without
		// presence); the node id is the broker's too, as in a node process.
		pc.newOne = func(node string) transports.Broker {
			b, err := gateway.NewBroker(testConfig(t, append(brokerEnv, "GATEWAY_NODE_ID="+node)...), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}
	}
	if _, ok := pc.newOne("probe").(transports.Presence); !ok { // closed when t ends, never started
		t.Skipf("the %s broker keeps no presence", cb.Name)
	}
	for i := range n {
		id := fmt.Sprintf("p%d", i+1)
		nodeEnv := append([]string{"GATEWAY_NODE_ID=" + id}, env...)
		if i == n-1 && !cb.InProcess {
			proc := nodetest.Start(t, append(append([]string{"GATEWAY_JWT_SECRET=" + testSecret, "GATEWAY_API_KEY=" + testAPIKey,
				"GATEWAY_NATS_URL=nats://" + nodetest.NATSAddr, "GATEWAY_REDIS_ADDR=" + nodetest.RedisAddr}, cluster.Env...), nodeEnv...)...)
			pc.urls = append(pc.urls, proc.URL)
			pc.kill = proc.Kill
			continue
		}
		b := pc.newOne(id)
		pc.urls = append(pc.urls, startNode(t, testConfig(t, nodeEnv...), gateway.WithBroker(b)).URL)
		pc.kill = func() { _ = b.Close() }
	}
	for _, u := range pc.urls { // as a load balancer would (JetStream provisions its streams)
		wstest.WaitFor(t, func() error {
			if s := readyStatus(u); s != 200 {
				return fmt.Errorf("node %s: /readyz %d", u, s)
			}
			return nil
		})
	}
	return pc
}

// events reads the cluster's lifecycle events through a broker of its own (as a service does).
func (pc *brokerPresenceCluster) events(t *testing.T) <-chan protocol.Event {
	t.Helper()
	service := pc.newOne("service")
	if err := service.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	msgs, err := service.SubscribeGroup(t.Context(), protocol.TopicEvents, "presence-test")
	if err != nil {
		t.Fatal(err)
	}
	return decodeEvents(msgs, 10000)
}

// agreeOnPresence checks that presence and presence_stats from each client (on different nodes)
// answer the sessions want (with their nodes) and users distinct users.
func agreeOnPresence(t *testing.T, clients []*wstest.Client, channel string, want map[string]string, users int) {
	t.Helper()
	sessions := make([]string, 0, len(want))
	for s := range want {
		sessions = append(sessions, s)
	}
	slices.Sort(sessions)
	for i, c := range clients {
		f := presenceOf(t, c, channel, "", 0)
		var got []string
		for _, m := range membersOf(f) {
			s, _ := m["session"].(string)
			got = append(got, s)
			if m["node"] != want[s] {
				t.Fatalf("client %d: member %v on node %v, want %s", i, m, m["node"], want[s])
			}
		}
		if !slices.Equal(got, sessions) || f["next"] != nil {
			t.Fatalf("client %d: presence %v, want sessions %v", i, f, sessions)
		}
		c.Send(map[string]any{"type": "presence_stats", "id": "st", "channel": channel})
		if st := c.Expect("presence_stats"); st["connections"] != float64(len(want)) || st["users"] != float64(users) {
			t.Fatalf("client %d: presence_stats %v, want %d connections of %d users", i, st, len(want), users)
		}
	}
}

// TestPresenceOnBrokers: presence through gateway nodes on every broker that keeps it: members
// from 3 nodes listed and counted alike from each, a user with tabs on two nodes counted once,
// joins and leaves replayed on resume in order with the messages, and a node that dies without
// leaving reaped: each remaining subscriber gets each leave once, services one member_left each.
func TestPresenceOnBrokers(t *testing.T) {
	for _, cb := range nodetest.Brokers {
		// Not in parallel: with a 250 ms heartbeat, a node starved of CPU by the other brokers'
		// subtests on a loaded 2-core machine was found dead (nats, a leave instead of a join).
		t.Run(cb.Name, func(t *testing.T) { testPresenceOnBroker(t, cb) })
	}
}

func testPresenceOnBroker(t *testing.T, cb nodetest.Broker) {
	pc := newBrokerPresenceCluster(t, cb, 3)
	events := pc.events(t)
	p1, p2, p3 := pc.urls[0], pc.urls[1], pc.urls[2]
	const room = "room:e"

	// Members from 3 nodes; alice has a tab on p1 and one on p2. subs are the subscribers, each
	// of which reads every join, leave and message in the channel.
	w, ww := wstest.Dial(t, p1, allowAll(t, "watcher"))
	w.Subscribe(room)
	expectJoinLeave(t, w, "join", room, ww.Str("session"))
	subs := []*wstest.Client{w}
	nodeOf := map[string]string{ww.Str("session"): "p1"}
	// seen has every subscriber read a join or leave of session and returns the watcher's.
	seen := func(typ, session string) wstest.Frame {
		t.Helper()
		var f wstest.Frame
		for i, c := range subs {
			if g := expectJoinLeave(t, c, typ, room, session); i == 0 {
				f = g
			}
		}
		return f
	}
	join := func(url, name, user string) (*wstest.Client, string, wstest.Frame) {
		t.Helper()
		c, wc := wstest.Dial(t, url, allowAll(t, user))
		s := wc.Str("session")
		c.Subscribe(room)
		expectJoinLeave(t, c, "join", room, s)
		nodeOf[s] = name
		f := seen("join", s)
		subs = append(subs, c)
		return c, s, f
	}
	drop := func(c *wstest.Client) { subs = slices.DeleteFunc(subs, func(s *wstest.Client) bool { return s == c }) }
	a1, sa1, _ := join(p1, "p1", "alice")
	a2, _, _ := join(p2, "p2", "alice")
	b, sb, _ := join(p3, "p3", "bob")
	c, sc, cJoin := join(p3, "p3", "carol")
	agreeOnPresence(t, []*wstest.Client{w, a2, b}, room, nodeOf, 4) // watcher, alice, bob, carol

	// a1's connection drops after it read carol's join; it misses what follows.
	since := cJoin.Str("position")
	drop(a1)
	a1.Conn.Close()
	missed := []wstest.Frame{seen("leave", sa1)}
	delete(nodeOf, sa1)
	a2.Send(map[string]any{"type": "publish", "id": "pub", "channel": room, "data": "hello"})
	for _, s := range subs {
		if s == a2 {
			a2.ExpectAll("ack", "message")
		} else if m := s.Expect("message"); s == w {
			missed = append(missed, m)
		}
	}
	d, _, joined := join(p2, "p2", "dave")
	missed = append(missed, joined)
	c.Send(`{"type":"unsubscribe","id":"u","channel":"room:e"}`)
	c.Expect("unsubscribed")
	drop(c)
	missed = append(missed, seen("leave", sc))
	delete(nodeOf, sc)

	// Alice resumes on p3: the same frames, in the same order, at the same positions. On a
	// broker without history (core NATS) nothing is replayed: she is told recovered:false, and
	// re-reads presence below (agreeOnPresence lists her and every member she missed).
	r, wr := wstest.Dial(t, p3, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": room, "since": since})
	if !cb.History {
		missed = nil
	}
	for i, want := range missed {
		got := r.Next()
		if got.Str("type") != want.Str("type") || got.Str("position") != want.Str("position") ||
			fmt.Sprint(got["member"]) != fmt.Sprint(want["member"]) || got.Data() != want.Data() {
			t.Fatalf("replayed frame %d: %v, want %v", i, got, want)
		}
	}
	if s := r.Expect("subscribed"); s.Bool("recovered") != cb.History {
		t.Fatalf("resume %v, want recovered %v", s, cb.History)
	}
	sr := wr.Str("session")
	expectJoinLeave(t, r, "join", room, sr)
	seen("join", sr)
	nodeOf[sr] = "p3"
	agreeOnPresence(t, []*wstest.Client{w, d, b}, room, nodeOf, 4) // watcher, alice (2 tabs), bob, dave

	// p3 dies without leaving (SIGKILLed, on a broker with a server): bob and alice's resumed tab
	// are reaped.
	lost := []string{sb, sr}
	slices.Sort(lost)
	pc.kill()
	survivors := []*wstest.Client{w, a2, d} // the subscribers on p1 and p2
	for _, s := range survivors {
		expectLeaves(t, s, "p3", lost) // one frame or two: reaped on one survivor or both
	}
	delete(nodeOf, sb)
	delete(nodeOf, sr)
	agreeOnPresence(t, []*wstest.Client{w, a2}, room, nodeOf, 3) // watcher, alice, dave

	// Services hear one member_left per reaped member. Then the survivors heartbeat for several
	// reaping passes: a second announcement of a reaped member would be among what is read.
	reaped := map[string]int{}
	beats := map[string]int{}
	deadline := time.After(wstest.Timeout)
	for len(reaped) < len(lost) || beats["p1"] < 20 || beats["p2"] < 20 {
		select {
		case ev := <-events:
			switch ev.Type {
			case protocol.EventNodeAlive:
				if len(reaped) == len(lost) {
					beats[ev.Node]++
				}
			case protocol.EventMemberLeft:
				if ev.Reason == "reaped" {
					if !slices.Contains(lost, ev.Session) || ev.Channel != room || ev.Node == "p3" {
						t.Fatalf("member_left %+v, want one of %v told by a survivor", ev, lost)
					}
					reaped[ev.Session]++
				}
			}
		case <-deadline:
			t.Fatalf("member_left of %v, heartbeats %v after the reaping", reaped, beats)
		}
	}
	for _, s := range lost {
		if reaped[s] != 1 {
			t.Fatalf("member_left of %s %d times, want once", s, reaped[s])
		}
	}
	for i, s := range survivors { // and no second leave reached a subscriber
		s.Send(`{"type":"ping","id":"end"}`)
		if f := s.Next(); f.Str("type") != "pong" {
			t.Fatalf("survivor %d: %v after the leaves, want only the pong", i, f)
		}
	}
}
