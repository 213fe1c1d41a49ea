package faults

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// restartable is a broker the test owns, on a fixed port, that keeps its data across a restart.
type restartable struct {
	name  string
	start func(t *testing.T) (env []string, stop func(), restart func())
}

func natsServer(t *testing.T, port int, dir string) *server.Server {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	return s
}

func ownNATS(broker string, extra ...string) func(t *testing.T) ([]string, func(), func()) {
	return func(t *testing.T) ([]string, func(), func()) {
		port, dir := nodetest.FreePort(t), t.TempDir()
		var mu sync.Mutex
		s := natsServer(t, port, dir)
		t.Cleanup(func() { mu.Lock(); s.Shutdown(); mu.Unlock() })
		stop := func() { mu.Lock(); s.Shutdown(); s.WaitForShutdown(); mu.Unlock() }
		restart := func() { ns := natsServer(t, port, dir); mu.Lock(); s = ns; mu.Unlock() }
		return append([]string{"GATEWAY_BROKER=" + broker, fmt.Sprintf("GATEWAY_NATS_URL=nats://127.0.0.1:%d", port)}, extra...), stop, restart
	}
}

var restartables = []restartable{
	{name: "nats", start: ownNATS("nats")},
	{name: "jetstream", start: ownNATS("jetstream", "GATEWAY_JETSTREAM_MAX_BYTES=16777216")},
	{name: "redis", start: func(t *testing.T) ([]string, func(), func()) {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			t.Skip("redis-server is not installed (scripts/test.sh installs it)")
		}
		port, dir := nodetest.FreePort(t), t.TempDir()
		var mu sync.Mutex
		var cmd *exec.Cmd
		start := func() {
			c := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
				"--appendonly", "yes", "--appendfsync", "always")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			cmd = c
			mu.Unlock()
			transporttest.WaitFor(t, 10*time.Second, func() error {
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err == nil {
					c.Close()
				}
				return err
			})
		}
		stop := func() {
			mu.Lock()
			defer mu.Unlock()
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		start()
		t.Cleanup(stop)
		return []string{"GATEWAY_BROKER=redis", fmt.Sprintf("GATEWAY_REDIS_ADDR=127.0.0.1:%d", port), "GATEWAY_REDIS_SHARDS=4"}, stop, start
	}},
	{name: "kafka", start: func(t *testing.T) ([]string, func(), func()) {
		port, dir := nodetest.FreePort(t), t.TempDir()
		var mu sync.Mutex
		var c *kfake.Cluster
		start := func() {
			var err error
			for range 100 { // the old listener's port can take a moment to be free again
				var nc *kfake.Cluster
				if nc, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir)); err == nil {
					mu.Lock()
					c = nc
					mu.Unlock()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Fatalf("kfake: %v", err)
		}
		stop := func() { mu.Lock(); c.Close(); mu.Unlock() }
		start()
		t.Cleanup(stop)
		return []string{"GATEWAY_BROKER=kafka", fmt.Sprintf("GATEWAY_KAFKA_BROKERS=127.0.0.1:%d", port), "GATEWAY_KAFKA_PARTITIONS=4"}, stop, start
	}},
}

// While messages flow the broker stops and starts again: the nodes come back by themselves and
// every client ends with every message, or was told recovered:false.
func TestBrokerRestart(t *testing.T) {
	for _, rb := range restartables {
		t.Run(rb.name, func(t *testing.T) {
			t.Parallel() // the brokers are independent: each its own server on its own port
			env, stop, restart := rb.start(t)
			b := broker{name: rb.name, setup: func(testing.TB) *nodetest.Cluster { return &nodetest.Cluster{Env: env} }}
			nodes := cluster(t, b, 2)
			readers := startReaders(t, nodes, 10)
			const total = 200
			publishAll(t, nodes[1].URL, 0, total, map[int]func(){80: func() {
				stop()
				transporttest.WaitFor(t, 20*time.Second, func() error {
					if s := readyStatus(nodes[1].URL); s != 503 {
						return fmt.Errorf("/readyz %d while the broker is down", s)
					}
					return nil
				})
				restart()
			}})
			publishUntilAllReach(t, nodes[1].URL, readers, total)
			gaps := checkEveryMessageOrGap(t, readers, total)
			t.Logf("%s: %d of %d clients were told recovered:false", rb.name, gaps, len(readers))
		})
	}
}

// publishUntilAllReach publishes messages after the last one (total, total+1, ...) until every
// reader has one at or after total-1, or a deadline passes (checkEveryMessageOrGap then says
// who did not). On a broker without history, a reader whose resubscription came after the last
// message (a loaded machine, a backoff) could otherwise never see it, though nothing is wrong.
func publishUntilAllReach(t *testing.T, base string, readers []*reader, total int) {
	deadline := time.Now().Add(90 * time.Second)
	for seq := total; time.Now().Before(deadline); seq++ {
		reached := true
		for _, r := range readers {
			got, _ := r.snapshot()
			reached = reached && len(got) > 0 && got[len(got)-1] >= total-1
		}
		if reached {
			return
		}
		_ = publish(base, seq)
		time.Sleep(50 * time.Millisecond)
	}
}

// checkEveryMessageOrGap checks that every reader has the last message (or one after it); a
// reader that was never told recovered:false must have had all of them exactly once in order,
// the others an increasing sequence. It returns how many readers had a gap.
func checkEveryMessageOrGap(t *testing.T, readers []*reader, total int) int {
	withGaps := 0
	for i, r := range readers {
		got, gaps := r.snapshot()
		if len(got) == 0 || got[len(got)-1] < total-1 {
			t.Fatalf("reader %d has %d messages (%d gaps); last %v", i, len(got), gaps, tail(got))
		}
		for j := 1; j < len(got); j++ {
			if got[j] <= got[j-1] {
				t.Fatalf("reader %d: %d after %d", i, got[j], got[j-1])
			}
		}
		if gaps == 0 && (len(got) < total || got[total-1] != total-1) {
			t.Fatalf("reader %d: %d of %d messages and never told recovered:false", i, len(got), total)
		}
		if gaps > 0 {
			withGaps++
		}
	}
	return withGaps
}

func readyStatus(base string) int {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
