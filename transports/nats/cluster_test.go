package nats_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/natscluster"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestClusterServerLoss runs two nodes on a 3-server NATS cluster, each given every server, and
// kills the server one node is connected to, then the other node's: both reconnect to a server
// left, fan-out resumes (subscriptions end on a disconnect and are made again, as the gateway
// does) and presence keeps its members and passes new ones. Core NATS keeps nothing: what was
// published while a node was away is lost, and counted.
func TestClusterServerLoss(t *testing.T) {
	c := natscluster.Start(t, 3, false)
	const heartbeat = 200 * time.Millisecond
	prefix := transporttest.Prefix(t)
	node := func(i int, name string) *nats.Broker {
		b, err := nats.New(nats.Config{
			URL: c.URLs(i), Prefix: prefix, Name: name,
			ReconnectWait: 50 * time.Millisecond, ReconnectJitter: 50 * time.Millisecond,
			Presence: transports.PresenceConfig{Heartbeat: heartbeat},
		}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := node(0, "node-a-"+prefix), node(1, "node-b-"+prefix)
	topic := protocol.ChannelTopic("cluster")

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var mu sync.Mutex
	got := map[string]int{}
	resubscribed := 0
	subscribed := make(chan struct{})
	wg.Add(1)
	go func() { // node b's subscriber: made again whenever it ends
		defer wg.Done()
		retry := time.NewTicker(20 * time.Millisecond) // the pause between two failed attempts
		defer retry.Stop()
		first := true
		for ctx.Err() == nil {
			ch, err := b.Subscribe(ctx, topic)
			if err != nil {
				select {
				case <-ctx.Done():
				case <-retry.C:
				}
				continue
			}
			if first {
				first = false
				close(subscribed)
			} else {
				mu.Lock()
				resubscribed++
				mu.Unlock()
			}
			for m := range ch {
				mu.Lock()
				got[string(m.Payload)]++
				mu.Unlock()
				m.Ack()
			}
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("node b could not subscribe")
	}

	var published []string
	pctx, stopPublishing := context.WithCancel(ctx)
	wg.Add(1)
	go func() { // node a publishes, at most one message per millisecond
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; pctx.Err() == nil; i++ {
			payload := fmt.Sprintf("m%d", i)
			if a.Publish(topic, transporttest.NewMessage(payload)) == nil {
				mu.Lock()
				published = append(published, payload)
				mu.Unlock()
			}
			select {
			case <-pctx.Done():
			case <-tick.C:
			}
		}
	}()
	// flowing waits until 100 messages published after it was called reached node b.
	flowing := func(after string) {
		t.Helper()
		mu.Lock()
		mark := len(published)
		mu.Unlock()
		start := time.Now()
		poll.Until(t, 30*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, p := range published[mark:] {
				if got[p] > 0 {
					n++
				}
			}
			if n < 100 {
				return fmt.Errorf("%s: %d of the messages published since have reached node b, waits for 100", after, n)
			}
			return nil
		})
		t.Logf("%s: 100 messages published and delivered within %v", after, time.Since(start).Round(time.Millisecond))
	}
	members := 0
	present := func(after string) { // a member joined on each node is listed by both
		t.Helper()
		members++
		for _, n := range []*nats.Broker{a, b} {
			s := fmt.Sprintf("s%d-%s", members, n.NodeID())
			poll.Until(t, 30*time.Second, func() error {
				_, err := n.Join(ctx, "room", protocol.Member{User: "u-" + s, Session: s, Node: n.NodeID()})
				return err
			})
		}
		start := time.Now()
		poll.Until(t, 30*time.Second, func() error {
			for _, n := range []*nats.Broker{a, b} {
				ms, _, err := n.Members(ctx, "room", "", 100)
				if err != nil {
					return err
				}
				if len(ms) != 2*members {
					return fmt.Errorf("%s: %s lists %d members, want %d", after, n.NodeID(), len(ms), 2*members)
				}
			}
			return nil
		})
		t.Logf("%s: presence complete on both nodes within %v", after, time.Since(start).Round(time.Millisecond))
		// and it stays so for twice the reap bound (1.75 heartbeats): no member was reaped for
		// heartbeats lost in the failover.
		check := time.NewTicker(20 * time.Millisecond)
		defer check.Stop()
		for end := time.Now().Add(4 * heartbeat); time.Now().Before(end); <-check.C {
			for _, n := range []*nats.Broker{a, b} {
				if ms, _, err := n.Members(ctx, "room", "", 100); err != nil || len(ms) != 2*members {
					t.Fatalf("%s: %s lists %d members (%v), want %d", after, n.NodeID(), len(ms), err, 2*members)
				}
			}
		}
	}

	flowing("start")
	present("start")
	where := func(name string) int {
		t.Helper()
		i := -1
		poll.Until(t, 30*time.Second, func() error {
			if i = c.ClientServer(name); i < 0 {
				return fmt.Errorf("%s is connected to no server", name)
			}
			return nil
		})
		return i
	}
	sb := where("node-b-" + prefix)
	t.Logf("killing server %d, node b's", sb)
	c.Kill(sb)
	flowing("node b's server killed")
	present("node b's server killed")
	if sa := where("node-a-" + prefix); sa != sb {
		t.Logf("killing server %d, node a's", sa)
		c.Kill(sa)
		flowing("node a's server killed")
		present("node a's server killed")
	}
	if !slices.ContainsFunc([]int{0, 1, 2}, c.Up) {
		t.Fatal("no server left")
	}

	stopPublishing()
	mu.Lock()
	all := append([]string(nil), published...)
	mu.Unlock()
	// The last message published reaches b: nothing is in flight any more after that.
	poll.Until(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(all) > 0 && got[all[len(all)-1]] == 0 {
			return fmt.Errorf("the last message %s has not arrived", all[len(all)-1])
		}
		return nil
	})
	cancel()
	wg.Wait()
	lost, dups := 0, 0
	for _, p := range all {
		switch got[p] {
		case 0:
			lost++
		case 1:
		default:
			dups++
			t.Errorf("%s received %d times", p, got[p])
		}
	}
	t.Logf("loss: %d of %d published messages not delivered to node b (core NATS keeps nothing while a node reconnects); duplicates %d; resubscribed %d times",
		lost, len(all), dups, resubscribed)
}
