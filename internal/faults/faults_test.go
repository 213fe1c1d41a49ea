package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/clients/go/wsclient"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
)

const (
	secret = "faults-secret-0123456789abcdef"
	apiKey = "faults-api-key-0123456789"
)

// broker is one broker under test: the GATEWAY_* settings of its nodes.
type broker struct {
	name    string
	history bool
	setup   func(t testing.TB) *nodetest.Cluster // skips when the broker is missing
}

// brokers are the shared test brokers (nodetest.Brokers) whose nodes can be processes: all but
// memory.
var brokers = func() []broker {
	var out []broker
	for _, b := range nodetest.Brokers {
		if b.InProcess {
			continue
		}
		out = append(out, broker{name: b.Name, history: b.History, setup: b.Setup})
	}
	return out
}()

// cluster starts n node processes on one broker namespace; extra adds settings.
func cluster(t *testing.T, b broker, n int, extra ...string) []*nodetest.Node {
	c := b.setup(t)
	prefix := c.Prefix(t) // what the nodes keep on the shared server goes when the test ends
	return startNodes(t, prefix, n, append(c.Env, extra...)...)
}

// startNodes starts n node processes, n1 to nN, with env and the settings every test here
// shares: topic prefix, secrets, a 500 ms drain, warn logs, no events.
func startNodes(t *testing.T, prefix string, n int, env ...string) []*nodetest.Node {
	env = append(env, "GATEWAY_TOPIC_PREFIX="+prefix, "GATEWAY_JWT_SECRET="+secret,
		"GATEWAY_API_KEY="+apiKey, "GATEWAY_DRAIN_PERIOD=500ms", "GATEWAY_LOG_LEVEL=warn", "GATEWAY_EVENTS_DISABLED=true")
	nodes := make([]*nodetest.Node, n)
	for i := range nodes {
		nodes[i] = nodetest.Start(t, append(env, fmt.Sprintf("GATEWAY_NODE_ID=n%d", i+1))...)
	}
	return nodes
}

// publishThroughNodes publishes 0..total-1 through each node in turn (every node keeps
// serving), running the fault at an index first; a refused publish is retried every 20 ms for
// 30 s. It returns the refused attempts and the longest publish, and logs those over 200 ms.
func publishThroughNodes(t *testing.T, nodes []*nodetest.Node, total int, faults map[int]func()) (failed int, longest time.Duration) {
	t.Helper()
	for seq := range total {
		if f := faults[seq]; f != nil {
			f()
		}
		base := nodes[seq%len(nodes)].URL
		began := time.Now()
		deadline := began.Add(30 * time.Second)
		for {
			err := publish(base, seq)
			if err == nil {
				break
			}
			failed++
			if time.Now().After(deadline) {
				t.Fatalf("publish %d through %s: %v", seq, base, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		d := time.Since(began)
		longest = max(longest, d)
		if d > 200*time.Millisecond {
			t.Logf("publish %d took %v", seq, d.Round(time.Millisecond))
		}
	}
	return failed, longest
}

func publish(base string, seq int) error {
	// The padding makes a client that does not read back up into the node quickly.
	data := map[string]any{"seq": seq, "pad": strings.Repeat("x", 8192)}
	body, _ := json.Marshal(map[string]any{"channel": "feed", "data": data, "msg_id": fmt.Sprintf("m%d", seq)})
	req, _ := http.NewRequest("POST", base+"/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// reader is one resuming client and what it received.
type reader struct {
	c     *wsclient.Client
	mu    sync.Mutex
	got   []int
	gaps  int // resubscriptions the server could not recover
	resub time.Time
}

func (r *reader) snapshot() ([]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.got...), r.gaps
}

// startReaders connects n clients, spread over the nodes (each lists them all, from its own),
// and subscribes them to "feed"; they read in the background until the test ends.
func startReaders(t *testing.T, nodes []*nodetest.Node, n int) []*reader {
	readers := make([]*reader, n)
	var wg sync.WaitGroup
	for i := range readers {
		r := &reader{}
		readers[i] = r
		urls := make([]string, len(nodes))
		for j := range nodes {
			urls[j] = nodes[(i+j)%len(nodes)].URL
		}
		tok, _ := auth.SignHS256([]byte(secret), fmt.Sprintf("u%d", i), time.Hour, []string{"*"}, nil)
		opts := wsclient.Options{URLs: urls, Token: tok, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
			OnResubscribed: func(_ string, recovered bool) {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.resub = time.Now()
				if !recovered {
					r.gaps++
				}
			}}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := wsclient.Dial(ctx, opts)
		if err != nil {
			cancel()
			t.Fatalf("client %d: %v", i, err)
		}
		sub, err := c.Subscribe(ctx, "feed")
		cancel()
		if err != nil {
			t.Fatalf("client %d subscribe: %v", i, err)
		}
		r.c = c
		t.Cleanup(func() { _ = c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range sub.Messages() {
				var d struct{ Seq int }
				_ = json.Unmarshal(m.Data, &d)
				r.mu.Lock()
				r.got = append(r.got, d.Seq)
				r.mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() {
		for _, r := range readers {
			_ = r.c.Close()
		}
		wg.Wait()
	})
	return readers
}

// checkComplete waits until every reader has 0..total-1 exactly once, in order; with no history
// a reader whose subscription was not recovered is excused from the messages of its gap.
func checkComplete(t *testing.T, readers []*reader, total int, history bool) {
	deadline := time.Now().Add(60 * time.Second)
	for i, r := range readers {
		for {
			got, gaps := r.snapshot()
			ok := len(got) == total
			if !history && gaps > 0 {
				ok = len(got) > 0 && got[len(got)-1] == total-1
			}
			if ok {
				for j := 1; j < len(got); j++ {
					if got[j] <= got[j-1] {
						t.Fatalf("reader %d: %d after %d: out of order or duplicated", i, got[j], got[j-1])
					}
				}
				if history {
					for j, v := range got {
						if v != j {
							t.Fatalf("reader %d: message %d is %d", i, j, v)
						}
					}
					if gaps != 0 {
						t.Fatalf("reader %d: %d unrecovered resubscriptions on a broker with history", i, gaps)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reader %d has %d of %d messages (%d gaps); last %v", i, len(got), total, gaps, tail(got))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func tail(s []int) []int {
	if len(s) > 5 {
		return s[len(s)-5:]
	}
	return s
}

// publishAll publishes from..to-1 through base; at each index in at it runs the fault first.
func publishAll(t *testing.T, base string, from, to int, at map[int]func()) {
	for seq := from; seq < to; seq++ {
		if f := at[seq]; f != nil {
			f()
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := publish(base, seq)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %d: %v", seq, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestNodeKilled(t *testing.T) {
	for _, b := range brokers {
		// In sequence: 30 readers of 8 KiB messages each keep the cores busy (in parallel each
		// broker's run took 2-3 times as long, for 20% less in all on a loaded machine).
		t.Run(b.name, func(t *testing.T) {
			nodes := cluster(t, b, 3)
			readers := startReaders(t, nodes, 30)
			var killed time.Time
			const total = 300
			publishAll(t, nodes[2].URL, 0, total, map[int]func(){100: func() {
				killed = time.Now()
				nodes[0].Kill()
			}})
			checkComplete(t, readers, total, b.history)
			var last time.Time
			moved := 0
			for _, r := range readers {
				r.mu.Lock()
				if r.resub.After(killed) {
					moved++
					if r.resub.After(last) {
						last = r.resub
					}
				}
				r.mu.Unlock()
			}
			if moved == 0 {
				t.Fatal("no client was on the killed node")
			}
			t.Logf("%s: %d clients of the killed node resumed elsewhere within %v of the SIGKILL", b.name, moved, last.Sub(killed).Round(time.Millisecond))
			if !b.history {
				for _, r := range readers {
					if _, gaps := r.snapshot(); gaps > 0 {
						return // the nats variant says recovered:false
					}
				}
				t.Fatal("nats keeps no history, yet no resubscription said recovered:false")
			}
		})
	}
}

func TestRollingRestart(t *testing.T) {
	for _, b := range brokers {
		if !b.history {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: own prefix, own node processes
			nodes := cluster(t, b, 3)
			readers := startReaders(t, nodes, 15)
			const total = 240
			roll := func(n *nodetest.Node) func() {
				return func() {
					if err := n.Term(30 * time.Second); err != nil {
						t.Fatalf("drain of %s: %v\n%s", n.Addr, err, n.Logs())
					}
					n.Restart()
				}
			}
			// The publisher uses the third node; the first two are drained and restarted in turn,
			// then the third, while the publisher moves to the first.
			publishAll(t, nodes[2].URL, 0, total/2, map[int]func(){40: roll(nodes[0]), 80: roll(nodes[1])})
			publishAll(t, nodes[0].URL, total/2, total, map[int]func(){total/2 + 40: roll(nodes[2])})
			checkComplete(t, readers, total, true)
		})
	}
}

// A client that stops reading is disconnected as a slow consumer before the node's memory grows,
// and once it reads again and resumes from its last position it has every message.
func TestSlowConsumerResumes(t *testing.T) {
	for _, b := range brokers {
		if !b.history {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			nodes := cluster(t, b, 2, "GATEWAY_WS_SEND_BUFFER=8")
			tok, _ := auth.SignHS256([]byte(secret), "slow", time.Hour, []string{"*"}, nil)
			slow := rawDial(t, nodes[0].URL, tok, 64<<10)
			slow.send(t, `{"type":"subscribe","id":"s","channel":"feed"}`)
			slow.until(t, "subscribed")
			// Publish until the node gives up on the client that does not read (bounded).
			total := 0
			for ; total < 3000 && metric(t, nodes[0].URL, "gateway_slow_consumer_disconnects_total") == 0; total++ {
				publishAll(t, nodes[1].URL, total, total+1, nil)
			}
			if total == 3000 {
				t.Fatal("the client that does not read was never disconnected")
			}
			publishAll(t, nodes[1].URL, total, total+20, nil) // more while it is away
			total += 20
			// It reads what it was sent, down to the disconnect, then resumes on the other node.
			var got []int
			last := ""
			for {
				f := slow.next(t)
				if f["type"] == "disconnect" {
					if f["code"] != "slow_consumer" {
						t.Fatalf("disconnect %v", f)
					}
					break
				}
				if f["type"] == "message" {
					got = append(got, seqOf(f))
					last, _ = f["position"].(string)
				}
			}
			again := rawDial(t, nodes[1].URL, tok, 0)
			sub, _ := json.Marshal(map[string]any{"type": "subscribe", "id": "r", "channel": "feed", "since": last})
			again.send(t, string(sub))
			for len(got) < total {
				f := again.next(t)
				switch f["type"] {
				case "message":
					got = append(got, seqOf(f))
				case "subscribed":
					if f["recovered"] != true {
						t.Fatalf("resume after a slow-consumer disconnect: %v", f)
					}
				}
			}
			for i, v := range got {
				if v != i {
					t.Fatalf("message %d is %d", i, v)
				}
			}
		})
	}
}

// raw is a bare WebSocket client that reads only when told to.
type raw struct{ c *websocket.Conn }

func rawDial(t *testing.T, base, tok string, readBuffer int) *raw {
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok && readBuffer > 0 {
			_ = tc.SetReadBuffer(readBuffer)
		}
		return c, err
	}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{c}
	r.until(t, "welcome")
	return r
}

func (r *raw) send(t *testing.T, s string) {
	if err := r.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (r *raw) next(t *testing.T) map[string]any {
	_ = r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, b, err := r.c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func (r *raw) until(t *testing.T, typ string) map[string]any {
	for {
		if f := r.next(t); f["type"] == typ {
			return f
		}
	}
}

func seqOf(f map[string]any) int {
	d, _ := f["data"].(map[string]any)
	v, _ := d["seq"].(float64)
	return int(v)
}

// metric reads a counter from a node's /metrics.
func metric(t *testing.T, base, name string) int {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return int(f)
		}
	}
	return 0
}
