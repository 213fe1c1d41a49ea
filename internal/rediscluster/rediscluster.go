// Package rediscluster is a test helper: a Redis Cluster of redis-server processes on free
// loopback ports (primaries, each with its replicas), made with `redis-cli --cluster create`,
// whose servers can be killed and started again on the same ports and directories (the cluster
// tests of the redis broker). The servers keep no data on disk (no RDB, no AOF): a server
// started again comes back empty, with its cluster identity (nodes.conf), and rejoins as the
// cluster tells it.
//
// A Cluster is safe for use by several goroutines.
package rediscluster

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
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/poll"
)

// wait bounds the start of a server and the cluster's agreement on its slots.
const wait = 30 * time.Second

// NodeTimeout is the servers' cluster-node-timeout unless Start's args give another: a primary
// unreachable this long is failed over to one of its replicas (a second or so later). Long
// enough that a server starved of CPU on a loaded machine is not failed over; tests that fail a
// primary over give a shorter one (FastFailover).
const NodeTimeout = 5 * time.Second

// FastFailover are Start args for tests that fail primaries over: cluster-node-timeout 1 s, so
// that a replica is promoted some 2 s after its primary died.
var FastFailover = []string{"--cluster-node-timeout", "1000"}

// Cluster is a Redis Cluster; Start starts it and the test's cleanup stops it.
type Cluster struct {
	t    testing.TB
	bin  string
	args []string

	mu    sync.Mutex
	nodes []*node
}

type node struct {
	port, bus int
	dir       string
	cmd       *exec.Cmd     // nil: down
	exited    chan struct{} // closed once cmd has exited and was waited for
}

// Start starts primaries*(1+replicas) servers (args are more redis-server arguments for each,
// after and so over the helper's own),
// makes them a cluster whose primaries share the 16384 slots, each with replicas replicas, and
// waits until every server reports the cluster ok and every replica is in sync. It skips the
// test when redis-server or redis-cli is not installed.
func Start(t testing.TB, primaries, replicas int, args ...string) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: cannot start a Redis Cluster")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli is not installed: cannot create a Redis Cluster")
	}
	c := &Cluster{t: t, bin: bin, args: args}
	n := primaries * (1 + replicas)
	ports := freePorts(t, 2*n)
	for i := range n {
		c.nodes = append(c.nodes, &node{port: ports[2*i], bus: ports[2*i+1], dir: t.TempDir()})
	}
	t.Cleanup(func() {
		for i := range n {
			c.Kill(i)
		}
	})
	for i := range n {
		c.Restart(i)
	}
	create := []string{"--cluster", "create"}
	create = append(create, c.Addrs()...)
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(primaries, replicas)
	return c
}

// freePorts returns n distinct free loopback ports: all are held until all are chosen, so that
// none is handed out twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Addrs are host:port of every server, up or down, in the order of their index.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i := range c.nodes {
		out[i] = c.Addr(i)
	}
	return out
}

// Addr is host:port of server i.
func (c *Cluster) Addr(i int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.nodes[i].port))
}

// Index is the index of the server at addr, or -1.
func (c *Cluster) Index(addr string) int {
	for i := range c.nodes {
		if c.Addr(i) == addr {
			return i
		}
	}
	return -1
}

// Kill SIGKILLs server i, if up.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

// Restart starts server i (killing it first if up) on its port and directory, and waits until it
// answers PING. It comes back without data, with its cluster identity.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	c.mu.Lock()
	n := c.nodes[i]
	args := []string{"--port", strconv.Itoa(n.port), "--bind", "127.0.0.1", "--dir", n.dir,
		"--logfile", filepath.Join(n.dir, "redis.log"), "--save", "", "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(n.bus),
		"--cluster-config-file", filepath.Join(n.dir, "nodes.conf"),
		"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())),
		// A replica cut off from its primary for long is still promoted: the tests measure
		// what such a failover loses.
		"--cluster-replica-validity-factor", "0",
		"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
	cmd := exec.Command(c.bin, append(args, c.args...)...)
	err := cmd.Start()
	exited := make(chan struct{})
	if err == nil {
		n.cmd, n.exited = cmd, exited
		go func() { _ = cmd.Wait(); close(exited) }()
	}
	c.mu.Unlock()
	if err != nil {
		c.t.Fatalf("start redis-server %d: %v", i, err)
	}
	client := goredis.NewClient(&goredis.Options{Addr: c.Addr(i), MaxRetries: -1, DialerRetries: 1})
	defer client.Close()
	poll.Until(c.t, wait, func() error {
		select {
		case <-exited:
			c.t.Fatalf("redis-server %d (port %d) exited: %s", i, n.port, c.logTail(i))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return client.Ping(ctx).Err()
	})
}

// logTail is the end of server i's log file.
func (c *Cluster) logTail(i int) string {
	b, _ := os.ReadFile(filepath.Join(c.nodes[i].dir, "redis.log"))
	return string(b[max(0, len(b)-1000):])
}

// Up reports whether server i runs.
func (c *Cluster) Up(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].cmd != nil
}

// Node is one server as the cluster sees it (CLUSTER NODES).
type Node struct {
	Index   int // in Addrs
	ID      string
	Primary bool
	Of      string // a replica's primary's ID
	Failed  bool   // flagged fail (or pfail) by the server asked
	Slots   int    // how many slots a primary serves
}

// Nodes asks server i for the cluster's view (CLUSTER NODES).
func (c *Cluster) Nodes(i int) ([]Node, error) {
	client := goredis.NewClient(&goredis.Options{Addr: c.Addr(i), MaxRetries: -1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	text, err := client.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []Node
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := Node{Index: c.Index(addr), ID: f[0], Primary: strings.Contains(f[2], "master"),
			Failed: strings.Contains(f[2], "fail"), Of: strings.Trim(f[3], "-")}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if ok {
				b, _ = strconv.Atoi(hi)
			}
			n.Slots += b - a + 1
		}
		out = append(out, n)
	}
	return out, nil
}

// PrimaryOf is the index of the server that serves key's slot as its primary, as server asker
// sees it.
func (c *Cluster) PrimaryOf(asker int, key string) (int, error) {
	client := goredis.NewClient(&goredis.Options{Addr: c.Addr(asker), MaxRetries: -1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	slot, err := client.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return -1, err
	}
	slots, err := client.ClusterSlots(ctx).Result()
	if err != nil {
		return -1, err
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
			return c.Index(s.Nodes[0].Addr), nil
		}
	}
	return -1, fmt.Errorf("slot %d of %q is served by no one", slot, key)
}

// ReplicasOf are the indexes of the replicas of primary i, as server i sees them.
func (c *Cluster) ReplicasOf(i int) ([]int, error) {
	nodes, err := c.Nodes(i)
	if err != nil {
		return nil, err
	}
	var id string
	for _, n := range nodes {
		if n.Index == i {
			id = n.ID
		}
	}
	var out []int
	for _, n := range nodes {
		if !n.Primary && n.Of == id && n.Index >= 0 {
			out = append(out, n.Index)
		}
	}
	return out, nil
}

// WaitHealthy waits until every running server reports cluster_state ok and sees primaries
// primaries serving all slots, none failed, each with replicas replicas in sync.
func (c *Cluster) WaitHealthy(primaries, replicas int) {
	c.t.Helper()
	poll.Until(c.t, wait, func() error { return c.healthy(primaries, replicas) })
}

func (c *Cluster) healthy(primaries, replicas int) error {
	for i := range c.nodes {
		if !c.Up(i) {
			continue
		}
		if s := c.Info(i, "", "cluster_state"); s != "ok" {
			return fmt.Errorf("server %d: cluster_state %q", i, s)
		}
		nodes, err := c.Nodes(i)
		if err != nil {
			return fmt.Errorf("server %d: %w", i, err)
		}
		ps, rs, slots := 0, 0, 0
		for _, n := range nodes {
			switch {
			case n.Failed && c.Up(n.Index):
				return fmt.Errorf("server %d sees server %d failed", i, n.Index)
			case n.Failed:
			case n.Primary && n.Slots > 0:
				ps++
				slots += n.Slots
			case !n.Primary:
				rs++
			}
		}
		if ps != primaries || slots != 16384 || rs != primaries*replicas {
			return fmt.Errorf("server %d sees %d primaries serving %d slots and %d replicas", i, ps, slots, rs)
		}
		if c.Info(i, "replication", "role") == "slave" {
			if s := c.Info(i, "replication", "master_link_status"); s != "up" {
				return fmt.Errorf("replica %d: link %q", i, s)
			}
		}
	}
	return nil
}

// Info returns field of INFO section of server i, or of CLUSTER INFO when section is empty
// ("" when it cannot say).
func (c *Cluster) Info(i int, section, field string) string {
	client := goredis.NewClient(&goredis.Options{Addr: c.Addr(i), MaxRetries: -1})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var s string
	var err error
	if section == "" {
		s, err = client.ClusterInfo(ctx).Result()
	} else {
		s, err = client.Info(ctx, section).Result()
	}
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

// Client returns a go-redis cluster client of the cluster; the test's cleanup closes it.
func (c *Cluster) Client() *goredis.ClusterClient {
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = client.Close() })
	return client
}

// DeleteKeys deletes, on every primary, the keys matching pattern (SCAN MATCH).
func (c *Cluster) DeleteKeys(ctx context.Context, pattern string) error {
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()})
	defer client.Close()
	return client.ForEachMaster(ctx, func(ctx context.Context, p *goredis.Client) error {
		iter := p.Scan(ctx, 0, pattern, 1000).Iterator()
		var errs []error
		for iter.Next(ctx) {
			errs = append(errs, p.Del(ctx, iter.Val()).Err())
		}
		return errors.Join(append(errs, iter.Err())...)
	})
}

// MoveSlot moves slot, with its keys, from its primary to primary to, as `redis-cli --cluster
// reshard` does: the slot IMPORTING on to and MIGRATING on its owner, its keys MIGRATEd a few
// at a time (clients are redirected meanwhile with ASK), then the slot given to to on every
// primary (clients then get MOVED).
func (c *Cluster) MoveSlot(slot, to int) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	from := -1
	asked := goredis.NewClient(&goredis.Options{Addr: c.Addr(to)})
	slots, err := asked.ClusterSlots(ctx).Result()
	_ = asked.Close()
	if err != nil {
		return err
	}
	var primaries []int
	for _, s := range slots {
		p := c.Index(s.Nodes[0].Addr)
		primaries = append(primaries, p)
		if s.Start <= slot && slot <= s.End {
			from = p
		}
	}
	if from < 0 || from == to {
		return fmt.Errorf("slot %d is on server %d, cannot move it to %d", slot, from, to)
	}
	src := goredis.NewClient(&goredis.Options{Addr: c.Addr(from)})
	defer src.Close()
	dst := goredis.NewClient(&goredis.Options{Addr: c.Addr(to)})
	defer dst.Close()
	srcID, err := src.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return err
	}
	dstID, err := dst.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return err
	}
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err(); err != nil {
		return err
	}
	if err := src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err(); err != nil {
		return err
	}
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 10).Result()
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", "127.0.0.1", c.nodes[to].port, "", 0, 5000, "REPLACE", "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("migrate %d keys of slot %d: %w", len(keys), slot, err)
		}
	}
	seen := map[int]bool{}
	for _, p := range append([]int{to, from}, primaries...) {
		if seen[p] {
			continue
		}
		seen[p] = true
		pc := goredis.NewClient(&goredis.Options{Addr: c.Addr(p)})
		err := pc.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err()
		_ = pc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
