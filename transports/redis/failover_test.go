package redis_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// The load, failover steps and checks shared by the failover tests (cluster_test.go,
// sentinel_test.go) and the slot move test.

// publishLoad is a subscription to a topic, drained into seen (one that stays full is closed as
// slow), and publishers that publish one message per publish to it until stopped, a failed
// publish retried after 10 ms.
type publishLoad struct {
	seenMu sync.Mutex
	seen   map[string]bool // uuids the subscription delivered
	ended  atomic.Bool     // the subscription was closed

	mu        sync.Mutex
	acked     []string                     // entry ids of acked publishes, in ack order
	positions map[string]protocol.Position // uuid -> position of every acked publish
	after     map[string]protocol.Position // the same, of those published once recovered was set
	recovered atomic.Bool
	failed    atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// startLoad subscribes to topic on b and starts publishers; they stop on stopPublishers or at
// the end of the test.
func startLoad(t *testing.T, b *redis.Broker, topic string, publishers int) *publishLoad {
	l := &publishLoad{
		seen:      map[string]bool{},
		positions: map[string]protocol.Position{},
		after:     map[string]protocol.Position{},
		stop:      make(chan struct{}),
	}
	sub := subscribe(t, b, topic)
	go func() { // drains sub until the subscription ends with the test
		for m := range sub {
			m.Ack()
			l.seenMu.Lock()
			l.seen[m.UUID] = true
			l.seenMu.Unlock()
		}
		l.ended.Store(true)
	}()
	for range publishers {
		l.wg.Add(1)
		go l.publish(b, topic)
	}
	t.Cleanup(l.stopPublishers)
	return l
}

func (l *publishLoad) publish(b *redis.Broker, topic string) {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		m := message.NewMessage(watermill.NewUUID(), []byte("x"))
		rec := l.recovered.Load()
		pos, err := b.PublishPositions(topic, m)
		if err != nil {
			l.failed.Add(1)
			time.Sleep(10 * time.Millisecond) // a retrying publisher's backoff, not a wait for a state
			continue
		}
		l.mu.Lock()
		l.acked = append(l.acked, fmt.Sprintf("%d-%d", pos[0].Hi, pos[0].Lo))
		l.positions[m.UUID] = pos[0]
		if rec {
			l.after[m.UUID] = pos[0]
		}
		l.mu.Unlock()
	}
}

// stopPublishers stops the publishers and waits for them; safe to call twice.
func (l *publishLoad) stopPublishers() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// count is the number of acked publishes.
func (l *publishLoad) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.acked) }

// countAfter is the number of publishes acked since recovered was set.
func (l *publishLoad) countAfter() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.after) }

// waitAcked waits until n publishes more than since were acked; what names the moment.
func (l *publishLoad) waitAcked(t *testing.T, since, n int, what string) {
	t.Helper()
	transporttest.WaitFor(t, 20*time.Second, func() error {
		if k := l.count() - since; k < n {
			return fmt.Errorf("%d acked %s", k, what)
		}
		return nil
	})
}

// waitDelivered waits until the subscription delivered every message of ids; which (the
// subscription) and what (the messages) describe them in the error.
func (l *publishLoad) waitDelivered(t *testing.T, ids map[string]protocol.Position, which, what string) {
	t.Helper()
	transporttest.WaitFor(t, 20*time.Second, func() error {
		l.seenMu.Lock()
		defer l.seenMu.Unlock()
		missing := 0
		for id := range ids {
			if !l.seen[id] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("the subscription%s misses %d of the %d %s (ended: %v)", which, missing, len(ids), what, l.ended.Load())
		}
		return nil
	})
}

// lowest is the lowest position of ids.
func lowest(ids map[string]protocol.Position) protocol.Position {
	var low protocol.Position
	for _, p := range ids {
		if low.IsZero() || p.Hi < low.Hi || p.Hi == low.Hi && p.Lo < low.Lo {
			low = p
		}
	}
	return low
}

// replayAll checks that a client resuming from the lowest position of ids (up to limit
// messages) gets a complete replay holding every other message of ids; what names the resume.
func replayAll(t *testing.T, b *redis.Broker, topic string, ids map[string]protocol.Position, limit int, what string) {
	t.Helper()
	since := lowest(ids)
	msgs, complete, err := b.Replay(context.Background(), topic, since, limit)
	if err != nil || !complete {
		t.Fatalf("%s: %d messages, complete %v, %v", what, len(msgs), complete, err)
	}
	replayed := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		replayed[m.UUID] = true
	}
	for id, p := range ids {
		if p != since && !replayed[id] {
			t.Fatalf("%s (%v): %s (at %v) missing from the %d replayed", what, since, id, p, len(msgs))
		}
	}
}

// failoverSteps are what a failover test does to its servers.
type failoverSteps struct {
	primary  string             // address of the primary holding the stream
	kill     func()             // SIGKILLs the primary
	promoted func() error       // nil once the replica is the primary
	rejoin   func(t *testing.T) // brings the old primary back, empty, and waits until it replicates the new one
}

// failoverRun is what a failover did and measured.
type failoverRun struct {
	*publishLoad
	cutAcked, beforeKill int           // acked publishes at the replication cut, at the kill
	promoted, rejoined   time.Duration // since the kill
}

// failOver runs the failover under load (4 publishers to topic on b): once 2000 publishes were
// acked, replication of the primary is cut (user repl switched off, the replica's link killed);
// once publishes were acked (min_replicas 0) or refused (1) meanwhile, the primary is killed,
// the replica promoted and the old primary brought back. The publishers go on until 1000
// publishes were acked after that; every one of them must reach the subscription made before.
func failOver(t *testing.T, b *redis.Broker, topic string, s failoverSteps) failoverRun {
	t.Helper()
	l := startLoad(t, b, topic, 4)
	l.waitAcked(t, 0, 2000, "before the failover")

	// Cut replication (repl may not log in again): what the replica lacks at the kill is what
	// a failover after a network cut between primary and replica loses.
	pc := goredis.NewClient(&goredis.Options{Addr: s.primary})
	ctx := context.Background()
	if err := pc.Do(ctx, "ACL", "SETUSER", "repl", "off").Err(); err != nil {
		t.Fatal(err)
	}
	if err := pc.ClientKillByFilter(ctx, "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	_ = pc.Close()
	r := failoverRun{publishLoad: l, cutAcked: l.count()}
	cutFailed := l.failed.Load()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if a, f := l.count()-r.cutAcked, l.failed.Load()-cutFailed; a < 200 && f < 4 {
			return fmt.Errorf("since the cut: %d acked, %d failed", a, f)
		}
		return nil
	})
	killed := time.Now()
	s.kill()
	r.beforeKill = l.count()
	transporttest.WaitFor(t, 30*time.Second, s.promoted)
	r.promoted = time.Since(killed)
	s.rejoin(t)
	r.rejoined = time.Since(killed)
	l.recovered.Store(true)
	transporttest.WaitFor(t, 30*time.Second, func() error {
		if n := l.countAfter(); n < 1000 {
			return fmt.Errorf("%d acked after the failover: the node does not serve", n)
		}
		return nil
	})
	l.stopPublishers()
	l.waitDelivered(t, l.after, " made before the failover", "messages acked after it")
	return r
}

// lostEntries are the acked entries the new primary does not hold.
type lostEntries struct {
	count       int
	first, last string // entry ids of the first and the last of them
	held        int    // entries the new primary holds
	firstHeld   string // entry id of the first of those
}

// lost counts the acked entries that the stream key on the server at addr (the new primary)
// does not hold.
func (r failoverRun) lost(t *testing.T, addr, key string) lostEntries {
	t.Helper()
	nc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer nc.Close()
	entries, err := nc.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[string]bool, len(entries))
	for _, e := range entries {
		have[e.ID] = true
	}
	l := lostEntries{held: len(entries)}
	for _, id := range r.acked {
		if !have[id] {
			if l.count == 0 {
				l.first = id
			}
			l.last = id
			l.count++
		}
	}
	if len(entries) > 0 {
		l.firstHeld = entries[0].ID
	}
	return l
}
