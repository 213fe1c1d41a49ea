package jetstream

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/natscluster"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// resumer reads a channel as a client of a node does: live from a subscription and, each time
// the subscription ends or cannot be made, again from a new one after a Replay from the last
// position it saw (positions already seen are skipped, as the gateway does).
type resumer struct {
	mu          sync.Mutex
	got         map[string]int // payload -> times received
	count       int
	last        protocol.Position
	seen        bool
	resumes     int
	unrecovered int // Replay answered complete=false
}

func (r *resumer) take(t *testing.T, m *message.Message) {
	p := position(t, m)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen && !r.last.Less(p) {
		return
	}
	r.last, r.seen = p, true
	r.got[string(m.Payload)]++
	r.count++
}

func (r *resumer) received() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// run reads until ctx ends; subscribed is closed once the first subscription is made.
func (r *resumer) run(ctx context.Context, t *testing.T, b *Broker, topic string, subscribed chan<- struct{}) {
	retry := time.NewTicker(50 * time.Millisecond) // the pause between two failed attempts
	defer retry.Stop()
	first := true
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		ch, err := b.Subscribe(sctx, topic)
		if err == nil && !first {
			r.mu.Lock()
			since, seen := r.last, r.seen
			r.resumes++
			r.mu.Unlock()
			if seen {
				var msgs []*message.Message
				var complete bool
				msgs, complete, err = b.Replay(ctx, topic, since, 1<<20)
				if err == nil {
					if !complete {
						r.mu.Lock()
						r.unrecovered++
						r.mu.Unlock()
					}
					for _, m := range msgs {
						r.take(t, m)
					}
				}
			}
		}
		if err != nil {
			cancel()
			select {
			case <-ctx.Done():
			case <-retry.C:
			}
			continue
		}
		if first {
			first = false
			close(subscribed)
		}
		for m := range ch {
			r.take(t, m)
			m.Ack()
		}
		cancel()
	}
}

// TestClusterLeaderLoss runs two nodes on a 3-server JetStream cluster with streams of 3
// replicas, publishing through both while a client of one reads with resume, and kills the
// channels stream's leader, starts it again, then kills the stream's new leader: no acked message
// may be lost, the client gets each once, and the nodes keep serving after each kill.
func TestClusterLeaderLoss(t *testing.T) {
	c := natscluster.Start(t, 3, true)
	prefix := transporttest.Prefix(t)
	node := func(i int) *Broker {
		cfg := testConfig(c.URLs(i), prefix)
		cfg.Name = fmt.Sprintf("node-%d", i)
		cfg.Replicas = 3
		return newNode(t, cfg)
	}
	nodes := []*Broker{node(0), node(1)}
	for _, n := range nodes {
		poll.Until(t, 30*time.Second, func() error {
			if !n.ready.Load() {
				return fmt.Errorf("%s: streams not provisioned", n.cfg.Name)
			}
			return n.Ping(t.Context())
		})
	}
	stream := transports.SafeName(prefix) + "_channels"
	if info, err := c.StreamInfo(stream); err != nil || info.Config.Replicas != 3 {
		t.Fatalf("stream %s: %v, replicas %v", stream, err, info)
	}
	topic := protocol.ChannelTopic("cluster")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	r := &resumer{got: map[string]int{}}
	subscribed := make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); r.run(ctx, t, nodes[1], topic, subscribed) }()
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("the client could not subscribe")
	}

	var mu sync.Mutex
	var acked []string
	failed := 0
	pctx, stopPublishing := context.WithCancel(ctx)
	wg.Add(1)
	go func() { // publishes through both nodes in turn, at most one message per millisecond
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; pctx.Err() == nil; i++ {
			payload := fmt.Sprintf("m%d", i)
			_, err := nodes[i%2].PublishPositions(topic, transporttest.NewMessage(payload))
			mu.Lock()
			if err == nil {
				acked = append(acked, payload)
			} else {
				failed++
			}
			mu.Unlock()
			select {
			case <-pctx.Done():
			case <-tick.C:
			}
		}
	}()
	// flowing waits until 100 messages acked after it was called reached the client: the nodes
	// publish and deliver again.
	flowing := func(after string) {
		t.Helper()
		mu.Lock()
		mark := len(acked)
		mu.Unlock()
		start := time.Now()
		poll.Until(t, 30*time.Second, func() error {
			mu.Lock()
			since := append([]string(nil), acked[mark:]...)
			mu.Unlock()
			r.mu.Lock()
			defer r.mu.Unlock()
			n := 0
			for _, p := range since {
				if r.got[p] > 0 {
					n++
				}
			}
			if n < 100 {
				return fmt.Errorf("%s: %d of the messages acked since have reached the client, waits for 100", after, n)
			}
			return nil
		})
		t.Logf("%s: 100 messages acked and delivered within %v", after, time.Since(start).Round(time.Millisecond))
	}
	leader := func() int {
		t.Helper()
		l := -1
		poll.Until(t, 30*time.Second, func() error {
			var err error
			l, err = c.StreamLeader(stream)
			return err
		})
		return l
	}

	flowing("start")
	first := leader()
	t.Logf("killing the stream leader, server %d", first)
	c.Kill(first)
	flowing("leader killed")

	c.Restart(first)
	poll.Until(t, 30*time.Second, func() error { // every replica current again
		info, err := c.StreamInfo(stream)
		if err != nil {
			return err
		}
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return fmt.Errorf("cluster info %+v", info.Cluster)
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current || p.Offline {
				return fmt.Errorf("replica %s not current", p.Name)
			}
		}
		return nil
	})
	// Another server: the meta leader if it is not the first, so that nodes connected to it
	// reconnect while the meta group elects (no stream can be created or updated meanwhile, and
	// a node must go on publishing on the streams it has), else the stream's leader.
	second := c.MetaLeader()
	if second < 0 || second == first {
		second = leader()
	}
	if second == first { // the restarted one was elected again
		second = (first + 1) % c.Len()
	}
	t.Logf("server %d back and current; killing server %d (meta leader: %d)", first, second, c.MetaLeader())
	c.Kill(second)
	flowing("second server killed")

	stopPublishing()
	mu.Lock()
	all := append([]string(nil), acked...)
	nfailed := failed
	mu.Unlock()
	missing := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []string
		for _, p := range all {
			if r.got[p] == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	poll.Until(t, 30*time.Second, func() error {
		if m := missing(); len(m) > 0 {
			return fmt.Errorf("%d acked messages not received, first %s", len(m), m[0])
		}
		return nil
	})
	cancel()
	wg.Wait()
	dups := 0
	for p, n := range r.got {
		if n > 1 {
			dups++
			t.Errorf("%s received %d times", p, n)
		}
	}
	t.Logf("loss: %d acked messages lost of %d acked (%d publishes failed, %d received unacked); duplicates %d; client resumed %d times, recovered:false %d",
		len(missing()), len(all), nfailed, len(r.got)-len(all), dups, r.resumes, r.unrecovered)
	if r.unrecovered > 0 {
		t.Errorf("a resume answered recovered:false %d times, with nothing trimmed", r.unrecovered)
	}
}
