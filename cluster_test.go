package gateway_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
)

// clusterBrokers are the brokers the cluster tests run on (nodetest.Brokers).
var clusterBrokers = nodetest.Brokers

// cluster starts n nodes on one broker namespace.
func cluster(t *testing.T, cb nodetest.Broker, n int) []*node {
	t.Helper()
	cl := cb.Setup(t)
	newBroker, prefix := cl.New, cl.Prefix(t)
	nodes := make([]*node, n)
	for i := range nodes {
		cfg := testConfig(t, "GATEWAY_NODE_ID=n"+strconv.Itoa(i+1))
		nodes[i] = startNode(t, cfg, gateway.WithBroker(newBroker(t, prefix)))
	}
	// Like a load balancer, wait until every node is ready (JetStream provisions its streams).
	for _, n := range nodes {
		wstest.WaitFor(t, func() error {
			if s := readyStatus(n.URL); s != 200 {
				return fmt.Errorf("node %s: /readyz %d", n.URL, s)
			}
			return nil
		})
	}
	return nodes
}

func TestCluster(t *testing.T) {
	for _, cb := range clusterBrokers {
		t.Run(cb.Name, func(t *testing.T) {
			t.Run("PublishReachesEveryNode", func(t *testing.T) { testClusterPublish(t, cb) })
			t.Run("Targets", func(t *testing.T) { testClusterTargets(t, cb) })
			t.Run("MsgIDThroughTwoNodes", func(t *testing.T) { testClusterDedupe(t, cb) })
			t.Run("OrderOf1000", func(t *testing.T) { testClusterOrder(t, cb) })
			t.Run("ResumeOnAnotherNode", func(t *testing.T) { testClusterResume(t, cb) })
		})
	}
}

// expectOnly reads one message with data want, then checks nothing else is queued before a ping.
func expectOnly(t *testing.T, c *wstest.Client, want string) wstest.Frame {
	t.Helper()
	m := c.Expect("message")
	if m.Data() != want {
		t.Fatalf("got %v, want data %s", m, want)
	}
	c.Send(`{"type":"ping","id":"only"}`)
	if f := c.Next(); f.Str("type") != "pong" {
		t.Fatalf("unexpected frame %v (a duplicate?)", f)
	}
	return m
}

func testClusterPublish(t *testing.T, cb nodetest.Broker) {
	nodes := cluster(t, cb, 3)
	var subs []*wstest.Client
	for _, n := range nodes {
		c, _ := wstest.Dial(t, n.URL, allowAll(t, "reader"))
		c.Subscribe("room:x")
		subs = append(subs, c)
	}
	pub, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "writer"))
	pub.Publish("room:x", "from-client", "")
	for _, c := range subs {
		m := expectOnly(t, c, `"from-client"`)
		if from, _ := m["from"].(map[string]any); from["user"] != "writer" {
			t.Fatalf("from %v", m)
		}
	}
	mustAPIPublish(t, nodes[0].URL, map[string]any{"channel": "room:x", "data": "from-api"})
	for _, c := range subs {
		if m := expectOnly(t, c, `"from-api"`); m["from"] != nil {
			t.Fatalf("api message with from %v", m)
		}
	}
}

func testClusterTargets(t *testing.T, cb nodetest.Broker) {
	nodes := cluster(t, cb, 3)
	var alices []*wstest.Client
	var all []*wstest.Client
	for _, n := range nodes {
		c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
		c.Subscribe("$user")
		alices = append(alices, c)
		all = append(all, c)
	}
	bob, bw := wstest.Dial(t, nodes[2].URL, allowAll(t, "bob"))
	bob.Subscribe("$user")
	all = append(all, bob)

	mustAPIPublish(t, nodes[1].URL, map[string]any{"user": "alice", "data": "for-alice"})
	for _, c := range alices {
		if m := expectOnly(t, c, `"for-alice"`); m.Str("channel") != "$user" {
			t.Fatalf("user message %v", m)
		}
	}
	mustAPIPublish(t, nodes[0].URL, map[string]any{"session": bw.Str("session"), "data": "for-bob-session"})
	if m := expectOnly(t, bob, `"for-bob-session"`); m.Str("to") != "session" {
		t.Fatalf("session message %v", m)
	}
	mustAPIPublish(t, nodes[1].URL, map[string]any{"broadcast": true, "data": "for-all"})
	for _, c := range all {
		if m := expectOnly(t, c, `"for-all"`); m.Str("to") != "all" {
			t.Fatalf("broadcast %v", m)
		}
	}
	// Nothing else reached anyone (bob got no user message, alices no session message).
	for _, c := range alices {
		c.Send(`{"type":"ping","id":"end"}`)
		c.Expect("pong")
	}
}

func testClusterDedupe(t *testing.T, cb nodetest.Broker) {
	nodes := cluster(t, cb, 3)
	sub, _ := wstest.Dial(t, nodes[2].URL, allowAll(t, "reader"))
	sub.Subscribe("d")
	p1, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))
	p2, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice"))
	p1.Publish("d", "once", "same-id")
	p2.Publish("d", "once", "same-id") // the retry after a reconnect to another node
	mustAPIPublish(t, nodes[0].URL, map[string]any{"channel": "d", "data": "api", "msg_id": "api-id"})
	mustAPIPublish(t, nodes[1].URL, map[string]any{"channel": "d", "data": "api", "msg_id": "api-id"})
	if m := sub.Expect("message"); m.Data() != `"once"` {
		t.Fatalf("first %v", m)
	}
	expectOnly(t, sub, `"api"`)
}

func testClusterOrder(t *testing.T, cb nodetest.Broker) {
	nodes := cluster(t, cb, 3)
	sub, _ := wstest.Dial(t, nodes[2].URL, allowAll(t, "reader"))
	sub.Subscribe("ordered")
	pub, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "writer"))
	const total = 1000
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			m, err := sub.Read(wstest.Timeout)
			if err != nil {
				done <- err
				return
			}
			if m.Str("type") != "message" || m.Data() != strconv.Itoa(i) {
				done <- fmt.Errorf("message %d: got %v", i, m)
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < total; i++ {
		pub.Send(map[string]any{"type": "publish", "id": "p", "channel": "ordered", "data": i})
	}
	for i := 0; i < total; i++ {
		pub.Expect("ack")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d messages through 3 nodes in order in %v (%.0f msg/s, one publishing connection, acked)",
		cb.Name, total, time.Since(start).Round(time.Millisecond), total/time.Since(start).Seconds())
}

func testClusterResume(t *testing.T, cb nodetest.Broker) {
	nodes := cluster(t, cb, 2)
	c, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))
	c.Subscribe("r")
	mustAPIPublish(t, nodes[1].URL, map[string]any{"channel": "r", "data": 1})
	last := c.Expect("message").Str("position")
	c.Conn.Close() // the connection breaks
	mustAPIPublish(t, nodes[1].URL, map[string]any{"channel": "r", "data": 2})
	mustAPIPublish(t, nodes[1].URL, map[string]any{"channel": "r", "data": 3})

	r, _ := wstest.Dial(t, nodes[1].URL, allowAll(t, "alice"))
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "r", "since": last})
	if !cb.History {
		if s := r.Expect("subscribed"); s.Bool("recovered") {
			t.Fatalf("%s keeps no history but answered %v", cb.Name, s)
		}
		return
	}
	for _, want := range []string{"2", "3"} {
		if m := r.Expect("message"); m.Data() != want {
			t.Fatalf("replayed %v, want %s", m, want)
		}
	}
	if s := r.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("subscribed %v", s)
	}
	mustAPIPublish(t, nodes[0].URL, map[string]any{"channel": "r", "data": 4})
	expectOnly(t, r, "4")
}
