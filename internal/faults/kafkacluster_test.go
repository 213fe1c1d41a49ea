package faults

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// kafkaCluster is a 3-broker kfake cluster whose brokers can be stopped: kfake's RemoveNode
// closes a broker's listener and moves its partitions' leadership to the others; this also
// closes the connections that broker had accepted, so that clients see it go away as they
// would see a dead process (connection reset), not only a refused reconnect.
type kafkaCluster struct {
	c *kfake.Cluster

	mu    sync.Mutex
	conns map[string][]net.Conn // by listen address
}

func newKafkaCluster(t *testing.T, brokers int) *kafkaCluster {
	k := &kafkaCluster{conns: map[string][]net.Conn{}}
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		return &trackedListener{Listener: ln, k: k}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	k.c = c
	t.Cleanup(c.Close)
	return k
}

type trackedListener struct {
	net.Listener
	k *kafkaCluster
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.k.mu.Lock()
		l.k.conns[l.Addr().String()] = append(l.k.conns[l.Addr().String()], c)
		l.k.mu.Unlock()
	}
	return c, err
}

// stop takes broker node out of the cluster: its listener and connections are closed, and the
// leadership of every partition is given to a remaining broker (kfake.Cluster.RemoveNode).
func (k *kafkaCluster) stop(t *testing.T, node int32) {
	addr := k.c.ListenAddrs()[node] // node ids are the indexes of a cluster never changed before
	if err := k.c.RemoveNode(node); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns[addr] {
		_ = c.Close()
	}
	k.conns[addr] = nil
}

// TestKafkaClusterFailover: three gateway nodes on a 3-broker Kafka (kfake) with every topic
// created with replication factor 3, 30 resuming clients reading "feed" while 300 messages are
// published one by one; after 100 the leader of feed's partition moves to another broker, after
// 200 the broker that leads it is stopped (its connections cut). Every client must end with
// every acknowledged message exactly once, in order, with no unrecovered resubscription; every
// message must have been acknowledged (the publisher retries until it is).
//
// What kfake simulates: one shared log per partition with a leader that clients must find
// (NOT_LEADER_FOR_PARTITION, metadata refresh), leadership moved (leader epoch bumped), a broker
// whose connections break and that no longer accepts any, the group and partition leadership
// moved off it. What it does not: replicas are not separate copies (a record acked is in the one
// log, so no follower can lag, no ISR shrinks, no unclean election truncates), so the loss a real
// cluster can have with acks=1 or an unclean leader election cannot happen here; that part rests
// on the client configuration (acks=all, see docs/brokers/kafka.md, Production).
func TestKafkaClusterFailover(t *testing.T) {
	k := newKafkaCluster(t, 3)
	addrs := k.c.ListenAddrs()
	prefix := transporttest.Prefix(t)
	nodes := startNodes(t, prefix, 3, "GATEWAY_BROKER=kafka", "GATEWAY_KAFKA_BROKERS="+strings.Join(addrs, ","),
		"GATEWAY_KAFKA_PARTITIONS=4", "GATEWAY_KAFKA_REPLICATION_FACTOR=3")

	// The gateway created its topics with 3 replicas, 2 of them in sync for a write.
	channels := transports.SafeName(prefix) + ".channels"
	admin, err := sarama.NewClusterAdmin(addrs, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	metas, err := admin.DescribeTopics([]string{channels, transports.SafeName(prefix) + ".direct"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metas {
		if m.Err != sarama.ErrNoError || len(m.Partitions) == 0 {
			t.Fatalf("topic %s: %v, %d partitions", m.Name, m.Err, len(m.Partitions))
		}
		for _, p := range m.Partitions {
			if len(p.Replicas) != 3 || len(p.Isr) != 3 {
				t.Fatalf("topic %s partition %d: replicas %v, isr %v; want 3", m.Name, p.ID, p.Replicas, p.Isr)
			}
		}
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: channels, ConfigNames: []string{"min.insync.replicas"}})
	if err != nil || len(entries) != 1 || entries[0].Value != "2" {
		t.Fatalf("min.insync.replicas of %s: %v, %v; want 2", channels, entries, err)
	}
	part, err := sarama.NewHashPartitioner(channels).Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder("feed")}, 4)
	if err != nil {
		t.Fatal(err)
	}

	readers := startReaders(t, nodes, 30)
	var moved, stopped int32 = -1, -1
	var after, refused *kfake.FaultHandle
	faults := map[int]func(){
		100: func() {
			from := k.c.LeaderFor(channels, part)
			moved = (from + 1) % 3
			if err := k.c.MoveTopicPartition(channels, part, moved); err != nil {
				t.Fatal(err)
			}
			t.Logf("leader of %s/%d moved from broker %d to %d", channels, part, from, moved)
		},
		200: func() {
			stopped = k.c.LeaderFor(channels, part)
			k.stop(t, stopped)
			t.Logf("broker %d (leader of %s/%d) stopped; leader now %d", stopped, channels, part, k.c.LeaderFor(channels, part))
		},
		150: func() {
			// The leader stores the record, then answers an error (a follower fell out of the ISR
			// meanwhile): sarama retries, and the idempotent producer has it stored once.
			after = k.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: channels, Partitions: []int32{part},
				Err: kerr.NotEnoughReplicasAfterAppend, Count: 3})
		},
		250: func() {
			// Fewer in-sync replicas than min.insync.replicas: writes are refused, not acked.
			refused = k.c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: channels, Partitions: []int32{part},
				Err: kerr.NotEnoughReplicas, Count: 12})
		},
	}
	const total = 300
	start := time.Now()
	failed, longest := publishThroughNodes(t, nodes, total, faults)
	checkComplete(t, readers, total, true)
	client, err := sarama.NewClient(k.c.ListenAddrs(), sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hw, err := client.GetOffset(channels, part, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	// Every position names one message: no record was stored twice.
	if hw != total {
		t.Fatalf("%d records in %s/%d for %d messages", hw, channels, part, total)
	}
	t.Logf("produce answered NOT_ENOUGH_REPLICAS_AFTER_APPEND %d times, NOT_ENOUGH_REPLICAS %d times; %d records for %d messages",
		after.Hits(), refused.Hits(), hw, total)
	gaps := 0
	for _, r := range readers {
		_, g := r.snapshot()
		gaps += g
	}
	t.Logf("kafka 3 brokers, RF 3: %d messages acked in %v, %d publish attempts refused and retried, longest publish %v; "+
		"30 clients: %d of %d messages each, 0 lost, 0 duplicated, %d unrecovered resubscriptions",
		total, time.Since(start).Round(time.Millisecond), failed, longest.Round(time.Millisecond), total, total, gaps)
}
