package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

const masterName = "gw"

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSentinels starts n Sentinels (redis-server --sentinel) monitoring primary as masterName
// with a quorum of 2 and a down-after of 1 s, and waits until each knows the replicas and the
// other Sentinels, so that a failover can start as soon as the primary is down.
func startSentinels(t *testing.T, primary *server, n, replicas int) []string {
	t.Helper()
	var addrs []string
	for range n {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[4]s 1000\n"+
			"sentinel failover-timeout %[4]s 10000\n",
			port, dir, filepath.Join(dir, "sentinel.log"), masterName, primary.port)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(primary.bin, conf, "--sentinel")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	for _, a := range addrs {
		sc := goredis.NewSentinelClient(&goredis.Options{Addr: a})
		transporttest.WaitFor(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			rs, err := sc.Replicas(ctx, masterName).Result()
			if err != nil || len(rs) < replicas {
				return fmt.Errorf("sentinel %s knows %d replicas (%v)", a, len(rs), err)
			}
			ss, err := sc.Sentinels(ctx, masterName).Result()
			if err != nil || len(ss) < n-1 {
				return fmt.Errorf("sentinel %s knows %d other sentinels (%v)", a, len(ss), err)
			}
			return nil
		})
		_ = sc.Close()
	}
	return addrs
}

// info returns field of INFO replication of the server at addr ("" when unreachable).
func info(addr, field string) string {
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}

// TestMinReplicas: with redis.min_replicas a publish is acked only once that many replicas have
// it; a server without replicas fails it with ErrUnavailable, within the publish timeout.
func TestMinReplicas(t *testing.T) {
	primary := startServer(t)
	prefix := transporttest.Prefix(t)
	topic := protocol.ChannelTopic("wait")
	lone := newNode(t, redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: 300 * time.Millisecond})
	_, err := lone.PublishPositions(topic, message.NewMessage(watermill.NewUUID(), []byte("1")))
	if !errors.Is(err, transports.ErrUnavailable) || !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Fatalf("publish with no replica: %v, want ErrUnavailable (0 of 1 replicas)", err)
	}
	if err := lone.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("2")), message.NewMessage(watermill.NewUUID(), []byte("3"))); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("batch publish with no replica: %v, want ErrUnavailable", err)
	}

	replica := startServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	transporttest.WaitFor(t, 20*time.Second, func() error {
		if s := info(replica.addr, "master_link_status"); s != "up" {
			return fmt.Errorf("replica link %q", s)
		}
		return nil
	})
	b := newNode(t, redis.Config{Addr: primary.addr, Prefix: prefix, MinReplicas: 1, Timeout: 5 * time.Second})
	pos, err := b.PublishPositions(topic, message.NewMessage(watermill.NewUUID(), []byte("4")))
	if err != nil || len(pos) != 1 {
		t.Fatalf("publish with a replica: %v %v", pos, err)
	}
	// Acked means on the replica: read it there.
	rc := goredis.NewClient(&goredis.Options{Addr: replica.addr})
	defer rc.Close()
	id := fmt.Sprintf("%d-%d", pos[0].Hi, pos[0].Lo)
	got, err := rc.XRange(context.Background(), channelKey(prefix, "wait"), id, id).Result()
	if err != nil || len(got) != 1 {
		t.Fatalf("the acked entry %s on the replica: %v %v", id, got, err)
	}
	if _, err := redis.New(redis.Config{MinReplicas: -1}, nil); err == nil || !strings.HasPrefix(err.Error(), "redis.min_replicas:") {
		t.Errorf("min_replicas -1: %v, want an error naming redis.min_replicas", err)
	}
}

// TestSentinelFailover: a node in sentinel mode publishes under load (4 publishers, one message
// per publish); replication is cut (the replica's link killed, its user switched off) and the
// primary SIGKILLed once publishes went on for a while; the Sentinels promote the replica, the old
// primary comes back (empty, no persistence) as a replica of the new one. The node must serve again
// (publishes acked, a subscription made before the failover delivers what is published after),
// and the test counts the acked messages the new primary does not hold: with min_replicas 1
// none may be missing; with 0 the count is logged (docs/brokers/redis.md, Production).
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 5 Redis processes and fails one over (about 10 s)")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	for _, minReplicas := range []int{0, 1} {
		t.Run(fmt.Sprintf("min_replicas=%d", minReplicas), func(t *testing.T) { sentinelFailover(t, minReplicas) })
	}
}

// replArgs make every server of the failover test replicate as user repl, whom the test
// switches off on the primary to cut replication (no full-sync delay: the test is quicker).
var replArgs = []string{"--user", "repl", "on", ">replpw", "+psync", "+replconf", "+ping", "--masteruser", "repl", "--masterauth", "replpw",
	"--repl-diskless-sync-delay", "0"}

func sentinelFailover(t *testing.T, minReplicas int) {
	primary := startServer(t, replArgs...)
	replica := startServer(t, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.port)}, replArgs...)...)
	transporttest.WaitFor(t, 20*time.Second, func() error {
		if s := info(replica.addr, "master_link_status"); s != "up" {
			return fmt.Errorf("replica link %q", s)
		}
		return nil
	})
	sentinels := startSentinels(t, primary, 3, 1)

	prefix := transporttest.Prefix(t)
	b := newNode(t, redis.Config{
		Mode: redis.ModeSentinel, MasterName: masterName, SentinelAddrs: sentinels, Prefix: prefix,
		MinReplicas: minReplicas, MaxLen: 1 << 40, Timeout: time.Second, BlockTimeout: 200 * time.Millisecond,
	})
	topic := protocol.ChannelTopic("failover")
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: sentinels[0]})
	defer sc.Close()
	r := failOver(t, b, topic, failoverSteps{
		primary: primary.addr,
		kill:    primary.stop, // SIGKILL
		promoted: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			addr, err := sc.GetMasterAddrByName(ctx, masterName).Result()
			if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(replica.port) {
				return fmt.Errorf("sentinel says the primary is %v (%v)", addr, err)
			}
			return nil
		},
		// Back empty (no persistence), as a replica of the new primary, as its operator (or the
		// Sentinels, after their next look at it, some 10 s) would make it.
		rejoin: func(t *testing.T) {
			primary.args = append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(replica.port)}, replArgs...)
			primary.start(t)
			transporttest.WaitFor(t, 30*time.Second, func() error {
				if s := info(primary.addr, "master_link_status"); s != "up" || info(primary.addr, "master_port") != strconv.Itoa(replica.port) {
					return fmt.Errorf("old primary: link %q to port %q", s, info(primary.addr, "master_port"))
				}
				return nil
			})
		},
	})

	// Acked but not on the new primary: lost.
	lost := r.lost(t, replica.addr, channelKey(prefix, "failover")).count
	t.Logf("min_replicas=%d: %d acked (%d before the replication cut, %d before the kill), %d publishes failed, %d acked messages lost; primary promoted %v after the kill, old primary a replica after %v",
		minReplicas, len(r.acked), r.cutAcked, r.beforeKill, r.failed.Load(), lost, r.promoted.Round(time.Millisecond), r.rejoined.Round(time.Millisecond))
	if minReplicas > 0 && lost > 0 {
		t.Errorf("min_replicas=%d: %d acked messages lost", minReplicas, lost)
	}
}
