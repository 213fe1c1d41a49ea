package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/wsgateway/gateway/protocol"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/internal/roster"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceConformance runs the presence suite on kfake: Kill closes the node's broker
// (no leave, no more heartbeats), RestartBroker restarts kfake on the same port without its data.
func TestPresenceConformance(t *testing.T) {
	cl := newCluster(t)
	transporttest.RunPresence(t, transporttest.PresenceFeatures{RestartBroker: cl.restart}, presenceSuiteNodes(cl))
}

// presenceSuiteNodes makes the nodes of the presence suites on cl.
func presenceSuiteNodes(cl *cluster) transporttest.NewPresenceNode {
	return func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		b, err := New(Config{Brokers: cl.addrs(), Prefix: prefix, NodeID: nodeID,
			Presence: transports.PresenceConfig{Heartbeat: heartbeat}}, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// presenceNode is a started node of a presence test on cl, with the suite's short heartbeat.
func presenceNode(t *testing.T, cl *cluster, prefix, id string, log *reapLog) *Broker {
	t.Helper()
	b, err := New(Config{Brokers: cl.addrs(), Prefix: prefix, NodeID: id,
		Presence: transports.PresenceConfig{Heartbeat: testHeartbeat}}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if log != nil {
		b.OnReap(func(channel string, m protocol.Member, vacated bool) { log.add(id, channel, m, vacated) })
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return b
}

const testHeartbeat = 250 * time.Millisecond

// reapLog records the OnReap calls of a test's nodes: by the node that made them.
type reapLog struct {
	mu    sync.Mutex
	calls []string // "node channel/session vacated"
}

func (l *reapLog) add(node, channel string, m protocol.Member, vacated bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, fmt.Sprintf("%s %s/%s %v", node, channel, m.Session, vacated))
}

func (l *reapLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(slices.Values(l.calls))
}

func joinT(t *testing.T, b *Broker, channel, session string) bool {
	t.Helper()
	occupied, err := b.Join(t.Context(), channel, protocol.Member{User: "u-" + session, Session: session, Node: b.pr.node})
	if err != nil {
		t.Fatalf("Join %s %s: %v", channel, session, err)
	}
	return occupied
}

// membersOf is every member of channel as "node/session", from b.
func membersOf(t *testing.T, b *Broker, channel string) []string {
	t.Helper()
	ms, err := transporttest.AllMembers(t.Context(), b, channel, 3)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Node+"/"+m.Session)
	}
	return out
}

func wantMembers(t *testing.T, b *Broker, channel string, want ...string) {
	t.Helper()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got := membersOf(t, b, channel); !slices.Equal(got, want) {
			return fmt.Errorf("members of %s on %s: %v, want %v", channel, b.pr.node, got, want)
		}
		return nil
	})
}

// TestPresenceReapOnce: of three live nodes that may all reap, one reaps the node that died:
// every member once, all through one node, vacated once for the channel it emptied; nothing
// more after several more heartbeats.
func TestPresenceReapOnce(t *testing.T) {
	cl := newCluster(t)
	prefix := transporttest.Prefix(t)
	log := &reapLog{}
	var nodes []*Broker
	for _, id := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, presenceNode(t, cl, prefix, id, log))
	}
	joinT(t, nodes[1], "shared", "a")
	dying := presenceNode(t, cl, prefix, "dying", log)
	for _, s := range []string{"d1", "d2", "d3"} {
		joinT(t, dying, "shared", s)
	}
	joinT(t, dying, "alone", "d4")
	wantMembers(t, nodes[2], "shared", "n2/a", "dying/d1", "dying/d2", "dying/d3")
	_ = dying.Close() // no leave, no more heartbeats
	for _, n := range nodes {
		wantMembers(t, n, "shared", "n2/a")
		wantMembers(t, n, "alone")
	}
	var want []string
	transporttest.WaitFor(t, 10*time.Second, func() error {
		got := log.get()
		if len(got) < 4 {
			return fmt.Errorf("OnReap calls %v", got)
		}
		reaper, _, _ := strings.Cut(got[0], " ")
		want = []string{reaper + " alone/d4 true", reaper + " shared/d1 false", reaper + " shared/d2 false", reaper + " shared/d3 false"}
		if !slices.Equal(got, want) {
			return fmt.Errorf("OnReap calls %v, want %v", got, want)
		}
		return nil
	})
	time.Sleep(3 * testHeartbeat) // a wait for what must not happen: a second reap
	if got := log.get(); !slices.Equal(got, want) {
		t.Fatalf("OnReap calls after 3 more heartbeats %v, want %v", got, want)
	}
}

// TestPresenceLateNodeCatchesUp: a node started after joins, leaves and a reap reads the topic
// from its start into the same view as the nodes that saw them happen, before and after the
// topic is compacted; compaction drops the reaped members' records (their reaper wrote their
// tombstones).
func TestPresenceLateNodeCatchesUp(t *testing.T) {
	cl := newCluster(t, kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "3600000"}))
	prefix := transporttest.Prefix(t)
	log := &reapLog{}
	a := presenceNode(t, cl, prefix, "a", log)
	dying := presenceNode(t, cl, prefix, "dying", nil)
	idle := presenceNode(t, cl, prefix, "idle", nil) // joins and leaves, then stops: owns nothing
	joinT(t, idle, "room:9", "i")
	if _, err := idle.Leave(t.Context(), "room:9", "i"); err != nil {
		t.Fatal(err)
	}
	_ = idle.Close()
	for i := range 6 {
		joinT(t, a, "room:"+strconv.Itoa(i%3), "a"+strconv.Itoa(i))
		joinT(t, dying, "room:"+strconv.Itoa(i%2), "d"+strconv.Itoa(i))
	}
	for _, s := range []string{"a0", "a4"} {
		if _, err := a.Leave(t.Context(), "room:"+strconv.Itoa(map[string]int{"a0": 0, "a4": 1}[s]), s); err != nil {
			t.Fatal(err)
		}
	}
	joinT(t, a, "room:2", "a5") // again: a replaced entry
	_ = dying.Close()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got := log.get(); len(got) != 6 {
			return fmt.Errorf("OnReap calls %v, want the 6 members of dying", got)
		}
		return nil
	})
	want := map[string][]string{"room:0": {"a/a3"}, "room:1": {"a/a1"}, "room:2": {"a/a2", "a/a5"}}
	check := func(n *Broker) {
		t.Helper()
		for ch, ms := range want {
			wantMembers(t, n, ch, ms...)
		}
		cs, more, err := n.Channels(t.Context(), "", "", 10)
		if err != nil || more || len(cs) != 3 {
			t.Fatalf("channels of %s: %v %v %v", n.pr.node, cs, more, err)
		}
	}
	check(a)
	check(presenceNode(t, cl, prefix, "late", nil))

	// The reaper writes the reaped members' tombstones after OnReap, and the heartbeats' of the
	// dead nodes (dying, reaped, and idle, silent with no member).
	gone := func(key string) bool {
		return strings.HasPrefix(key, "m\x00") && strings.Contains(key, "\x00d") || key == "h\x00dying" || key == "h\x00idle"
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		for key, vals := range topicRecords(t, a) {
			if gone(key) && vals[len(vals)-1] != nil {
				return fmt.Errorf("no tombstone yet for %q", key)
			}
		}
		return nil
	})
	cl.compact()
	n := 0
	for key, vals := range topicRecords(t, a) {
		if gone(key) {
			n++
			if len(vals) != 1 || vals[0] != nil {
				t.Fatalf("after compaction, %q has %d records, want its tombstone only", key, len(vals))
			}
		}
	}
	if n != 8 {
		t.Fatalf("%d tombstones of the dead nodes' records, want 8 (6 members, 2 heartbeats)", n)
	}
	check(presenceNode(t, cl, prefix, "later", nil))
	check(a)
}

// topicRecords reads the whole presence topic: the values of each key, in order (nil: a
// tombstone).
func topicRecords(t *testing.T, b *Broker) map[string][][]byte {
	t.Helper()
	c := b.current()
	newest, err := c.client.GetOffset(b.names.presence, 0, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := sarama.NewConsumerFromClient(c.client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(b.names.presence, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	out := map[string][][]byte{}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case km := <-pc.Messages():
			out[string(km.Key)] = append(out[string(km.Key)], km.Value)
			if km.Offset+1 >= newest {
				return out
			}
		case <-timeout:
			t.Fatalf("the presence topic not read up to %d", newest)
		}
	}
}

// TestPresenceLeaseLostWhileAlive: a node that stops heartbeating (it hangs) for longer than 2
// heartbeats is reaped, its members' leaves told once by another node; when it heartbeats again
// it records them again by itself, silently, and its later leave is written as usual.
func TestPresenceLeaseLostWhileAlive(t *testing.T) {
	cl := newCluster(t)
	prefix := transporttest.Prefix(t)
	log := &reapLog{}
	a := presenceNode(t, cl, prefix, "a", log)
	x := presenceNode(t, cl, prefix, "x", log)
	joinT(t, x, "c", "x1")
	joinT(t, x, "c", "x2")
	wantMembers(t, a, "c", "x/x1", "x/x2")
	x.pr.paused.Store(true)
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if got, want := log.get(), []string{"a c/x1 false", "a c/x2 true"}; !slices.Equal(got, want) {
			return fmt.Errorf("OnReap calls %v, want %v", got, want)
		}
		return nil
	})
	x.pr.paused.Store(false)
	wantMembers(t, a, "c", "x/x1", "x/x2") // recorded again
	vacated, err := x.Leave(t.Context(), "c", "x1")
	if err != nil || vacated {
		t.Fatalf("Leave after the lease came back: vacated %v, %v", vacated, err)
	}
	wantMembers(t, a, "c", "x/x2")
	time.Sleep(3 * testHeartbeat) // no ghost comes back, no second reap
	wantMembers(t, a, "c", "x/x2")
	if got, want := log.get(), []string{"a c/x1 false", "a c/x2 true"}; !slices.Equal(got, want) {
		t.Fatalf("OnReap calls %v, want %v", got, want)
	}
}

// TestPresenceJoinLeaveWithinCtx (review 13, finding 5): while the member locks are held, as a
// reconcile stuck on a slow Kafka holds them all across its batch, a Join and a Leave with a short
// ctx fail with the ctx's error by its end instead of waiting for the locks; the failed Join is
// not in the node's record, the failed Leave's member is out of it, and once the locks are free
// the reconcile writes the leave: the view ends with neither.
func TestPresenceJoinLeaveWithinCtx(t *testing.T) {
	cl := newCluster(t)
	b := presenceNode(t, cl, transporttest.Prefix(t), "a", nil)
	joinT(t, b, "c", "stays")
	joinT(t, b, "c", "leaves")
	wantMembers(t, b, "c", "a/leaves", "a/stays")
	p := &b.pr
	for i := range p.stripes {
		if err := p.stripes[i].lock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	held := true
	release := func() {
		if held {
			held = false
			for i := range p.stripes {
				p.stripes[i].unlock()
			}
		}
	}
	defer release()
	const short = 200 * time.Millisecond
	call := func(name string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), short)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, transports.ErrUnavailable) {
				t.Fatalf("%s while the locks are held: %v, want unavailable: deadline exceeded", name, err)
			}
		case <-time.After(10 * short):
			t.Fatalf("%s still waiting 10× past its ctx", name)
		}
	}
	call("Join", func(ctx context.Context) error {
		_, err := b.Join(ctx, "c", protocol.Member{User: "u", Session: "late", Node: "a"})
		return err
	})
	call("Leave", func(ctx context.Context) error {
		_, err := b.Leave(ctx, "c", "leaves")
		return err
	})
	p.mu.Lock()
	_, late := p.local["c"]["late"]
	_, leaves := p.local["c"]["leaves"]
	p.mu.Unlock()
	if late || leaves {
		t.Fatalf("node's record after the failed calls: holds late %v, holds leaves %v; want neither", late, leaves)
	}
	release()
	wantMembers(t, b, "c", "a/stays")
}

// TestPresenceCompactionKeepsTheView: the view a node reads from the whole log is the view it
// reads from the log compacted (the newest record of each key, in their order), for logs of
// puts by three incarnations, leaves, reaps (some written twice, some before a late put of their
// incarnation) and heartbeats, 200 random logs.
func TestPresenceCompactionKeepsTheView(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	incs := []string{"i1", "i2", "i3"}
	for round := range 200 {
		var log []*sarama.ConsumerMessage
		add := func(key string, value any) {
			var v []byte
			if value != nil {
				v, _ = json.Marshal(value)
			}
			log = append(log, &sarama.ConsumerMessage{Key: []byte(key), Value: v, Offset: int64(len(log))})
		}
		for range 60 {
			k := memberKey{"c" + strconv.Itoa(rng.IntN(3)), "s" + strconv.Itoa(rng.IntN(6))}
			inc := incs[rng.IntN(len(incs))]
			switch r := rng.IntN(10); {
			case r < 6:
				add(k.record(), memberValue{M: protocol.Member{User: "u" + strconv.Itoa(rng.IntN(3)), Session: k.session, Node: inc}, I: inc})
			case r < 8:
				add(k.record(), nil)
			case r < 9:
				add("r\x00"+inc, reapValue{By: "p", N: inc})
			default:
				add("h\x00"+inc, beatValue{I: inc})
			}
		}
		latest := map[string]int{}
		for i, km := range log {
			latest[string(km.Key)] = i
		}
		var compacted []*sarama.ConsumerMessage
		for i, km := range log {
			if latest[string(km.Key)] == i {
				compacted = append(compacted, km)
			}
		}
		if got, want := viewOf(compacted), viewOf(log); !slices.Equal(got, want) {
			t.Fatalf("round %d: compacted view %v, want %v", round, got, want)
		}
	}
}

// viewOf applies log to a new view and returns its members as "channel/session/owner/user".
func viewOf(log []*sarama.ConsumerMessage) []string {
	var p presence
	p.init("reader")
	p.reset(0, "")
	for _, km := range log {
		p.apply(km)
	}
	var out []string
	for _, ch := range p.view.Names() {
		p.view.Each(ch, func(e roster.Entry[string]) bool {
			out = append(out, ch+"/"+e.M.Session+"/"+e.X+"/"+e.M.User)
			return true
		})
	}
	return out
}

// BenchmarkPresenceMembersPage reads a page of 100 members from the middle of a channel of
// 1,000 and of 10,000 members (kfake in process): a list-offsets round trip to catch up, then
// the node's view; the page's cost does not grow with the channel.
func BenchmarkPresenceMembersPage(b *testing.B) {
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", count), func(b *testing.B) {
			cl := newCluster(b)
			n := newBroker(b, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(b), NodeID: "bench"})
			joinMany(b, n, "big", count)
			after := fmt.Sprintf("s%06d", count/2)
			b.ResetTimer()
			for b.Loop() {
				ms, _, err := n.Members(b.Context(), "big", after, 100)
				if err != nil || len(ms) != 100 {
					b.Fatal(len(ms), err)
				}
			}
		})
	}
}

// BenchmarkPresenceJoin: a Join and a Leave of one member in a channel of 100, one at a time:
// each is a record written and read back by the node's reader.
func BenchmarkPresenceJoin(b *testing.B) {
	cl := newCluster(b)
	n := newBroker(b, Config{Brokers: cl.addrs(), Prefix: transporttest.Prefix(b), NodeID: "bench"})
	joinMany(b, n, "room", 100)
	m := protocol.Member{User: "u", Session: "s", Node: "bench"}
	for b.Loop() {
		if _, err := n.Join(b.Context(), "room", m); err != nil {
			b.Fatal(err)
		}
		if _, err := n.Leave(b.Context(), "room", "s"); err != nil {
			b.Fatal(err)
		}
	}
}

// joinMany joins count members (sessions s000000…) to channel, 16 at a time.
func joinMany(b *testing.B, n *Broker, channel string, count int) {
	b.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < count; i += 16 {
				s := fmt.Sprintf("s%06d", i)
				if _, err := n.Join(b.Context(), channel, protocol.Member{User: "u" + s, Session: s, Node: "bench"}); err != nil {
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

// TestPresenceSessionMoves: a session joined on one node and then on another has one owner, the
// second: the first node does not record it again, and the second's leave removes it.
func TestPresenceSessionMoves(t *testing.T) {
	cl := newCluster(t)
	prefix := transporttest.Prefix(t)
	a := presenceNode(t, cl, prefix, "a", nil)
	b := presenceNode(t, cl, prefix, "b", nil)
	joinT(t, a, "c", "s")
	joinT(t, b, "c", "s")
	wantMembers(t, a, "c", "b/s")
	time.Sleep(3 * testHeartbeat) // a's reconcile runs: it must not take the session back
	wantMembers(t, a, "c", "b/s")
	if vacated, err := b.Leave(t.Context(), "c", "s"); err != nil || !vacated {
		t.Fatalf("Leave: vacated %v, %v", vacated, err)
	}
	time.Sleep(3 * testHeartbeat)
	wantMembers(t, b, "c")
}

// TestPresenceSilentRule (review 13, finding 4): an incarnation is reaped once both 1.5 heartbeats
// passed since its last heartbeat was seen and reapAfter of the node's own heartbeats were applied
// after it: not before 1.5 heartbeats whatever the count, and not while the node's own heartbeats
// do not come back (its reader lags), however long ago the last one was seen.
func TestPresenceSilentRule(t *testing.T) {
	const hb = time.Second
	now := time.Now()
	for _, tc := range []struct {
		since  int
		ago    time.Duration
		silent bool
	}{
		{reapAfter, 3 * hb / 2, true},
		{reapAfter + 3, 5 * hb, true},
		{reapAfter, 3*hb/2 - time.Millisecond, false},
		{reapAfter + 10, hb, false},
		{reapAfter - 1, time.Hour, false},
		{0, time.Hour, false},
	} {
		pe := &peer{since: tc.since, seen: now.Add(-tc.ago)}
		if got := pe.silent(now, hb); got != tc.silent {
			t.Errorf("since %d, last seen %v ago: silent %v, want %v", tc.since, tc.ago, got, tc.silent)
		}
	}
	if reapAfter > 3 { // 3 own heartbeats (two per heartbeat) span at most 1.5 heartbeats
		t.Errorf("reapAfter %d: the count would keep the reap past 1.5 heartbeats and a pass", reapAfter)
	}
}
