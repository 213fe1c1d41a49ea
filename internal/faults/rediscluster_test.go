package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/internal/rediscluster"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestRedisClusterNodes: three gateway node processes in redis.mode cluster (min_replicas 1) on a
// Redis Cluster of 3 primaries and 3 replicas, 30 resuming clients reading "feed" while 300
// messages are published one by one through the nodes in turn (a refused publish is retried);
// after 100 the slot of feed's shard stream moves to another primary, after 200 that primary is
// SIGKILLed, its replica promoted, and the killed server started again (empty: it rejoins as the
// new primary's replica). Every client must end with every message exactly once, in order, with
// no unrecovered resubscription: with min_replicas 1 no acked message is lost.
func TestRedisClusterNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster of 6 servers and 3 node processes")
	}
	c := rediscluster.Start(t, 3, 1, rediscluster.FastFailover...)
	prefix := transporttest.Prefix(t)
	nodes := startNodes(t, prefix, 3, "GATEWAY_BROKER=redis", "GATEWAY_REDIS_MODE=cluster",
		"GATEWAY_REDIS_CLUSTER_ADDRS="+strings.Join(c.Addrs(), ","), "GATEWAY_REDIS_MIN_REPLICAS=1")
	key := redis.ShardKey(prefix, redis.Shard("feed", redis.DefaultShards))
	readers := startReaders(t, nodes, 30)
	var from, to int
	faults := map[int]func(){
		100: func() {
			var err error
			if from, err = c.PrimaryOf(0, key); err != nil {
				t.Fatal(err)
			}
			nodes, err := c.Nodes(0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				if n.Primary && n.Slots > 0 && n.Index != from {
					to = n.Index
				}
			}
			slot, err := c.Client().ClusterKeySlot(t.Context(), key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.MoveSlot(int(slot), to); err != nil {
				t.Fatal(err)
			}
			t.Logf("slot %d of %s moved from server %d to %d", slot, key, from, to)
		},
		200: func() {
			replicas, err := c.ReplicasOf(to)
			if err != nil || len(replicas) != 1 {
				t.Fatalf("replicas of server %d: %v %v", to, replicas, err)
			}
			killed := time.Now()
			c.Kill(to)
			// Publishing waits for the failover here: once promoted, the replica has no replica
			// of its own until the killed server is back (as an orchestrator would restart it),
			// and min_replicas 1 refuses every publish to its slots meanwhile.
			poll.Until(t, 30*time.Second, func() error {
				if p, err := c.PrimaryOf(replicas[0], key); err != nil || p != replicas[0] {
					return fmt.Errorf("server %d says the primary of %s is server %d (%v)", replicas[0], key, p, err)
				}
				return nil
			})
			promoted := time.Since(killed)
			c.Restart(to)
			c.WaitHealthy(3, 1)
			t.Logf("server %d, primary of %s, killed; server %d promoted after %v; server %d back as its replica after %v",
				to, key, replicas[0], promoted.Round(time.Millisecond), to, time.Since(killed).Round(time.Millisecond))
		},
	}
	const total = 300
	start := time.Now()
	failed, longest := publishThroughNodes(t, nodes, total, faults)
	checkComplete(t, readers, total, true)
	t.Logf("redis cluster 3+3, min_replicas 1: %d messages acked in %v, %d publish attempts refused and retried, longest publish %v; "+
		"30 clients: %d of %d messages each, 0 lost, 0 duplicated, 0 unrecovered resubscriptions",
		total, time.Since(start).Round(time.Millisecond), failed, longest.Round(time.Millisecond), total, total)
}
