package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsgateway/gateway/clients/go/wsclient"
	"github.com/wsgateway/gateway/internal/auth"

	"github.com/wsgateway/gateway/internal/netns"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// cutFor is how long TestBrokerCut cuts the node off: 5 s, or NETFAULT_CUT (30s, 5m:
// the long variants, not run in CI).
func cutFor(t *testing.T) time.Duration {
	if s := os.Getenv("NETFAULT_CUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("NETFAULT_CUT: %v", err)
		}
		return d
	}
	return 5 * time.Second
}

// cutBrokers are brokers on a port of the test's own, listening on every address: the node in
// the namespace reaches them at the broker link's host address, the host's node on loopback.
var cutBrokers = []struct {
	name  string
	start func(t *testing.T) (host, ns []string)
}{
	{"redis", func(t *testing.T) ([]string, []string) {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			t.Skip("redis-server is not installed (scripts/test.sh installs it)")
		}
		port := nodetest.FreePort(t)
		cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "0.0.0.0", "--protected-mode", "no",
			"--dir", t.TempDir(), "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		transporttest.WaitFor(t, 10*time.Second, func() error {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
			}
			return err
		})
		return []string{"GATEWAY_BROKER=redis", fmt.Sprintf("GATEWAY_REDIS_ADDR=127.0.0.1:%d", port), "GATEWAY_REDIS_SHARDS=4"},
			[]string{"GATEWAY_BROKER=redis", fmt.Sprintf("GATEWAY_REDIS_ADDR=%%s:%d", port), "GATEWAY_REDIS_SHARDS=4"}
	}},
	{"jetstream", func(t *testing.T) ([]string, []string) {
		port := nodetest.FreePort(t)
		s, err := server.NewServer(&server.Options{Host: "0.0.0.0", Port: port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server did not start")
		}
		t.Cleanup(s.Shutdown)
		return []string{"GATEWAY_BROKER=jetstream", fmt.Sprintf("GATEWAY_NATS_URL=nats://127.0.0.1:%d", port), "GATEWAY_JETSTREAM_MAX_BYTES=16777216"},
			[]string{"GATEWAY_BROKER=jetstream", fmt.Sprintf("GATEWAY_NATS_URL=nats://%%s:%d", port), "GATEWAY_JETSTREAM_MAX_BYTES=16777216"}
	}},
}

// A node cut off from its broker (its broker link down, its clients' link up): its clients keep
// every message published meanwhile through another node, or are told recovered:false; a
// publish to the cut node is acked only if the broker has it; the node is ready again by itself.
func TestBrokerCut(t *testing.T) {
	for _, cb := range cutBrokers {
		t.Run(cb.name, func(t *testing.T) {
			ns := netns.New(t)
			brokerLink, clientLink := ns.Link(), ns.Link()
			hostEnv, nsEnv := cb.start(t)
			for i := range nsEnv {
				if bytes.Contains([]byte(nsEnv[i]), []byte("%s")) {
					nsEnv[i] = fmt.Sprintf(nsEnv[i], brokerLink.HostIP)
				}
			}
			common := []string{"GATEWAY_TOPIC_PREFIX=" + transporttest.Prefix(t), "GATEWAY_JWT_SECRET=" + secret,
				"GATEWAY_API_KEY=" + apiKey, "GATEWAY_DRAIN_PERIOD=500ms", "GATEWAY_LOG_LEVEL=warn", "GATEWAY_EVENTS_DISABLED=true"}
			// publish_timeout 1s: a publish to the cut node is answered (acked or unavailable) in the cut.
			cut := nodetest.StartAt(t, fmt.Sprintf("%s:%d", clientLink.NSIP, 8080),
				func(bin string) *exec.Cmd { return ns.Command(bin) }, append(append(nsEnv, common...), "GATEWAY_NODE_ID=cut", "GATEWAY_WS_PUBLISH_TIMEOUT=1s")...)
			other := nodetest.Start(t, append(append(hostEnv, common...), "GATEWAY_NODE_ID=other")...)
			readers := startReaders(t, []*nodetest.Node{cut}, 5)

			d := cutFor(t)
			const total = 150
			var acked []int
			outcomes := map[string]int{} // what the cut node answered its publishes during the cut
			notReady := false            // its /readyz answered other than 200 during the cut
			var wg sync.WaitGroup
			publishAll(t, other.URL, 0, total, map[int]func(){
				50: func() {
					brokerLink.Cut()
					t.Logf("cut at message 50 for %v", d)
					wg.Add(2)
					go func() { // /readyz of the cut node, until the link is up
						defer wg.Done()
						for brokerLinkDown(brokerLink) {
							notReady = notReady || readyStatus(cut.URL) != 200
							time.Sleep(100 * time.Millisecond)
						}
					}()
					go func() { // publishes to the cut node, one after another, until the link is up
						defer wg.Done()
						for seq := 0; brokerLinkDown(brokerLink); seq++ {
							err := publishTo(cut.URL, "acks", seq, 3*time.Second)
							if err == nil {
								acked = append(acked, seq)
								outcomes["acked"]++
							} else {
								outcomes[err.Error()]++
							}
						}
					}()
				},
				100: func() {
					// The rest of the cut passes with messages 50..99 published meanwhile.
					time.Sleep(d) // the fault's length, not a wait for a result
					brokerLink.Heal()
					t.Logf("healed")
				},
			})
			wg.Wait()
			if err := cut.WaitReady(60 * time.Second); err != nil {
				t.Fatalf("the cut node is not ready again: %v", err)
			}
			publishUntilAllReach(t, other.URL, readers, total)
			gaps := checkEveryMessageOrGap(t, readers, total)
			stored := historySeqs(t, other.URL, "acks")
			for _, seq := range acked {
				if !stored[seq] {
					t.Errorf("publish %d to the cut node was acked but the broker does not have it", seq)
				}
			}
			t.Logf("%s, cut %v: %d of %d clients told recovered:false; publishes to the cut node: %v (every acked one stored: %v); its /readyz left 200: %v",
				cb.name, d, gaps, len(readers), outcomes, !t.Failed(), notReady)
		})
	}
}

func brokerLinkDown(l *netns.Link) bool {
	out, _ := exec.Command("ip", "-o", "link", "show", l.HostDev).Output()
	return !bytes.Contains(out, []byte("state UP")) && !bytes.Contains(out, []byte(",UP"))
}

// publishTo publishes {"seq":seq} to channel through base's API, waiting at most timeout.
func publishTo(base, channel string, seq int, timeout time.Duration) error {
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]any{"seq": seq}, "msg_id": fmt.Sprintf("%s%d", channel, seq)})
	req, _ := http.NewRequest("POST", base+"/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return errors.New("no answer")
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// historySeqs are the seqs of channel's history, read through base.
func historySeqs(t *testing.T, base, channel string) map[int]bool {
	req, _ := http.NewRequestWithContext(context.Background(), "GET", base+"/api/history?channel="+channel+"&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Messages []struct {
			Data struct{ Seq int } `json:"data"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != 200 {
		t.Fatalf("history: %d %v", resp.StatusCode, err)
	}
	out := map[int]bool{}
	for _, m := range page.Messages {
		out[m.Data.Seq] = true
	}
	return out
}

// A client cut off (its link down: packets dropped, nothing closed) is found dead by the node's
// pings: melody's read deadline is websocket.ping_interval*2 + websocket.write_timeout after the
// last pong (transports/websocket/hub.go: PongWait), so the node drops the connection at most
// that long after the cut (plus a scheduling moment), and frees it: presence leave, the
// gateway_connections gauge. After the heal the client resumes and has every message or is told
// recovered:false.
func TestClientCut(t *testing.T) {
	nodetest.SkipUnreachable(t, "Redis", nodetest.RedisAddr)
	ns := netns.New(t)
	link := ns.Link()
	const ping, write = 500 * time.Millisecond, time.Second
	bound := 2*ping + write
	admin := nodetest.FreeAddr(t)
	node := nodetest.StartAt(t, fmt.Sprintf("%s:%d", link.HostIP, nodetest.FreePort(t)), func(bin string) *exec.Cmd { return exec.Command(bin) },
		"GATEWAY_BROKER=redis", "GATEWAY_REDIS_ADDR="+nodetest.RedisAddr, "GATEWAY_TOPIC_PREFIX="+nodetest.SharedPrefix(t),
		"GATEWAY_JWT_SECRET="+secret, "GATEWAY_API_KEY="+apiKey, "GATEWAY_LOG_LEVEL=warn", "GATEWAY_ADMIN_ADDR="+admin,
		"GATEWAY_PRESENCE_CHANNELS=feed", "GATEWAY_WS_PING_INTERVAL="+ping.String(), "GATEWAY_WS_WRITE_TIMEOUT="+write.String())

	r := &reader{}
	tok, _ := auth.SignHS256([]byte(secret), "cut-client", time.Hour, []string{"*"}, nil)
	opts := wsclient.Options{URLs: []string{node.URL}, Token: tok, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Dialer: &websocket.Dialer{NetDialContext: ns.DialContext, HandshakeTimeout: 2 * time.Second},
		OnResubscribed: func(_ string, recovered bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if !recovered {
				r.gaps++
			}
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := wsclient.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	sub, err := c.Subscribe(ctx, "feed")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range sub.Messages() {
			var d struct{ Seq int }
			_ = json.Unmarshal(m.Data, &d)
			r.mu.Lock()
			r.got = append(r.got, d.Seq)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = c.Close(); <-done })
	transporttest.WaitFor(t, 10*time.Second, func() error { return connections(node.URL, admin, 1) })

	const total = 60
	var detected time.Duration
	publishAll(t, node.URL, 0, total, map[int]func(){
		20: func() {
			link.Cut()
			start := time.Now()
			transporttest.WaitFor(t, 30*time.Second, func() error { return connections(node.URL, admin, 0) })
			detected = time.Since(start)
		},
		40: func() { link.Heal() },
	})
	publishUntilAllReach(t, node.URL, []*reader{r}, total)
	gaps := checkEveryMessageOrGap(t, []*reader{r}, total)
	t.Logf("client cut: freed %v after the cut (bound %v = 2*ping_interval + write_timeout); resumed with %d recovered:false", detected.Round(time.Millisecond), bound, gaps)
	checkDetection(t, detected, bound)
}

// connections checks that the node holds want connections: the gateway_connections gauge and the
// presence of channel feed.
func connections(base, admin string, want int) error {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + admin + "/metrics")
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(fmt.Sprintf("\ngateway_connections %d\n", want))) {
		return fmt.Errorf("gateway_connections is not %d", want)
	}
	req, _ := http.NewRequest("GET", base+"/api/presence_stats?channel=feed", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err = (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var st struct{ Connections int }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return err
	}
	if st.Connections != want {
		return fmt.Errorf("presence of feed has %d connections, want %d", st.Connections, want)
	}
	return nil
}
