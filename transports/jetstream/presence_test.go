package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// presenceNodes starts n nodes (node ids n0, n1, ...) sharing a new prefix on the server at url,
// with the given heartbeat (0: the default), and removes the prefix's bucket and streams after
// the test.
func presenceNodes(t testing.TB, url string, n int, heartbeat time.Duration, opts ...func(*Config)) []*Broker {
	t.Helper()
	prefix := transporttest.Prefix(t)
	dropStreams(t, url, prefix)
	out := make([]*Broker, n)
	for i := range out {
		cfg := testConfig(url, prefix)
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.Presence.Heartbeat = heartbeat
		for _, o := range opts {
			o(&cfg)
		}
		b, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func member(node, session, user string) protocol.Member {
	return protocol.Member{User: user, Session: session, Node: node, Info: json.RawMessage(`{"s":"` + session + `"}`)}
}

func join(t testing.TB, b *Broker, channel string, m protocol.Member) bool {
	t.Helper()
	occupied, err := b.Join(t.Context(), channel, m)
	if err != nil {
		t.Fatal(err)
	}
	return occupied
}

// allMembers pages through channel with pages of limit and checks the order.
func allMembers(t testing.TB, b *Broker, channel string, limit int) ([]protocol.Member, error) {
	return transporttest.AllMembers(context.Background(), b, channel, limit)
}

func sessions(ms []protocol.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Node+"/"+m.Session+"/"+m.User)
	}
	return out
}

// wantMembers waits until channel's members are want (node/session/user, in session order).
func wantMembers(t *testing.T, b *Broker, channel string, want ...string) {
	t.Helper()
	transporttest.WaitFor(t, wait, func() error {
		ms, err := allMembers(t, b, channel, 2)
		if err != nil {
			return err
		}
		if got := sessions(ms); !slices.Equal(got, want) {
			return fmt.Errorf("members %v, want %v", got, want)
		}
		return nil
	})
}

func wantStats(t *testing.T, b *Broker, channel string, conns, users int) {
	t.Helper()
	transporttest.WaitFor(t, wait, func() error {
		st, err := b.Stats(t.Context(), channel)
		if err != nil {
			return err
		}
		if st != (protocol.PresenceStats{Connections: conns, Users: users}) {
			return fmt.Errorf("stats %+v, want %d connections %d users", st, conns, users)
		}
		return nil
	})
}

// TestPresenceNodes: members of 3 nodes, in session order with their node and info; a user on
// two nodes counts once; Join of a recorded session replaces it; leaves.
func TestPresenceNodes(t *testing.T) {
	br := startBroker(t)
	testPresenceNodes(t, br.url())
}

// TestPresenceLocalServer runs TestPresenceNodes, TestPresenceOnce, TestPresenceSweep and
// TestPresenceReap against the machine's nats-server (2.9) when one listens on 127.0.0.1:4222.
func TestPresenceLocalServer(t *testing.T) {
	const url = "nats://127.0.0.1:4222"
	c, err := net.DialTimeout("tcp", "127.0.0.1:4222", 200*time.Millisecond)
	if err != nil {
		t.Skip("no nats-server on 127.0.0.1:4222")
	}
	_ = c.Close()
	t.Run("nodes", func(t *testing.T) { testPresenceNodes(t, url) })
	t.Run("once", func(t *testing.T) { testPresenceOnce(t, url) })
	t.Run("sweep", func(t *testing.T) { testPresenceSweep(t, url) })
	t.Run("reap", func(t *testing.T) { testPresenceReap(t, url) })
	t.Run("listing", func(t *testing.T) { testKVListingPendingLow(t, url) })
}

func testPresenceNodes(t *testing.T, url string) {
	n := presenceNodes(t, url, 3, 0)
	if !join(t, n[0], "room", member("n0", "s3", "ann")) {
		t.Error("first join: occupied false")
	}
	if join(t, n[1], "room", member("n1", "s1", "ann")) {
		t.Error("second join: occupied true")
	}
	join(t, n[2], "room", member("n2", "s2", "")) // anonymous: a user of its own
	join(t, n[2], "room.b", member("n2", "s4", "bob"))
	wantMembers(t, n[1], "room", "n1/s1/ann", "n2/s2/", "n0/s3/ann")
	wantStats(t, n[0], "room", 3, 2)
	wantStats(t, n[0], "room.b", 1, 1)
	ms, _, err := n[0].Members(t.Context(), "room", "", 10)
	if err != nil || len(ms) != 3 || string(ms[0].Info) != `{"s":"s1"}` {
		t.Fatalf("members %+v, %v", ms, err)
	}

	// Join again: the entry is replaced (here with another user), nothing is occupied.
	if join(t, n[0], "room", member("n0", "s3", "cid")) {
		t.Error("join of a recorded session: occupied true")
	}
	wantMembers(t, n[2], "room", "n1/s1/ann", "n2/s2/", "n0/s3/cid")
	wantStats(t, n[2], "room", 3, 3)

	for i, s := range []string{"s1", "s2", "s3"} {
		vacated, err := n[(i+1)%3].Leave(t.Context(), "room", s)
		if err != nil {
			t.Fatal(err)
		}
		if vacated != (s == "s3") {
			t.Errorf("leave %s: vacated %v", s, vacated)
		}
	}
	if vacated, err := n[0].Leave(t.Context(), "room", "s3"); vacated || err != nil {
		t.Errorf("leave of a session not recorded: %v, %v", vacated, err)
	}
	wantMembers(t, n[0], "room")
	wantStats(t, n[0], "room", 0, 0)
}

// TestPresenceOnce: concurrent joins of one channel from 3 nodes report occupied once, the
// concurrent leaves vacated once, round after round.
func TestPresenceOnce(t *testing.T) {
	br := startBroker(t)
	testPresenceOnce(t, br.url())
}

func testPresenceOnce(t *testing.T, url string) {
	n := presenceNodes(t, url, 3, 0)
	const perNode = 4
	for round := range 3 {
		channel := fmt.Sprintf("r%d", round)
		var occupied, vacated atomic.Int32
		run := func(f func(node, i int) (bool, error), count *atomic.Int32) {
			var wg sync.WaitGroup
			errs := make(chan error, 3*perNode)
			for node := range 3 {
				for i := range perNode {
					wg.Add(1)
					go func() {
						defer wg.Done()
						once, err := f(node, i)
						if err != nil {
							errs <- err
						}
						if once {
							count.Add(1)
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		}
		run(func(node, i int) (bool, error) {
			return n[node].Join(t.Context(), channel, member(fmt.Sprintf("n%d", node), fmt.Sprintf("s%d-%d", node, i), fmt.Sprintf("u%d", i)))
		}, &occupied)
		wantStats(t, n[0], channel, 3*perNode, perNode)
		run(func(node, i int) (bool, error) {
			return n[node].Leave(t.Context(), channel, fmt.Sprintf("s%d-%d", node, i))
		}, &vacated)
		if occupied.Load() != 1 || vacated.Load() != 1 {
			st, err := n[0].Stats(t.Context(), channel)
			ms, _, err2 := n[0].Members(t.Context(), channel, "", 100)
			t.Logf("now: %+v %v, members %v %v", st, err, sessions(ms), err2)
			t.Fatalf("round %d: occupied %d times, vacated %d times; want once each", round, occupied.Load(), vacated.Load())
		}
		wantStats(t, n[1], channel, 0, 0)
	}
}

// seed records count members of channel as node's, writing the member keys straight into the
// bucket (Join's four writes each would make the test slow); Members reads only those.
func seed(t testing.TB, b *Broker, channel string, count int) {
	kv, err := b.bucket()
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 500
	for i := 0; i < count; i += batch {
		var acks []jetstream.PubAckFuture
		for j := i; j < min(i+batch, count); j++ {
			m := member(b.id, fmt.Sprintf("s%05d", j), fmt.Sprintf("u%d", j))
			v, _ := json.Marshal(memberRecord{Member: m, Owner: b.id, Epoch: "seed"})
			a, err := js.PublishAsync("$KV."+kv.Bucket()+"."+memberKey(channel, m.Session), v)
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, a)
		}
		for _, a := range acks {
			select {
			case <-a.Ok():
			case err := <-a.Err():
				t.Fatal(err)
			case <-time.After(wait):
				t.Fatal("no PubAck")
			}
		}
	}
}

// TestPresencePaging: 10,000 members of one channel come exactly once, in session order, over
// pages; other channels' members do not show.
func TestPresencePaging(t *testing.T) {
	br := startBroker(t)
	// A listing of 10,000 keys under -race on a loaded machine takes seconds.
	n := presenceNodes(t, br.url(), 1, 0, func(c *Config) { c.PublishTimeout = 10 * time.Second })[0]
	const count = 10000
	seed(t, n, "big", count)
	seed(t, n, "big2", 50) // a channel whose name extends "big"
	for _, limit := range []int{1000, 777} {
		ms, err := allMembers(t, n, "big", limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != count {
			t.Fatalf("limit %d: %d members, want %d", limit, len(ms), count)
		}
		for i, m := range ms {
			if want := fmt.Sprintf("s%05d", i); m.Session != want || m.User != fmt.Sprintf("u%d", i) {
				t.Fatalf("limit %d: member %d is %+v, want session %s", limit, i, m, want)
			}
		}
	}
	ms, more, err := n.Members(t.Context(), "big", "s09998", 10)
	if err != nil || more || len(ms) != 1 || ms[0].Session != "s09999" {
		t.Fatalf("last page: %v %v %v", sessions(ms), more, err)
	}
}

// BenchmarkPresenceMembersPage: a page of 100 from the middle of a 10,000-member channel. Its
// cost is the listing of the channel's keys plus 100 reads; compare with -bench at 1,000.
func BenchmarkPresenceMembersPage(b *testing.B) {
	for _, count := range []int{1000, 10000} {
		b.Run(fmt.Sprint(count), func(b *testing.B) {
			br := startBroker(b)
			n := presenceNodes(b, br.url(), 1, 0)[0]
			seed(b, n, "big", count)
			after := fmt.Sprintf("s%05d", count/2)
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

// BenchmarkPresenceJoin: Join and Leave of one member in a channel of 100.
func BenchmarkPresenceJoin(b *testing.B) {
	br := startBroker(b)
	n := presenceNodes(b, br.url(), 1, 0)[0]
	for i := range 100 {
		join(b, n, "room", member(n.id, fmt.Sprintf("x%d", i), fmt.Sprintf("u%d", i)))
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := n.Join(b.Context(), "room", member(n.id, "s", "u")); err != nil {
			b.Fatal(err)
		}
		if _, err := n.Leave(b.Context(), "room", "s"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPresenceChannels: channels by prefix, paged, with their counts; an emptied channel goes.
func TestPresenceChannels(t *testing.T) {
	br := startBroker(t)
	n := presenceNodes(t, br.url(), 2, 0)
	for i, ch := range []string{"chat.b", "chat.a", "chat.c", "news", "chat.a"} {
		join(t, n[i%2], ch, member(fmt.Sprintf("n%d", i%2), fmt.Sprintf("s%d", i), "u"))
	}
	var got []string
	after := ""
	for {
		page, more, err := n[1].Channels(t.Context(), "chat.", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			got = append(got, fmt.Sprintf("%s:%d:%d", c.Channel, c.Connections, c.Users))
			after = c.Channel
		}
		if !more {
			break
		}
	}
	if want := []string{"chat.a:2:1", "chat.b:1:1", "chat.c:1:1"}; !slices.Equal(got, want) {
		t.Fatalf("channels %v, want %v", got, want)
	}
	if _, err := n[0].Leave(t.Context(), "chat.b", "s0"); err != nil {
		t.Fatal(err)
	}
	all, more, err := n[0].Channels(t.Context(), "", "", 10)
	if err != nil || more || len(all) != 3 || all[0].Channel != "chat.a" || all[2].Channel != "news" {
		t.Fatalf("all channels: %+v %v %v", all, more, err)
	}
}

// reaps counts OnReap calls across nodes.
type reaps struct {
	mu  sync.Mutex
	got map[string]int // channel/session/vacated -> calls
}

func (r *reaps) on(b *Broker) {
	b.OnReap(func(channel string, m protocol.Member, vacated bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got[fmt.Sprintf("%s/%s/%v", channel, m.Session, vacated)]++
	})
}

func (r *reaps) wait(t *testing.T, want ...string) {
	t.Helper()
	transporttest.WaitFor(t, wait, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		var got []string
		for k, n := range r.got {
			for range n {
				got = append(got, k)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("reaped %v, want %v", got, want)
		}
		return nil
	})
}

// reapNodes are 3 nodes with a short heartbeat whose OnReap is counted; the nodes are not
// started (OnReap is set before Start).
func reapNodes(t *testing.T, url string) ([]*Broker, *reaps) {
	return reapNodesBeating(t, url, 250*time.Millisecond)
}

// reapNodesBeating is reapNodes with another presence heartbeat.
func reapNodesBeating(t *testing.T, url string, heartbeat time.Duration, opts ...func(*Config)) ([]*Broker, *reaps) {
	prefix := transporttest.Prefix(t)
	dropStreams(t, url, prefix)
	r := &reaps{got: map[string]int{}}
	var out []*Broker
	for i := range 3 {
		cfg := testConfig(url, prefix)
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.Presence.Heartbeat = heartbeat
		for _, o := range opts {
			o(&cfg)
		}
		b, err := New(cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		r.on(b)
		if err := b.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out, r
}

// TestPresenceReap: a node that stops renewing its lease (closed without leaving: a SIGKILL as
// seen from the broker) loses its members within 2 heartbeats and a reaping pass; OnReap is
// called once in the cluster for each, with vacated for a channel it leaves empty.
func TestPresenceReap(t *testing.T) {
	br := startBroker(t)
	testPresenceReap(t, br.url())
}

func testPresenceReap(t *testing.T, url string) {
	n, r := reapNodes(t, url)
	join(t, n[0], "shared", member("n0", "a", "ann"))
	join(t, n[2], "shared", member("n2", "b", "bob"))
	join(t, n[2], "shared", member("n2", "c", "bob"))
	join(t, n[2], "alone", member("n2", "d", ""))
	stopped := time.Now()
	if err := n[2].Close(); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, n[0], "shared", "n0/a/ann")
	wantMembers(t, n[1], "alone")
	t.Logf("reaped %v after the node stopped (heartbeat 250ms)", time.Since(stopped).Round(10*time.Millisecond))
	r.wait(t, "shared/b/false", "shared/c/false", "alone/d/true")
	wantStats(t, n[1], "shared", 1, 1)
	wantStats(t, n[1], "alone", 0, 0)
}

// TestPresenceLeaseLost: a node that hangs (renews nothing) is reaped; when it renews again it
// finds its lease lost and records its members again, under a new epoch, by itself.
func TestPresenceLeaseLost(t *testing.T) {
	br := startBroker(t)
	n, r := reapNodes(t, br.url())
	join(t, n[1], "room", member("n1", "a", "ann"))
	join(t, n[1], "room", member("n1", "b", ""))
	join(t, n[0], "room", member("n0", "c", "cid"))
	n[1].pr.paused.Store(true)
	r.wait(t, "room/a/false", "room/b/false")
	wantMembers(t, n[0], "room", "n0/c/cid")
	n[1].pr.paused.Store(false)
	wantMembers(t, n[2], "room", "n1/a/ann", "n1/b/", "n0/c/cid")
	wantStats(t, n[2], "room", 3, 3)
	// Its members are its own again: they leave normally, and nothing more is reaped.
	if _, err := n[1].Leave(t.Context(), "room", "a"); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, n[2], "room", "n1/b/", "n0/c/cid")
	r.wait(t, "room/a/false", "room/b/false")
}

// TestPresenceReapDuringJoin: a node's lease runs out while it is recording a Join, and a reaper
// claims the lease between the Join's steps: after the member key is written and before its user
// and channel counts are ("recorded"), between the two ("user"), or after the counts and before
// the Join is done ("counted"); the Join then completes and the node, renewing, records its
// members again. The counts are exact (with another user in the channel, and alone), and nothing
// is left of them once every member left: no user key, no channel key.
func TestPresenceReapDuringJoin(t *testing.T) {
	br := startBroker(t)
	for _, step := range []string{"recorded", "user", "counted"} {
		for _, others := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/others=%v", step, others), func(t *testing.T) {
				testPresenceReapDuringJoin(t, br.url(), step, others, false)
			})
		}
	}
	// The node dies (it renews nothing, and its Join never completes) once it wrote the counts:
	// its member is removed with them, when its lease is claimed again.
	t.Run("counted/dies", func(t *testing.T) {
		testPresenceReapDuringJoin(t, br.url(), "counted", true, true)
	})
}

func testPresenceReapDuringJoin(t *testing.T, url, step string, others, dies bool) {
	// The Join waits for the reap: its timeout is the test's.
	n, r := reapNodesBeating(t, url, 250*time.Millisecond, func(c *Config) { c.PublishTimeout = wait })
	want := []string{"n1/a/ann"}
	conns, users := 1, 1
	if others {
		join(t, n[0], "room", member("n0", "x", "xena"))
		want = append(want, "n0/x/xena")
		conns, users = 2, 2
	}
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(s string) {
		if s == step {
			once.Do(func() { close(reached); <-release })
		}
	}
	n[1].pr.step.Store(&hook)
	claimed := make(chan struct{})
	var claimedOnce sync.Once
	onClaim := func(node string) {
		if node == "n1" {
			claimedOnce.Do(func() { close(claimed) })
		}
	}
	for _, b := range n {
		b.pr.reaped.Store(&onClaim)
	}
	joined := make(chan error, 1)
	go func() {
		_, err := n[1].Join(context.Background(), "room", member("n1", "a", "ann"))
		joined <- err
	}()
	select {
	case <-reached:
	case err := <-joined:
		t.Fatalf("the Join ended before its step %q: %v", step, err)
	}
	// The node hangs: its lease runs out and another node claims it while the Join is at step.
	n[1].pr.paused.Store(true)
	select {
	case <-claimed:
	case <-time.After(wait):
		t.Fatal("the lease of the hung node was not claimed")
	}
	reaped := func() {
		t.Helper()
		transporttest.WaitFor(t, wait, func() error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.got["room/a/false"]+r.got["room/a/true"] == 0 {
				return errors.New("the member of the Join is not reaped yet")
			}
			return nil
		})
	}
	if dies {
		t.Cleanup(func() { close(release); <-joined })
		reaped() // when the lease is claimed again
		if others {
			wantMembers(t, n[2], "room", "n0/x/xena")
			wantStats(t, n[2], "room", 1, 1)
		} else {
			wantMembers(t, n[2], "room")
			wantStats(t, n[2], "room", 0, 0)
		}
		return
	}
	close(release)
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	reaped()                    // at the first claim (before the pending mark), or when the lease is claimed again
	n[1].pr.paused.Store(false) // it renews, finds its lease lost and records its members again
	wantMembers(t, n[2], "room", want...)
	wantStats(t, n[2], "room", conns, users)
	// A Leave waits for the re-recording of its member (the stripe): the counts are exact after.
	if _, err := n[1].Leave(t.Context(), "room", "a"); err != nil {
		t.Fatal(err)
	}
	if others {
		wantStats(t, n[2], "room", 1, 1)
		if _, err := n[0].Leave(t.Context(), "room", "x"); err != nil {
			t.Fatal(err)
		}
	}
	wantStats(t, n[2], "room", 0, 0)
	kv, err := n[2].bucket()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{userKey("room", "ann"), userKey("room", "xena"), chanKey("room")} {
		if e, err := kv.Get(t.Context(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			var v string
			if e != nil {
				v = string(e.Value())
			}
			t.Errorf("%s = %q (%v) once every member left, want no key", key, v, err)
		}
	}
}

// TestPresenceBucketLost: the bucket deleted (a server restarted without its storage) is
// created again and every node records its members again from its own record.
func TestPresenceBucketLost(t *testing.T) {
	br := startBroker(t)
	n, r := reapNodes(t, br.url())
	join(t, n[0], "room", member("n0", "a", "ann"))
	join(t, n[1], "room", member("n1", "b", "ann"))
	join(t, n[2], "other", member("n2", "c", ""))
	if _, err := n[0].Leave(t.Context(), "room", "a"); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(n[0].nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(t.Context(), n[0].bucketName()); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, n[0], "room", "n1/b/ann")
	wantMembers(t, n[0], "other", "n2/c/")
	wantStats(t, n[2], "room", 1, 1)
	wantStats(t, n[2], "other", 1, 1)
	r.wait(t) // nothing reaped: the nodes were alive all along
}

// TestPresenceServerRestart: the server restarts with its storage; presence is as it was, the
// nodes go on renewing (nothing is reaped), and a node that died while the server was down is
// reaped after.
func TestPresenceServerRestart(t *testing.T) {
	br := startBroker(t)
	// After the restart each node reconnects at its own time (its reconnect wait doubles up to
	// 500 ms in these tests, with jitter): a live node is not reaped if it renews within 1.5
	// heartbeats of the first reaper's return, so the heartbeat must outlast that spread.
	n, r := reapNodesBeating(t, br.url(), time.Second)
	join(t, n[0], "room", member("n0", "a", "ann"))
	join(t, n[1], "room", member("n1", "c", "cid"))
	join(t, n[2], "room", member("n2", "b", "bob"))
	br.stop()
	_ = n[2].Close() // dies while the server is down
	// The outage lasts longer than 1.5 heartbeats: no lease could be renewed meanwhile, and the
	// live nodes must not be reaped for it.
	time.Sleep(3 * n[0].cfg.Presence.Heartbeat)
	br.start()
	wantMembers(t, n[1], "room", "n0/a/ann", "n1/c/cid")
	r.wait(t, "room/b/false")
	if !join(t, n[1], "new", member("n1", "c", "")) {
		t.Error("join after the restart: occupied false")
	}
	wantStats(t, n[0], "room", 2, 2)
}

// TestPresenceNodeRestart: a node that comes back with the same id after dying (a restarted
// process) removes what its earlier process left, through OnReap, before a reaper has to.
func TestPresenceNodeRestart(t *testing.T) {
	br := startBroker(t)
	n := presenceNodes(t, br.url(), 1, time.Minute)
	join(t, n[0], "room", member("n0", "a", "ann"))
	_ = n[0].Close()
	again, err := New(n[0].cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = again.Close() })
	r := &reaps{got: map[string]int{}}
	r.on(again)
	if err := again.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.wait(t, "room/a/true")
	wantMembers(t, again, "room")
}

// TestPresenceSweep: the delete markers that leaves write are removed after a while, so a
// channel's listing does not grow with every session it ever had; live keys are kept.
func TestPresenceSweep(t *testing.T) {
	br := startBroker(t)
	testPresenceSweep(t, br.url())
}

func testPresenceSweep(t *testing.T, url string) {
	n, _ := reapNodes(t, url)
	for i := range 20 {
		join(t, n[1], "room", member("n1", fmt.Sprint("s", i), "u"))
		if i > 0 {
			if _, err := n[1].Leave(t.Context(), "room", fmt.Sprint("s", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	kv, err := n[0].bucket()
	if err != nil {
		t.Fatal(err)
	}
	transporttest.WaitFor(t, 30*time.Second, func() error {
		st, err := kv.Status(t.Context())
		if err != nil {
			return err
		}
		// Live: s0's member and index keys, the channel and user counts, 3 leases.
		if st.Values() != 7 {
			return fmt.Errorf("%d messages in the bucket, want 7", st.Values())
		}
		return nil
	})
	wantMembers(t, n[2], "room", "n1/s0/u")
	wantStats(t, n[2], "room", 1, 1)
}

// TestPresenceNotStarted: ErrNotStarted before Start, ErrClosed after Close.
func TestPresenceNotStarted(t *testing.T) {
	br := startBroker(t)
	b, err := New(testConfig(br.url(), transporttest.Prefix(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := func() []error {
		ctx := t.Context()
		_, e1 := b.Join(ctx, "c", member("n", "s", "u"))
		_, e2 := b.Leave(ctx, "c", "s")
		_, _, e3 := b.Members(ctx, "c", "", 1)
		_, e4 := b.Stats(ctx, "c")
		_, _, e5 := b.Channels(ctx, "", "", 1)
		return []error{e1, e2, e3, e4, e5}
	}
	for i, err := range calls() {
		if !errors.Is(err, transports.ErrNotStarted) {
			t.Errorf("call %d before Start: %v", i, err)
		}
	}
	_ = b.Close()
	for i, err := range calls() {
		if !errors.Is(err, transports.ErrClosed) {
			t.Errorf("call %d after Close: %v", i, err)
		}
	}
}

// TestPresenceCloseStopsEverything: the lease renewal, the reaper and the re-recorder end with
// Close, which is safe twice.
func TestPresenceCloseStopsEverything(t *testing.T) {
	br := startBroker(t)
	before := ours()
	n, _ := reapNodes(t, br.url())
	join(t, n[0], "c", member("n0", "s", "u"))
	if _, _, err := n[1].Members(t.Context(), "c", "", 10); err != nil {
		t.Fatal(err)
	}
	for _, b := range n {
		_ = b.Close()
		_ = b.Close()
	}
	transporttest.WaitFor(t, wait, func() error {
		if now := ours(); len(now) > len(before) {
			return fmt.Errorf("%d goroutines, %d before:\n%s", len(now), len(before), strings.Join(now, "\n\n"))
		}
		return nil
	})
}

// TestUnsafeName: unsafeName inverts SafeName.
func TestUnsafeName(t *testing.T) {
	for _, s := range []string{"", "a", "_", "a.b", "héllo wörld", "x_2e", "-Z9"} {
		if got, ok := unsafeName(transports.SafeName(s)); !ok || got != s {
			t.Errorf("unsafeName(SafeName(%q)) = %q, %v", s, got, ok)
		}
	}
}

// TestPresencePassive: a Broker that neither joins nor sets OnReap (a service's), even with the
// node id of a gateway node, writes no lease and removes nothing.
func TestPresencePassive(t *testing.T) {
	br := startBroker(t)
	n, r := reapNodes(t, br.url())
	join(t, n[0], "room", member("n0", "a", "ann"))
	passive, err := New(n[0].cfg, testLogger(t)) // same prefix, same node id "n0"
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = passive.Close() })
	if err := passive.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	kv, err := n[1].bucket()
	if err != nil {
		t.Fatal(err)
	}
	// Let n0 renew its lease 3 times meanwhile (revisions are the bucket's sequence: count the
	// changes), each time with its own epoch.
	n[0].pr.mu.Lock()
	epoch := n[0].pr.epoch
	n[0].pr.mu.Unlock()
	var last uint64
	renewals := -1
	transporttest.WaitFor(t, wait, func() error {
		e, err := kv.Get(t.Context(), leaseKey("n0"))
		if err != nil {
			return err
		}
		if string(e.Value()) != epoch {
			t.Fatalf("lease of n0 is %q, n0's epoch %q", e.Value(), epoch)
		}
		if e.Revision() != last {
			last, renewals = e.Revision(), renewals+1
		}
		if renewals < 3 {
			return fmt.Errorf("%d renewals seen", renewals)
		}
		return nil
	})
	if passive.pr.active.Load() {
		t.Error("the passive Broker takes part in presence")
	}
	wantMembers(t, n[2], "room", "n0/a/ann")
	r.wait(t)
}

// TestPresenceLeaveRetried: a Leave that fails (the server is down) is the node's truth all the
// same: the member is removed from the bucket once the node renews its lease again. The server's
// restart reaps no one: the heartbeat is 2 s, so that the nodes may reconnect up to 1.5 heartbeats
// apart (with 250 ms, a node reconnecting 375 ms after the others on a loaded machine lost its
// lease and its members were reaped, as they should be then: CI, once).
func TestPresenceLeaveRetried(t *testing.T) {
	br := startBroker(t)
	n, r := reapNodesBeating(t, br.url(), 2*time.Second)
	join(t, n[0], "room", member("n0", "a", "ann"))
	join(t, n[0], "room", member("n0", "b", "bob"))
	join(t, n[1], "room", member("n1", "c", "cid"))
	br.stop()
	if _, err := n[0].Leave(t.Context(), "room", "a"); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("Leave with the server down: %v, want ErrUnavailable", err)
	}
	br.start()
	wantMembers(t, n[2], "room", "n0/b/bob", "n1/c/cid")
	wantStats(t, n[2], "room", 2, 2)
	r.wait(t)
}

// presenceSuiteNodes is the presence suite's node constructor on url: nodes not started, named by
// the suite's node ids, each prefix's bucket and streams deleted when its test ends.
func presenceSuiteNodes(url string) transporttest.NewPresenceNode {
	var seen sync.Map
	return func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		if _, dup := seen.LoadOrStore(prefix, true); !dup {
			dropStreams(t, url, prefix)
		}
		cfg := testConfig(url, prefix)
		cfg.Name = nodeID
		cfg.Presence.Heartbeat = heartbeat
		b, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestPresenceConformance runs the presence conformance suite on an in-process server that it
// restarts (keeping its storage).
func TestPresenceConformance(t *testing.T) {
	br := startBroker(t)
	// 2,000 members in the paging test: a JetStream page lists the channel's keys (O(members));
	// TestPresencePaging pages 10,000.
	transporttest.RunPresence(t, transporttest.PresenceFeatures{RestartBroker: br.restart, Members: 2000},
		presenceSuiteNodes(br.url()))
}

// BenchmarkPresenceJoinStorm: N Joins at once on one channel of one node (as many as a join
// storm of N clients makes: every connection's subscribe joins on its own goroutine), then N
// Leaves at once. It reports the joins and leaves that failed (timed out: PublishTimeout 2 s),
// the node's requests to the server per join and per leave (messages the connection sent: KV
// reads, writes and compare-and-sets, retries included) and the time per join.
func BenchmarkPresenceJoinStorm(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			br := startBroker(b)
			n := presenceNodes(b, br.url(), 1, 0)[0]
			var failedJoins, failedLeaves atomic.Int64
			var joinReqs, leaveReqs uint64
			var joinTime time.Duration
			storm := func(f func(i int) error, failed *atomic.Int64) (uint64, time.Duration) {
				out0 := n.nc.Stats().OutMsgs
				start := time.Now()
				var wg sync.WaitGroup
				for i := range size {
					wg.Go(func() {
						if err := f(i); err != nil {
							failed.Add(1)
						}
					})
				}
				wg.Wait()
				return n.nc.Stats().OutMsgs - out0, time.Since(start)
			}
			round := 0
			for b.Loop() {
				channel := fmt.Sprintf("storm%d", round)
				round++
				r, d := storm(func(i int) error {
					_, err := n.Join(context.Background(), channel, member(n.id, fmt.Sprintf("s%d", i), fmt.Sprintf("u%d", i)))
					return err
				}, &failedJoins)
				joinReqs += r
				joinTime += d
				r, _ = storm(func(i int) error {
					_, err := n.Leave(context.Background(), channel, fmt.Sprintf("s%d", i))
					return err
				}, &failedLeaves)
				leaveReqs += r
			}
			joins := float64(b.N * size)
			b.ReportMetric(float64(failedJoins.Load()), "failed-joins")
			b.ReportMetric(float64(failedLeaves.Load()), "failed-leaves")
			b.ReportMetric(float64(joinReqs)/joins, "requests/join")
			b.ReportMetric(float64(leaveReqs)/joins, "requests/leave")
			b.ReportMetric(float64(joinTime.Microseconds())/joins, "µs/join")
		})
	}
}

// TestPresenceStorm: 3 nodes join 200 members each to one channel at once, then leave them at
// once, then churn (every member joins and leaves 3 times, all at once): occupied and vacated
// come once per time the channel filled and emptied (once each for the storms, as many of one
// as of the other in the churn), and counts and members are right after each phase.
func TestPresenceStorm(t *testing.T) {
	br := startBroker(t)
	// 600 concurrent Joins under -race: the last of them wait for their turn to write, until
	// nearly the whole storm is written, which takes about 2,400 requests' CPU time of this
	// process and of the in-process server (also under -race). On a machine shared with
	// other race runs 10 s and 30 s were too short (before the listing fix too); the test is
	// about counts and members, the timeout only sets the pace.
	n := presenceNodes(t, br.url(), 3, 0, func(c *Config) { c.PublishTimeout = 12 * wait })
	const perNode, users = 200, 50
	const channel = "storm"
	var occupied, vacated atomic.Int32
	session := func(node, i int) string { return fmt.Sprintf("s%d-%03d", node, i) }
	each := func(f func(node, i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, 3*perNode)
		for node := range 3 {
			for i := range perNode {
				wg.Go(func() {
					if err := f(node, i); err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	joinOne := func(node, i int) error {
		m := member(fmt.Sprintf("n%d", node), session(node, i), fmt.Sprintf("u%d", i%users))
		once, err := n[node].Join(t.Context(), channel, m)
		if once {
			occupied.Add(1)
		}
		return err
	}
	leaveOne := func(node, i int) error {
		once, err := n[node].Leave(t.Context(), channel, session(node, i))
		if once {
			vacated.Add(1)
		}
		return err
	}

	each(joinOne)
	if got := occupied.Load(); got != 1 {
		t.Fatalf("storm of joins: occupied %d times, want once", got)
	}
	wantStats(t, n[1], channel, 3*perNode, users)
	ms, err := allMembers(t, n[2], channel, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for node := range 3 {
		for i := range perNode {
			want = append(want, fmt.Sprintf("n%d/%s/u%d", node, session(node, i), i%users))
		}
	}
	if got := sessions(ms); !slices.Equal(got, want) {
		// Which read missed: the listing of the member keys, or the read of a listed key? (It
		// failed once in CI, 599 of 600, not reproduced in 120 runs under load.)
		kv, _ := n[2].bucket()
		pfx := "m." + channel + "."
		names, lerr := n[2].listKeys(t.Context(), kv, pfx+"*", pfx, true, func(string) bool { return true })
		for _, w := range want {
			if slices.Contains(got, w) {
				continue
			}
			s := strings.Split(w, "/")[1]
			_, gerr := kv.Get(t.Context(), memberKey(channel, s))
			t.Logf("missing %s: listed again: %v (%d keys, error %v); its key read again: error %v", w, slices.Contains(names, s), len(names), lerr, gerr)
		}
		t.Fatalf("members after the storm of joins: %d, want %d\n got %v\nwant %v", len(got), len(want), got, want)
	}

	each(leaveOne)
	if got := vacated.Load(); got != 1 {
		t.Fatalf("storm of leaves: vacated %d times, want once", got)
	}
	wantStats(t, n[0], channel, 0, 0)
	wantMembers(t, n[0], channel)

	occupied.Store(0)
	vacated.Store(0)
	each(func(node, i int) error {
		for range 3 {
			if err := joinOne(node, i); err != nil {
				return err
			}
			if err := leaveOne(node, i); err != nil {
				return err
			}
		}
		return nil
	})
	if o, v := occupied.Load(), vacated.Load(); o == 0 || o != v {
		t.Fatalf("churn: occupied %d times, vacated %d times; want as many of each, at least once", o, v)
	}
	t.Logf("churn: the channel filled and emptied %d times", occupied.Load())
	wantStats(t, n[2], channel, 0, 0)
	wantMembers(t, n[1], channel)
}

// TestPresenceCountsCombined: changes of a channel's counts that queue while one is in flight
// are applied by one compare-and-set (one write of the count key, their sum), with occupied to
// one join only; a change whose ctx ends while it waits is withdrawn, not applied.
func TestPresenceCountsCombined(t *testing.T) {
	br := startBroker(t)
	n := presenceNodes(t, br.url(), 1, 0)[0]
	bucket, err := n.bucket()
	if err != nil {
		t.Fatal(err)
	}
	kv := &writesKV{KeyValue: bucket}
	const channel = "combined"
	// A change in flight: the channel's queue exists, as while its leader's compare-and-set runs.
	n.pr.countMu.Lock()
	n.pr.counts = map[string]*countQueue{channel: {}}
	q := n.pr.counts[channel]
	n.pr.countMu.Unlock()
	pending := func(want int) {
		t.Helper()
		transporttest.WaitFor(t, wait, func() error {
			n.pr.countMu.Lock()
			defer n.pr.countMu.Unlock()
			if len(q.pending) != want {
				return fmt.Errorf("%d changes waiting, want %d", len(q.pending), want)
			}
			return nil
		})
	}

	// Withdrawn: its ctx ends while it waits.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	_, _, err = n.addCounts(ctx, kv, channel, 1, 1)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a change whose ctx ended while it waited: %v, want context.DeadlineExceeded", err)
	}
	pending(0)

	type result struct {
		first bool
		err   error
	}
	results := make(chan result, 3)
	for range 3 {
		go func() {
			first, _, err := n.addCounts(t.Context(), kv, channel, 1, 1)
			results <- result{first, err}
		}()
	}
	pending(3)
	n.pr.countMu.Lock()
	n.pr.handOn(channel, q) // the change in flight is done
	n.pr.countMu.Unlock()
	firsts := 0
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.first {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("occupied (first) reported %d times, want once", firsts)
	}
	if got := kv.written(); !slices.Equal(got, []string{chanKey(channel) + "=3 3"}) {
		t.Fatalf("writes %q, want one of the count key with the sum of the 3 changes", got)
	}
	n.pr.countMu.Lock()
	left := len(n.pr.counts)
	n.pr.countMu.Unlock()
	if left != 0 {
		t.Fatalf("%d channel queues left after the changes were applied, want none", left)
	}
	wantStats(t, n, channel, 3, 3)
}

// writesKV records the writes made through it.
type writesKV struct {
	jetstream.KeyValue
	mu     sync.Mutex
	writes []string // key=value
}

func (w *writesKV) record(key string, value []byte) {
	w.mu.Lock()
	w.writes = append(w.writes, key+"="+string(value))
	w.mu.Unlock()
}

func (w *writesKV) written() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

func (w *writesKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	w.record(key, value)
	return w.KeyValue.Create(ctx, key, value, opts...)
}

func (w *writesKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	w.record(key, value)
	return w.KeyValue.Update(ctx, key, value, revision)
}

func (w *writesKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	w.record(key, nil)
	return w.KeyValue.Delete(ctx, key, opts...)
}
