package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// presenceBenchMembers is the size of the channel the presence query benchmarks read.
const presenceBenchMembers = 10000

// BenchmarkPresenceQuery: a presence query through a node, on a channel of 10,000 members, per
// broker that keeps presence: the `presence` frame round trip (a page of 100 from the middle) and
// GET /api/presence_stats. The members are joined through a second broker node of the same
// prefix (transports.Presence.Join), not by 10,000 WebSocket clients: those and the node's own
// sockets would need ~20,000 descriptors, the process's limit. One client asks.
func BenchmarkPresenceQuery(b *testing.B) {
	for _, bk := range nodetest.Brokers { // every broker keeps presence
		b.Run(bk.Name, func(b *testing.B) {
			cluster := bk.Setup(b)
			prefix := cluster.Prefix(b)
			n := startNode(b, testConfig(b, append(cluster.Env, "GATEWAY_PRESENCE_CHANNELS=room:*",
				"GATEWAY_LIMITS_SUBSCRIBE_RATE=1000000", "GATEWAY_LIMITS_SUBSCRIBE_BURST=1000000")...),
				gateway.WithBroker(cluster.New(b, prefix)))
			joiner := cluster.New(b, prefix).(transports.Presence)
			joinMembers(b, joiner, "room:big", presenceBenchMembers)
			c, _ := wstest.Dial(b, n.URL, allowAll(b, "asker"))
			after := fmt.Sprintf("s%06d", presenceBenchMembers/2)

			b.Run("frame", func(b *testing.B) {
				req := fmt.Sprintf(`{"type":"presence","id":"p","channel":"room:big","after":%q,"limit":100}`, after)
				var ts latencies
				for b.Loop() {
					t0 := time.Now()
					c.Send(req)
					if f := c.Expect("presence"); len(membersOf(f)) != 100 {
						b.Fatalf("page %v", f)
					}
					ts = append(ts, time.Since(t0))
				}
				ts.report(b)
			})
			b.Run("api_stats", func(b *testing.B) {
				q := url.Values{"channel": {"room:big"}}
				var ts latencies
				for b.Loop() {
					t0 := time.Now()
					if status, out := apiGet(b, n.URL, "/api/presence_stats", q); status != 200 || out["connections"] != float64(presenceBenchMembers) {
						b.Fatalf("presence_stats: %d %v", status, out)
					}
					ts = append(ts, time.Since(t0))
				}
				ts.report(b)
			})
		})
	}
}

// latencies are the durations of a benchmark's operations.
type latencies []time.Duration

// report adds their p50 and p99 to the benchmark's figures.
func (ts latencies) report(b *testing.B) {
	if len(ts) == 0 {
		return
	}
	slices.Sort(ts)
	b.ReportMetric(float64(ts[len(ts)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ts[len(ts)*99/100].Microseconds()), "p99-µs")
}

// joinMembers joins count members (sessions s000000…) to channel through p, 16 at a time, and
// makes them leave when the benchmark ends (a shared Redis or NATS keeps no leftovers).
func joinMembers(b *testing.B, p transports.Presence, channel string, count int) {
	b.Helper()
	each := func(fn func(i int) error) {
		var wg sync.WaitGroup
		var failed atomic.Value
		next := atomic.Int64{}
		for range 16 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < count; i = int(next.Add(1) - 1) {
					if err := fn(i); err != nil {
						failed.Store(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
	}
	each(func(i int) error {
		_, err := p.Join(context.Background(), channel, protocol.Member{User: fmt.Sprintf("u%d", i), Session: fmt.Sprintf("s%06d", i), Node: "bench"})
		return err
	})
	b.Cleanup(func() {
		each(func(i int) error {
			_, err := p.Leave(context.Background(), channel, fmt.Sprintf("s%06d", i))
			return err
		})
	})
}

// BenchmarkPresenceJoinStorm: N clients (PRESENCE_STORM_SIZES, default 1000,2000) subscribe to one
// join_leave presence channel of one node (memory broker, or PRESENCE_STORM_BROKER: redis,
// jetstream) as fast as they can, once per coalescing window (PRESENCE_STORM_COALESCE, default
// 0,100ms: without coalescing and with the default window, in the same run); it reports the
// node's CPU (this process's rusage: the clients run in a child process,
// TestPresenceStormClients), the join frames the clients got and the members those frames told
// of, and the wall time, in total and per join. Run with -benchtime 1x: one storm per size.
// PRESENCE_STORM_LOG=1 writes the node's warnings to stderr (joins the broker refused, ...).
func BenchmarkPresenceJoinStorm(b *testing.B) {
	sizes := []int{1000, 2000}
	if s := os.Getenv("PRESENCE_STORM_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			sizes = append(sizes, v)
		}
	}
	windows := []string{"0", "100ms"}
	if s := os.Getenv("PRESENCE_STORM_COALESCE"); s != "" {
		windows = strings.Split(s, ",")
	}
	for _, size := range sizes {
		for _, window := range windows {
			b.Run(fmt.Sprintf("%d/coalesce=%s", size, window), func(b *testing.B) {
				for b.Loop() {
					presenceStorm(b, size, window)
				}
			})
		}
	}
}

func presenceStorm(b *testing.B, clients int, window string) {
	env := []string{"GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_JOIN_LEAVE=room:*", "GATEWAY_PRESENCE_COALESCE=" + window}
	var opts []gateway.Option
	if name := os.Getenv("PRESENCE_STORM_BROKER"); name != "" && name != "memory" {
		i := slices.IndexFunc(nodetest.Brokers, func(bk nodetest.Broker) bool { return bk.Name == name })
		if i < 0 {
			b.Fatalf("PRESENCE_STORM_BROKER %q: no such broker", name)
		}
		cluster := nodetest.Brokers[i].Setup(b)
		env = append(env, cluster.Env...)
		opts = append(opts, gateway.WithBroker(cluster.New(b, transporttest.Prefix(b))))
	}
	if os.Getenv("PRESENCE_STORM_LOG") != "" { // the node's warnings on stderr: failed joins, publishes
		opts = append(opts, gateway.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	}
	n := startNode(b, testConfig(b, env...), opts...)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPresenceStormClients$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PRESENCE_STORM_URL="+n.URL, "PRESENCE_STORM_CLIENTS="+strconv.Itoa(clients))
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	cpu0 := processCPU()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// The child prints "joins <frames> <nanoseconds since it started dialling> <members>"
	// whenever its count changed, "ready <nanoseconds>" once every client is subscribed, then "done" when the
	// count has not moved for a second after the node counts every member.
	var joins, members, lastNs, readyNs, disconnected int64
	lines := bufio.NewScanner(out)
	deadline := time.AfterFunc(5*time.Minute, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "joins":
			joins, _ = strconv.ParseInt(f[1], 10, 64)
			lastNs, _ = strconv.ParseInt(f[2], 10, 64)
			members, _ = strconv.ParseInt(f[3], 10, 64)
		case "disconnected":
			disconnected, _ = strconv.ParseInt(f[1], 10, 64)
		case "ready":
			readyNs, _ = strconv.ParseInt(f[1], 10, 64)
		}
		if f[0] == "done" {
			break
		}
	}
	cpu := processCPU() - cpu0 // includes the child's last idle second: the node is idle then too
	_ = cmd.Wait()
	if ps := cmd.ProcessState; ps != nil {
		b.ReportMetric(float64((ps.UserTime() + ps.SystemTime()).Milliseconds()), "clients-cpu-ms")
	}
	if readyNs == 0 {
		b.Fatalf("the storm's clients did not finish (joins seen %d)", joins)
	}
	b.ReportMetric(float64(disconnected), "disconnected")
	b.ReportMetric(float64(joins), "join-frames")
	b.ReportMetric(float64(joins)/float64(clients), "frames/join")
	b.ReportMetric(float64(members)/float64(clients), "members-told/join")
	b.ReportMetric(cpu.Seconds()*1000, "node-cpu-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(clients), "node-cpu-µs/join")
	b.ReportMetric(float64(readyNs)/1e6, "subscribed-ms")
	b.ReportMetric(float64(lastNs)/1e6, "wall-ms")
}

// processCPU is this process's user and system CPU time (not its children's).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPresenceStormClients is the client side of BenchmarkPresenceJoinStorm, run in a child
// process (skipped otherwise): it dials PRESENCE_STORM_CLIENTS clients to PRESENCE_STORM_URL from
// 64 goroutines, each subscribing to room:storm and counting the join frames it gets and the
// members they tell of, and reports on stdout (see presenceStorm).
func TestPresenceStormClients(t *testing.T) {
	base := os.Getenv("PRESENCE_STORM_URL")
	if base == "" {
		t.Skip("the client side of BenchmarkPresenceJoinStorm")
	}
	clients, _ := strconv.Atoi(os.Getenv("PRESENCE_STORM_CLIENTS"))
	tokens := make([]string, clients)
	for i := range tokens {
		tokens[i] = allowAll(t, fmt.Sprintf("u%d", i))
	}
	var joins, members atomic.Int64
	var subscribed sync.WaitGroup
	subscribed.Add(clients)
	var readers sync.WaitGroup
	defer readers.Wait()
	ctx, stop := context.WithCancel(context.Background())
	defer stop() // first: closes the connections, which ends the readers
	start := time.Now()
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/ws?token="
	dialer := websocket.Dialer{HandshakeTimeout: time.Minute}
	next := atomic.Int64{}
	var dialers sync.WaitGroup
	for range 64 {
		dialers.Go(func() {
			for i := int(next.Add(1) - 1); i < clients; i = int(next.Add(1) - 1) {
				conn, _, err := dialer.Dial(wsURL+tokens[i], nil)
				if err != nil {
					fmt.Fprintf(os.Stderr, "client %d: %v\n", i, err)
					os.Exit(1)
				}
				context.AfterFunc(ctx, func() { conn.Close() })
				if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"s","channel":"room:storm"}`)); err != nil {
					fmt.Fprintf(os.Stderr, "client %d: %v\n", i, err)
					os.Exit(1)
				}
				readers.Go(func() { countJoins(conn, i, &joins, &members, &subscribed) })
			}
		})
	}
	dialers.Wait()
	subscribed.Wait()
	fmt.Printf("ready %d\n", time.Since(start).Nanoseconds())
	// Every member recorded (or some disconnected): then the count settles once the node's last
	// join frames are read.
	stats := func() float64 {
		req, _ := http.NewRequest("GET", base+"/api/presence_stats?channel=room:storm", nil)
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		n, _ := out["connections"].(float64)
		return n
	}
	var last, lastMembers int64 = -1, -1
	var lastNs int64
	quietSince := time.Now()
	for deadline := time.Now().Add(4 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if j, m := joins.Load(), members.Load(); j != last || m != lastMembers {
			last, lastMembers, lastNs, quietSince = j, m, time.Since(start).Nanoseconds(), time.Now()
			fmt.Printf("joins %d %d %d\n", last, lastNs, lastMembers)
			continue
		}
		if d := stormDisconnected.Load(); time.Since(quietSince) > time.Second && (d > 0 || stats() == float64(clients)) {
			fmt.Printf("disconnected %d\n", d)
			fmt.Println("done")
			return
		}
	}
	t.Fatal("the join count did not settle within 4 minutes")
}

// stormDisconnected counts the storm's clients the node disconnected (as slow consumers): they
// are members no more, and the storm ends without them.
var stormDisconnected atomic.Int64

// countJoins reads conn until it closes, counting join frames in joins and the members they
// tell of in members (one a "member", or each of "members": one "session" key each), and
// marking subscribed done at its subscribed frame.
func countJoins(conn *websocket.Conn, i int, joins, members *atomic.Int64, subscribed *sync.WaitGroup) {
	done := false // subscribed.Done called: at the subscribed frame, or when it will not come
	markDone := func() {
		if !done {
			done = true
			subscribed.Done()
		}
	}
	defer markDone()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		// The node writes "type" first: the head of the frame tells its type, without decoding it.
		switch head := data[:min(len(data), 24)]; {
		case bytes.HasPrefix(head, []byte(`{"type":"join"`)):
			joins.Add(1)
			members.Add(int64(bytes.Count(data, []byte(`"session":`))))
		case bytes.HasPrefix(head, []byte(`{"type":"subscribed"`)):
			markDone()
		case bytes.HasPrefix(head, []byte(`{"type":"disconnect"`)):
			markDone()
			if stormDisconnected.Add(1) == 1 {
				fmt.Fprintf(os.Stderr, "client %d: %s\n", i, data)
			}
		case bytes.HasPrefix(head, []byte(`{"type":"error"`)):
			fmt.Fprintf(os.Stderr, "client %d: %s\n", i, data)
		}
	}
}
