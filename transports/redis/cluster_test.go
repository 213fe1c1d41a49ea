package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/internal/rediscluster"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// clusterConfig is the config of a node of cluster c.
func clusterConfig(c *rediscluster.Cluster, prefix string) redis.Config {
	return redis.Config{Mode: redis.ModeCluster, ClusterAddrs: c.Addrs(), Prefix: prefix, BlockTimeout: time.Second}
}

// dropClusterKeys deletes every key of prefix on the cluster when the test ends.
func dropClusterKeys(t *testing.T, c *rediscluster.Cluster, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, pattern := range []string{prefix + ":*", "{" + prefix + ":*"} {
			if err := c.DeleteKeys(ctx, pattern); err != nil {
				t.Logf("delete %s: %v", pattern, err)
			}
		}
	})
}

// clusterNodeMaker is transporttest's node constructor on cluster c.
func clusterNodeMaker(c *rediscluster.Cluster) transporttest.NewNode {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(t *testing.T, prefix string) transports.Broker {
		mu.Lock()
		if !seen[prefix] {
			seen[prefix] = true
			dropClusterKeys(t, c, prefix)
		}
		mu.Unlock()
		b, err := redis.New(clusterConfig(c, prefix), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func clusterPresenceNodeMaker(c *rediscluster.Cluster) transporttest.NewPresenceNode {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(t *testing.T, prefix, _ string, heartbeat time.Duration) transports.Broker {
		mu.Lock()
		if !seen[prefix] {
			seen[prefix] = true
			dropClusterKeys(t, c, prefix)
		}
		mu.Unlock()
		cfg := clusterConfig(c, prefix)
		cfg.Presence.Heartbeat = heartbeat
		b, err := redis.New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestRedisCluster runs the broker conformance suites (messages, history, positions, groups,
// held group messages, hook calls, presence) in cluster mode on a Redis Cluster of 3 primaries
// and 3 replicas, whose restart (every server at once, without persistence) the suites include,
// and checks that min_replicas waits for the replica of the stream's own primary.
func TestRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster of 6 servers")
	}
	c := rediscluster.Start(t, 3, 1)
	restart := func(t *testing.T) {
		for i := range c.Addrs() {
			c.Kill(i)
		}
		for i := range c.Addrs() {
			c.Restart(i)
		}
		c.WaitHealthy(3, 1)
	}
	t.Run("Conformance", func(t *testing.T) {
		transporttest.Run(t, transporttest.Features{History: true, RestartBroker: restart}, clusterNodeMaker(c))
	})
	t.Run("Presence", func(t *testing.T) {
		transporttest.RunPresence(t, transporttest.PresenceFeatures{RestartBroker: restart}, clusterPresenceNodeMaker(c))
	})
	t.Run("HookCalls", func(t *testing.T) {
		transporttest.RunHookCalls(t, transporttest.HookFeatures{RestartBroker: restart}, clusterNodeMaker(c))
	})
	t.Run("HeldGroupMessage", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		cfg := clusterConfig(c, prefix)
		cfg.BlockTimeout, cfg.ClaimIdle = 100*time.Millisecond, time.Second
		transporttest.HeldGroupMessage(t, newNode(t, cfg), newNode(t, cfg), cfg.ClaimIdle, 10*time.Second)
	})
	t.Run("FromClient", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		b, err := redis.NewFromClient(c.Client(), redis.Config{Prefix: prefix, BlockTimeout: 100 * time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		sub := subscribe(t, b, protocol.ChannelTopic("given"))
		if err := b.Publish(protocol.ChannelTopic("given"), transporttest.NewMessage("g")); err != nil {
			t.Fatal(err)
		}
		if m := transporttest.Receive(t, sub, 1, 10*time.Second)[0]; string(m.Payload) != "g" {
			t.Fatalf("got %q", m.Payload)
		}
	})
	t.Run("Connections", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		clients := func() (total int, per []string) {
			nodes, err := c.Nodes(0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if n.Primary && n.Slots > 0 {
					v := c.Info(n.Index, "clients", "connected_clients")
					k, _ := strconv.Atoi(v)
					total += k
					per = append(per, fmt.Sprintf("server %d: %s", n.Index, v))
				}
			}
			return total, per
		}
		before, _ := clients()
		b := newNode(t, clusterConfig(c, prefix))
		// A channel on every shard, and the direct stream: every reader runs.
		var subs []<-chan *message.Message
		for n := range redis.DefaultShards {
			subs = append(subs, subscribe(t, b, protocol.ChannelTopic(channelOfShard(n))))
		}
		direct := subscribe(t, b, protocol.TopicDirect)
		for n := range redis.DefaultShards {
			if err := b.Publish(protocol.ChannelTopic(channelOfShard(n)), transporttest.NewMessage("c")); err != nil {
				t.Fatal(err)
			}
			transporttest.Receive(t, subs[n], 1, 10*time.Second)
		}
		if err := b.Publish(protocol.TopicDirect, transporttest.NewMessage("d")); err != nil {
			t.Fatal(err)
		}
		transporttest.Receive(t, direct, 1, 10*time.Second)
		after, per := clients()
		t.Logf("one node reading %d shard streams and direct: %d connections to the primaries (%v)", redis.DefaultShards, after-before, per)
		// One blocked XREAD per shard stream and one for direct, plus a few idle in the pools.
		if after-before > redis.DefaultShards+1+6 {
			t.Errorf("%d connections for %d shard streams and direct", after-before, redis.DefaultShards)
		}
	})
	t.Run("Control", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		b := newNode(t, clusterConfig(c, prefix))
		ctx := context.Background()
		if err := b.PutControl(ctx, "k1", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		if err := b.PutControl(ctx, "k2", []byte("v2")); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteControl(ctx, "k1"); err != nil {
			t.Fatal(err)
		}
		got, err := b.ListControl(ctx)
		if err != nil || len(got) != 1 || string(got["k2"]) != "v2" {
			t.Fatalf("control records %q %v, want k2=v2 alone", got, err)
		}
	})
	t.Run("MinReplicas", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		cfg := clusterConfig(c, prefix)
		cfg.MinReplicas = 1
		b := newNode(t, cfg)
		// One channel per shard stream: every primary's replica is waited for.
		for n := range redis.DefaultShards {
			channel := channelOfShard(n)
			pos, err := b.PublishPositions(protocol.ChannelTopic(channel), message.NewMessage(watermill.NewUUID(), []byte("w")))
			if err != nil {
				t.Fatalf("publish to shard %d with min_replicas 1: %v", n, err)
			}
			// Acked means on the replica of the stream's primary: read it there.
			key := channelKey(prefix, channel)
			_, replica := primaryAndReplica(t, c, key)
			rc := goredis.NewClient(&goredis.Options{Addr: c.Addr(replica)})
			id := fmt.Sprintf("%d-%d", pos[0].Hi, pos[0].Lo)
			rc.ReadOnly(context.Background())
			got, err := rc.XRange(context.Background(), key, id, id).Result()
			_ = rc.Close()
			if err != nil || len(got) != 1 {
				t.Fatalf("the acked entry %s of %s on replica %d: %v %v", id, key, replica, got, err)
			}
		}
	})
	// A message published again (a retry: same UUID) is not added again: its entry's key lies in
	// the stream's slot (no CROSSSLOT), and the position answered is the first one's.
	t.Run("MinReplicasRepeat", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		cfg := clusterConfig(c, prefix)
		cfg.MinReplicas = 1
		b := newNode(t, cfg)
		for _, n := range []int{0, 5, 11} {
			channel := channelOfShard(n)
			msg := message.NewMessage(watermill.NewUUID(), []byte("r"))
			var first protocol.Position
			for i := range 3 {
				pos, err := b.PublishPositions(protocol.ChannelTopic(channel), message.NewMessage(msg.UUID, msg.Payload))
				if err != nil {
					t.Fatalf("publish %d to shard %d with min_replicas 1: %v", i, n, err)
				}
				if i == 0 {
					first = pos[0]
				} else if pos[0] != first {
					t.Fatalf("publish %d of the same message to shard %d at %v, want the first's %v", i, n, pos[0], first)
				}
			}
			key := channelKey(prefix, channel)
			got, err := c.Client().XRange(context.Background(), key, "-", "+").Result()
			if err != nil || len(got) != 1 {
				t.Fatalf("%s after 3 publishes of one message: %d entries (%v), want 1", key, len(got), err)
			}
		}
	})
	for _, minReplicas := range []int{0, 1} {
		t.Run(fmt.Sprintf("SlotMoved/min_replicas=%d", minReplicas), func(t *testing.T) { slotMoved(t, c, minReplicas) })
	}
	t.Run("MinReplicasUnmet", func(t *testing.T) {
		prefix := transporttest.Prefix(t)
		dropClusterKeys(t, c, prefix)
		cfg := clusterConfig(c, prefix)
		cfg.MinReplicas, cfg.Timeout = 2, 300*time.Millisecond
		b := newNode(t, cfg)
		_, err := b.PublishPositions(protocol.ChannelTopic("x"), message.NewMessage(watermill.NewUUID(), []byte("w")))
		if !errors.Is(err, transports.ErrUnavailable) {
			t.Fatalf("publish with min_replicas 2 on primaries with 1 replica: %v, want ErrUnavailable", err)
		}
	})
}

// primaryAndReplica are the primary holding key on cluster c (of one replica per primary) and
// its replica.
func primaryAndReplica(t *testing.T, c *rediscluster.Cluster, key string) (primary, replica int) {
	t.Helper()
	primary, err := c.PrimaryOf(0, key)
	if err != nil {
		t.Fatal(err)
	}
	replicas, err := c.ReplicasOf(primary)
	if err != nil || len(replicas) != 1 {
		t.Fatalf("replicas of %d: %v %v", primary, replicas, err)
	}
	return primary, replicas[0]
}

// channelOfShard is a channel name that lives on shard n of redis.DefaultShards.
func channelOfShard(n int) string {
	for i := 0; ; i++ {
		if c := fmt.Sprintf("c%d", i); redis.Shard(c, redis.DefaultShards) == n {
			return c
		}
	}
}

// TestRedisClusterFailover: a node in cluster mode publishes under load (4 publishers, one
// message per publish) to a channel; replication of the channel's shard stream is cut (the
// replica's link killed, its user switched off on the primary) and, once publishes went on for a
// while, the primary is SIGKILLed; the cluster promotes its replica, and the old primary comes
// back empty (no persistence) as a replica of the new one. The node must serve again (publishes
// acked, a subscription made before the failover delivers what is published after, presence
// works, a client resuming from a position given after the failover replays completely), and the
// test counts the acked messages the new primary does not hold: with min_replicas 1 none may be
// missing; with 0 the count is logged (docs/brokers/redis.md, Redis Cluster). Both runs share
// one cluster (the second fails over whichever primary then holds the stream).
func TestRedisClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster of 6 servers and fails primaries over")
	}
	c := rediscluster.Start(t, 3, 1, append(append([]string{}, rediscluster.FastFailover...), replArgs...)...)
	for _, minReplicas := range []int{0, 1} {
		t.Run(fmt.Sprintf("min_replicas=%d", minReplicas), func(t *testing.T) { clusterFailover(t, c, minReplicas) })
	}
}

func clusterFailover(t *testing.T, c *rediscluster.Cluster, minReplicas int) {
	start := time.Now()
	prefix := transporttest.Prefix(t)
	dropClusterKeys(t, c, prefix)
	cfg := clusterConfig(c, prefix)
	cfg.MinReplicas, cfg.MaxLen, cfg.Timeout, cfg.BlockTimeout = minReplicas, 1<<40, time.Second, 200*time.Millisecond
	cfg.Presence.Heartbeat = time.Second
	b := newNode(t, cfg)
	channel := "failover"
	topic := protocol.ChannelTopic(channel)
	key := channelKey(prefix, channel)
	primary, replica := primaryAndReplica(t, c, key)

	var replOffset string
	r := failOver(t, b, topic, failoverSteps{
		primary: c.Addr(primary),
		kill: func() {
			replOffset = c.Info(replica, "replication", "slave_repl_offset") + " link " + c.Info(replica, "replication", "master_link_status") +
				" primary offset " + c.Info(primary, "replication", "master_repl_offset")
			c.Kill(primary)
		},
		promoted: func() error {
			if p, err := c.PrimaryOf(replica, key); err != nil || p != replica {
				return fmt.Errorf("server %d says the primary of %s is server %d (%v)", replica, key, p, err)
			}
			return nil
		},
		// Back empty, with its cluster identity: the cluster makes it a replica of the new primary.
		rejoin: func(*testing.T) {
			c.Restart(primary)
			c.WaitHealthy(3, 1)
		},
	})

	// A client resuming from the first position acked after the failover replays everything
	// acked after it, completely.
	replayAll(t, b, topic, r.after, r.count()+10, "resuming after the failover")

	// Presence keeps working on the new layout.
	ctx := context.Background()
	if _, err := b.Join(ctx, channel, member("n", "u", "s1")); err != nil {
		t.Fatalf("presence join after the failover: %v", err)
	}
	if st, err := b.Stats(ctx, channel); err != nil || st.Connections != 1 {
		t.Fatalf("presence stats after the failover: %+v %v", st, err)
	}
	if _, err := b.Leave(ctx, channel, "s1"); err != nil {
		t.Fatal(err)
	}

	// Acked but not on the new primary: lost.
	lost := r.lost(t, c.Addr(replica), key)
	if lost.count > 0 {
		t.Logf("lost ids %s .. %s; the new primary (server %d, was the replica of %d) holds %d entries from %s; replica offset at the kill %s",
			lost.first, lost.last, replica, primary, lost.held, lost.firstHeld, replOffset)
	}
	t.Logf("min_replicas=%d: %d acked (%d before the replication cut, %d before the kill), %d publishes failed, %d acked messages lost; replica promoted %v after the kill, old primary a replica in sync after %v; run took %v",
		minReplicas, len(r.acked), r.cutAcked, r.beforeKill, r.failed.Load(), lost.count, r.promoted.Round(time.Millisecond), r.rejoined.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if minReplicas > 0 && lost.count > 0 {
		t.Errorf("min_replicas=%d: %d acked messages lost", minReplicas, lost.count)
	}
}

// slotMoved: while a node publishes to a channel (2 publishers) and a subscription of that node
// reads it, the slot of the channel's shard stream moves to another primary (ASK during the
// migration, MOVED after). No publish fails, every acked message reaches the subscription, and a
// resume from the first position replays all of them completely.
func slotMoved(t *testing.T, c *rediscluster.Cluster, minReplicas int) {
	prefix := transporttest.Prefix(t)
	dropClusterKeys(t, c, prefix)
	cfg := clusterConfig(c, prefix)
	cfg.MinReplicas, cfg.BlockTimeout = minReplicas, 200*time.Millisecond
	b := newNode(t, cfg)
	topic := protocol.ChannelTopic("moving")
	key := channelKey(prefix, "moving")
	l := startLoad(t, b, topic, 2)
	l.waitAcked(t, 0, 300, "before the move")
	from, err := c.PrimaryOf(0, key)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes(0)
	if err != nil {
		t.Fatal(err)
	}
	to := -1
	for _, n := range nodes {
		if n.Primary && n.Slots > 0 && n.Index != from {
			to = n.Index
		}
	}
	slot, err := c.Client().ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MoveSlot(int(slot), to); err != nil {
		t.Fatal(err)
	}
	moved := l.count()
	l.waitAcked(t, moved, 300, fmt.Sprintf("after the move of slot %d from server %d to %d", slot, from, to))
	l.stopPublishers()
	l.waitDelivered(t, l.positions, "", "acked messages")
	// (A publish that failed may have its entry in the stream too: failed WAIT.)
	replayAll(t, b, topic, l.positions, len(l.positions)+int(l.failed.Load())+10, "resuming from the first position")
	t.Logf("min_replicas=%d: slot %d moved from server %d to %d; %d acked (%d before the move), %d publishes failed, none lost",
		minReplicas, slot, from, to, len(l.positions), moved, l.failed.Load())
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d publishes failed while the slot moved: a redirected publish is sent again within the timeout", n)
	}
}
