package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

const webhookSecret = "webhook-secret-0123456789"

// hookReceiver is a backend's webhook endpoint on a fixed address, which the test stops (its
// listener and connections closed: nothing answers) and starts again on the same address.
type hookReceiver struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	srv    *http.Server
	posts  int
	events []protocol.WebhookEvent // every event of every POST answered 200, duplicates included
}

func newHookReceiver(t *testing.T) *hookReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{t: t, addr: ln.Addr().String()}
	r.serve(ln)
	t.Cleanup(r.stop)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hooks" }

func (r *hookReceiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }() // ends when stop closes srv
}

func (r *hookReceiver) handle(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := protocol.VerifyWebhook([]byte(webhookSecret), req.Header.Get(protocol.WebhookSignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		r.t.Errorf("webhook POST: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var b protocol.WebhookBatch
	if err := json.Unmarshal(body, &b); err != nil {
		r.t.Errorf("webhook body %q: %v", body, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.posts++
	r.events = append(r.events, b.Events...)
	r.mu.Unlock()
}

// stop closes the listener and every connection: the receiver is down. A POST being handled
// finishes and its 200 is written first (Shutdown, not Close): a receiver that counted a batch and
// then lost its answer would see the node's retry as a duplicate that is the test's own making.
func (r *hookReceiver) stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
}

// start listens again on the same address.
func (r *hookReceiver) start() {
	var ln net.Listener
	wstest.WaitFor(r.t, func() (err error) { // the port may take a moment to be free again
		ln, err = net.Listen("tcp", r.addr)
		return err
	})
	r.serve(ln)
}

// received returns the events received so far, with how many times each id came.
func (r *hookReceiver) received() ([]protocol.WebhookEvent, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	times := map[string]int{}
	for _, e := range r.events {
		times[e.ID]++
	}
	return slices.Clone(r.events), times
}

// hookKey is what the test expects of one event: its type, session and reason.
type hookKey struct{ typ, session, reason string }

func (k hookKey) String() string { return k.typ + "/" + k.session + "/" + k.reason }

// waitFor waits until the receiver has received every event of want (each key as many times as
// counted there, by distinct ids), and nothing else about those sessions; it returns the ids seen
// more than once (the webhooks are at-least-once; the test then checks there were none).
func (r *hookReceiver) waitFor(want map[hookKey]int, sessions map[string]bool) (dups []string) {
	r.t.Helper()
	wstest.WaitFor(r.t, func() error {
		evs, _ := r.received()
		got := map[hookKey]int{}
		counted := map[string]bool{}
		for _, e := range evs { // each id once: duplicates are counted apart, below
			if !counted[e.ID] && sessions[e.Session] {
				counted[e.ID] = true
				got[hookKey{e.Type, e.Session, nodeLostOnly(e.Reason)}]++
			}
		}
		for k, n := range want {
			if got[k] != n {
				return fmt.Errorf("%s received %d times, want %d", k, got[k], n)
			}
		}
		for k, n := range got {
			if want[k] == 0 {
				return fmt.Errorf("%s received %d times, want none", k, n)
			}
		}
		return nil
	})
	_, times := r.received()
	for id, n := range times {
		if n > 1 {
			dups = append(dups, id)
		}
	}
	return dups
}

// nodeLostOnly keeps the reason node_lost, the one reason the test expects of a disconnect.
func nodeLostOnly(reason string) string {
	if reason == protocol.ReasonNodeLost {
		return reason
	}
	return ""
}

// TestWebhooksAcrossNodes (every broker): 3 nodes on one broker POST the lifecycle events of their clients to
// one receiver. The receiver is stopped while clients subscribe, unsubscribe, disconnect and
// connect, and started again on the same address: afterwards it has received every event once,
// counted by type and session and by id, with no duplicate, and the nodes' delivered counters add
// up to what it received (each event POSTed by one node). Then a
// node loses its broker (as if it died): a surviving node tells disconnected, reason
// node_lost, once for each of its connections, naming the node that died.
func TestWebhooksAcrossNodes(t *testing.T) {
	for _, cb := range nodetest.Brokers {
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: each its own prefix (kafka: its own kfake)
			testWebhooksAcrossNodes(t, cb)
		})
	}
}

func testWebhooksAcrossNodes(t *testing.T, cb nodetest.Broker) {
	cluster := cb.Setup(t)
	prefix := cluster.Prefix(t)
	recv := newHookReceiver(t)
	const heartbeat = time.Second // a node's lease outlives a loaded machine's late renewals
	// noDups fails the test on duplicates, on every broker. On kafka the nodes' members join the
	// group while the first events are delivered, and w3's leave it at the node_lost step: no
	// rebalance may deliver an event again (docs/hooks.md, Guarantees). The nodes' configuration
	// names no broker (it is given with WithBroker), so each holds webhooks.batch (4) members of
	// the group, where a node configured for kafka holds 1: more members, more rebalances.
	noDups := func(when string, dups []string) {
		t.Helper()
		if len(dups) > 0 {
			t.Fatalf("%s: events received twice: %v", when, dups)
		}
	}
	env := []string{"GATEWAY_TOPIC_PREFIX=" + prefix, "GATEWAY_EVENTS_HEARTBEAT=1h", "GATEWAY_EVENTS_NODE_LOST=true",
		"GATEWAY_PRESENCE_HEARTBEAT=" + heartbeat.String(),
		"GATEWAY_WEBHOOKS_URL=" + recv.url(), "GATEWAY_WEBHOOKS_SECRET=" + webhookSecret, "GATEWAY_WEBHOOKS_BATCH=4",
		"GATEWAY_WEBHOOKS_BATCH_WAIT=20ms", "GATEWAY_WEBHOOKS_TIMEOUT=10s", "GATEWAY_WEBHOOKS_RETRY_INITIAL=20ms",
		"GATEWAY_WEBHOOKS_RETRY_MAX=200ms"}
	var newBroker func(id string) transports.Broker
	if cb.InProcess {
		shared := memory.NewBroker(memory.Config{Presence: transports.PresenceConfig{Heartbeat: heartbeat}})
		t.Cleanup(shared.Close)
		newBroker = func(string) transports.Broker { return shared.Node(prefix) }
	} else {
		brokerEnv := append(append([]string{"GATEWAY_NATS_URL=nats://" + nodetest.NATSAddr, "GATEWAY_REDIS_ADDR=" + nodetest.RedisAddr},
			cluster.Env...), env...)
		newBroker = func(id string) transports.Broker {
			b, err := gateway.NewBroker(testConfig(t, append(brokerEnv, "GATEWAY_NODE_ID="+id)...), nil)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	var nodes []*node
	var links []transports.Broker
	for i := range 3 {
		id := fmt.Sprintf("w%d", i+1)
		b := newBroker(id)
		t.Cleanup(func() { _ = b.Close() })
		cfg := testConfig(t, append(slices.Clone(env), "GATEWAY_NODE_ID="+id)...)
		nodes, links = append(nodes, startNode(t, cfg, gateway.WithBroker(b))), append(links, b)
	}
	for _, n := range nodes {
		wstest.WaitFor(t, func() error {
			if s := readyStatus(n.URL); s != 200 {
				return fmt.Errorf("node %s: /readyz %d", n.URL, s)
			}
			return nil
		})
	}
	want := map[hookKey]int{}
	sessions := map[string]bool{}
	type client struct {
		c       *wstest.Client
		session string
		node    int
	}
	connect := func(i, node int) client {
		c, w := wstest.Dial(t, nodes[node].URL, allowAll(t, fmt.Sprintf("u%d", i)))
		s := w.Str("session")
		sessions[s] = true
		want[hookKey{protocol.EventConnected, s, ""}]++
		c.Subscribe("public:room")
		want[hookKey{protocol.EventSubscribed, s, ""}]++
		return client{c, s, node}
	}

	// Before the outage: 6 clients, 2 per node.
	var clients []client
	for i := range 6 {
		clients = append(clients, connect(i, i%3))
	}
	noDups("before the outage", recv.waitFor(want, sessions))

	// The receiver is down while clients come and go.
	recv.stop()
	for _, cl := range clients[:2] { // two unsubscribe
		cl.c.Send(map[string]any{"type": "unsubscribe", "id": "u", "channel": "public:room"})
		cl.c.Expect("unsubscribed")
		want[hookKey{protocol.EventUnsubscribed, cl.session, ""}]++
	}
	for _, cl := range clients[2:4] { // two leave
		cl.c.Conn.Close()
		want[hookKey{protocol.EventDisconnected, cl.session, ""}]++
	}
	for i := 6; i < 9; i++ { // three more come, one per node
		clients = append(clients, connect(i, i%3))
	}
	wstest.WaitFor(t, func() error { // the nodes tried and failed: the outage is felt
		if n := sumCounter(nodes, func(n *node) *dto.Metric { return counter(n.Metrics().WebhookFailed) }); n < 6 {
			return fmt.Errorf("%v failed POSTs while the receiver is down", n)
		}
		return nil
	})
	recv.start()
	noDups("after the outage", recv.waitFor(want, sessions))
	evs, _ := recv.received()
	wstest.WaitFor(t, func() error { // the counters follow the acks, just after the 2xx
		if n := sumCounter(nodes, func(n *node) *dto.Metric { return counter(n.Metrics().WebhookDelivered) }); int(n) != len(evs) {
			return fmt.Errorf("the nodes count %v events delivered, the receiver has %d", n, len(evs))
		}
		return nil
	})

	// The connections' internal presence channel is not listed to the API.
	for _, q := range []url.Values{{}, {"prefix": {"$"}}, {"limit": {"1"}}} {
		status, out := apiGet(t, nodes[0].URL, "/api/channels", q)
		if b, _ := json.Marshal(out); status != 200 || strings.Contains(string(b), "$sessions") {
			t.Errorf("GET /api/channels?%s: %d %s", q.Encode(), status, b)
		}
	}
	// Node w3 loses its broker, as if it died: its connections are told node_lost by another.
	for _, cl := range clients {
		if cl.node == 2 && cl.c.Conn != nil && !slices.Contains([]string{clients[2].session, clients[3].session}, cl.session) {
			want[hookKey{protocol.EventDisconnected, cl.session, protocol.ReasonNodeLost}]++
		}
	}
	_ = links[2].Close()
	noDups("after node_lost", recv.waitFor(want, sessions))
	evs, _ = recv.received()
	recv.mu.Lock()
	t.Logf("%d events in %d POSTs; %v failed attempts during the outage", len(evs), recv.posts,
		sumCounter(nodes, func(n *node) *dto.Metric { return counter(n.Metrics().WebhookFailed) }))
	recv.mu.Unlock()
	for _, e := range evs {
		if e.Reason == protocol.ReasonNodeLost && e.Node != "w3" {
			t.Errorf("node_lost of %s names node %q, want w3, the node that died", e.Session, e.Node)
		}
	}
}

func counter(c interface{ Write(*dto.Metric) error }) *dto.Metric {
	var m dto.Metric
	_ = c.Write(&m)
	return &m
}

func sumCounter(nodes []*node, get func(*node) *dto.Metric) float64 {
	var sum float64
	for _, n := range nodes {
		sum += get(n).GetCounter().GetValue()
	}
	return sum
}

// TestNodeLostNeedsPresence: events.node_lost is refused, naming it, by New on a broker that keeps
// no presence (every broker package keeps it now; a broker given with WithBroker may not).
func TestNodeLostNeedsPresence(t *testing.T) {
	b := memory.NewBroker(memory.Config{})
	t.Cleanup(b.Close)
	_, err := gateway.New(testConfig(t, "GATEWAY_EVENTS_NODE_LOST=true"), gateway.WithBroker(noPresence{b.Node("x")}))
	if err == nil || !strings.Contains(err.Error(), "events.node_lost") {
		t.Fatalf("New with events.node_lost on a broker without presence: %v", err)
	}
}

// TestWebhooksLongOutage (set GATEWAY_TEST_LONG_OUTAGE=1; about 80 s per broker): the receiver is
// down for 70 s while 60 clients connect and subscribe on 3 nodes; afterwards it has every event,
// none lost, and none twice: no broker gives an event a live node holds to another member (on
// jetstream the node reports it in progress within ack_wait, 30 s; on redis it renews its pending
// entries within the claim idle time, 60 s; on kafka the node holds one event at a time:
// webhooks.batch is 1 there).
func TestWebhooksLongOutage(t *testing.T) {
	if os.Getenv("GATEWAY_TEST_LONG_OUTAGE") == "" {
		t.Skip("set GATEWAY_TEST_LONG_OUTAGE=1 to run it (about 80 s per broker)")
	}
	const outage = 70 * time.Second
	for _, cb := range nodetest.Brokers {
		t.Run(cb.Name, func(t *testing.T) {
			cluster := cb.Setup(t)
			prefix := cluster.Prefix(t)
			recv := newHookReceiver(t)
			env := []string{"GATEWAY_TOPIC_PREFIX=" + prefix, "GATEWAY_EVENTS_HEARTBEAT=1h", "GATEWAY_WS_PING_INTERVAL=1h",
				"GATEWAY_WEBHOOKS_URL=" + recv.url(), "GATEWAY_WEBHOOKS_SECRET=" + webhookSecret, "GATEWAY_WEBHOOKS_RETRY_MAX=5s"}
			var newBroker func(id string) transports.Broker
			if cb.InProcess {
				shared := memory.NewBroker(memory.Config{})
				t.Cleanup(shared.Close)
				newBroker = func(string) transports.Broker { return shared.Node(prefix) }
			} else {
				brokerEnv := append(append([]string{"GATEWAY_NATS_URL=nats://" + nodetest.NATSAddr, "GATEWAY_REDIS_ADDR=" + nodetest.RedisAddr},
					cluster.Env...), env...)
				newBroker = func(id string) transports.Broker {
					b, err := gateway.NewBroker(testConfig(t, append(brokerEnv, "GATEWAY_NODE_ID="+id)...), nil)
					if err != nil {
						t.Fatal(err)
					}
					return b
				}
			}
			var nodes []*node
			for i := range 3 {
				id := fmt.Sprintf("w%d", i+1)
				b := newBroker(id)
				t.Cleanup(func() { _ = b.Close() })
				nodes = append(nodes, startNode(t, testConfig(t, append(slices.Clone(env), "GATEWAY_NODE_ID="+id)...), gateway.WithBroker(b)))
			}
			for _, n := range nodes {
				wstest.WaitFor(t, func() error {
					if s := readyStatus(n.URL); s != 200 {
						return fmt.Errorf("node %s: /readyz %d", n.URL, s)
					}
					return nil
				})
			}
			recv.stop()
			want := map[hookKey]int{}
			sessions := map[string]bool{}
			for i := range 60 {
				c, w := wstest.Dial(t, nodes[i%3].URL, allowAll(t, fmt.Sprintf("u%d", i)))
				c.Subscribe("public:room")
				sessions[w.Str("session")] = true
				want[hookKey{protocol.EventConnected, w.Str("session"), ""}] = 1
				want[hookKey{protocol.EventSubscribed, w.Str("session"), ""}] = 1
			}
			time.Sleep(outage) // the outage itself, not a wait for a result
			recv.start()
			back := time.Now()
			poll.Until(t, 2*time.Minute, func() error { // every event, counted once per id
				evs, _ := recv.received()
				got := map[hookKey]bool{}
				for _, e := range evs {
					got[hookKey{e.Type, e.Session, ""}] = true
				}
				for k := range want {
					if !got[k] {
						return fmt.Errorf("%s not received", k)
					}
				}
				return nil
			})
			evs, times := recv.received()
			dups := 0
			for _, n := range times {
				if n > 1 {
					dups++
				}
			}
			t.Logf("%s, receiver down %v: %d events POSTed, %d unique ids (want %d), %d ids more than once; all in %v after it came back",
				cb.Name, outage, len(evs), len(times), len(want), dups, time.Since(back).Round(100*time.Millisecond))
			if len(times) != len(want) {
				t.Errorf("%d unique ids, want %d", len(times), len(want))
			}
			if dups > 0 {
				t.Errorf("%d ids received more than once on %s, which never gives a held event to another member", dups, cb.Name)
			}
		})
	}
}
