package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// testHeartbeat is the presence heartbeat of the tests: short, so that reaping is quick.
const testHeartbeat = 200 * time.Millisecond

// presenceNodes starts n brokers sharing prefix on addr, with the test heartbeat; the prefix's
// keys (streams and presence) are deleted when the test ends.
func presenceNodes(t *testing.T, addr, prefix string, n int) []*redis.Broker {
	t.Helper()
	dropKeys(t, addr, prefix)
	dropPresenceKeys(t, addr, prefix)
	out := make([]*redis.Broker, n)
	for i := range out {
		out[i] = newNode(t, presenceConfig(addr, prefix))
	}
	return out
}

func presenceConfig(addr, prefix string) redis.Config {
	return redis.Config{Addr: addr, Prefix: prefix, Presence: transports.PresenceConfig{Heartbeat: testHeartbeat}}
}

// dropPresenceKeys deletes the prefix's presence keys when the test ends.
func dropPresenceKeys(t *testing.T, addr, prefix string) {
	t.Cleanup(func() { deletePresenceKeys(t, addr, prefix) })
}

// deletePresenceKeys deletes every presence key of prefix now, as a server that lost its data.
func deletePresenceKeys(t testing.TB, addr, prefix string) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pattern := range []string{"{" + prefix + ":presence:*", "{" + prefix + ":presence}:*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			if err := c.Del(ctx, iter.Val()).Err(); err != nil {
				t.Error(err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Error(err)
		}
	}
}

func member(node, user, session string) protocol.Member {
	return protocol.Member{User: user, Session: session, Node: node, Info: []byte(`{"name":"` + session + `"}`)}
}

func join(t testing.TB, b *redis.Broker, channel string, m protocol.Member) bool {
	t.Helper()
	occupied, err := b.Join(context.Background(), channel, m)
	if err != nil {
		t.Fatal(err)
	}
	return occupied
}

func leave(t testing.TB, b *redis.Broker, channel, session string) bool {
	t.Helper()
	vacated, err := b.Leave(context.Background(), channel, session)
	if err != nil {
		t.Fatal(err)
	}
	return vacated
}

// allMembers reads every page of channel, checking that pages are ordered and never repeat.
func allMembers(t testing.TB, b *redis.Broker, channel string, limit int) ([]protocol.Member, error) {
	return transporttest.AllMembers(context.Background(), b, channel, limit)
}

func sessions(ms []protocol.Member) []string { return transporttest.Sessions(ms) }

// wantMembers polls until channel's members are exactly want (session ids, sorted).
func wantMembers(t *testing.T, b *redis.Broker, channel string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	transporttest.WaitFor(t, 10*time.Second, func() error {
		ms, err := allMembers(t, b, channel, 7)
		if err != nil {
			return err
		}
		if got := sessions(ms); !slices.Equal(got, want) {
			return fmt.Errorf("members of %s: %v, want %v", channel, got, want)
		}
		return nil
	})
}

func TestPresenceThreeNodes(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 3)
	var want []string
	for i, b := range nodes {
		for j := range 3 {
			m := member(fmt.Sprintf("n%d", i), fmt.Sprintf("u%d", j), fmt.Sprintf("s%d-%d", i, j))
			occupied := join(t, b, "room", m)
			if occupied != (i == 0 && j == 0) {
				t.Errorf("join %s: occupied %v", m.Session, occupied)
			}
			want = append(want, m.Session)
		}
	}
	// Joining again replaces the entry, and is not an occupation.
	changed := member("n1", "u9", "s1-1")
	if join(t, nodes[1], "room", changed) {
		t.Error("joining a recorded session again reported occupied")
	}
	for _, b := range nodes {
		ms, err := allMembers(t, b, "room", 4)
		if err != nil {
			t.Fatal(err)
		}
		if got := sessions(ms); !slices.Equal(got, want) {
			t.Fatalf("members %v, want %v", got, want)
		}
		for _, m := range ms {
			wantM := member("n"+m.Session[1:2], "u"+m.Session[3:], m.Session)
			if m.Session == "s1-1" {
				wantM = changed
			}
			if m.User != wantM.User || m.Node != wantM.Node || string(m.Info) != string(wantM.Info) {
				t.Errorf("member %+v, want %+v", m, wantM)
			}
		}
		st, err := b.Stats(context.Background(), "room")
		if err != nil {
			t.Fatal(err)
		}
		if st != (protocol.PresenceStats{Connections: 9, Users: 4}) { // u0, u1, u2 and u9
			t.Errorf("stats %+v", st)
		}
	}
	if leave(t, nodes[2], "room", "nobody") {
		t.Error("leaving an unknown session reported vacated")
	}
	for i, s := range want {
		vacated := leave(t, nodes[i/3], "room", s)
		if vacated != (i == len(want)-1) {
			t.Errorf("leave %s: vacated %v", s, vacated)
		}
	}
	st, err := nodes[0].Stats(context.Background(), "room")
	if err != nil || st != (protocol.PresenceStats{}) {
		t.Errorf("stats of an empty channel %+v, %v", st, err)
	}
}

// Concurrent joins of an empty channel from three nodes report occupied once; concurrent leaves
// of its last members report vacated once.
func TestPresenceOnce(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 3)
	const rounds, perNode = 20, 5
	for r := range rounds {
		channel := fmt.Sprintf("race:%d", r)
		var occupied, vacated atomic.Int32
		var wg sync.WaitGroup
		for i, b := range nodes {
			for j := range perNode {
				wg.Go(func() {
					if join(t, b, channel, member(fmt.Sprint(i), "", fmt.Sprintf("s%d-%d", i, j))) {
						occupied.Add(1)
					}
				})
			}
		}
		wg.Wait()
		for i, b := range nodes {
			for j := range perNode {
				wg.Go(func() {
					if leave(t, b, channel, fmt.Sprintf("s%d-%d", i, j)) {
						vacated.Add(1)
					}
				})
			}
		}
		wg.Wait()
		if occupied.Load() != 1 || vacated.Load() != 1 {
			t.Fatalf("%s: occupied %d times, vacated %d times", channel, occupied.Load(), vacated.Load())
		}
	}
}

// Joins and leaves of one channel interleaved from three nodes: every occupation is matched by
// one vacation, and the channel ends empty and unlisted.
func TestPresenceChurn(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 3)
	var occupied, vacated atomic.Int32
	var wg sync.WaitGroup
	for i, b := range nodes {
		for j := range 4 {
			wg.Go(func() {
				s := fmt.Sprintf("s%d-%d", i, j)
				for range 30 {
					if join(t, b, "churn", member(fmt.Sprint(i), "u", s)) {
						occupied.Add(1)
					}
					if leave(t, b, "churn", s) {
						vacated.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if occupied.Load() == 0 || occupied.Load() != vacated.Load() {
		t.Errorf("occupied %d times, vacated %d times", occupied.Load(), vacated.Load())
	}
	st, err := nodes[0].Stats(context.Background(), "churn")
	if err != nil || st != (protocol.PresenceStats{}) {
		t.Errorf("stats %+v, %v", st, err)
	}
	cs, _, err := nodes[0].Channels(context.Background(), "churn", "", 10)
	if err != nil || len(cs) != 0 {
		t.Errorf("channels %+v, %v", cs, err)
	}
}

// joinMany joins n members s00000... of channel on b, from a few goroutines.
func joinMany(t testing.TB, b *redis.Broker, channel string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if _, err := b.Join(context.Background(), channel, member("n", fmt.Sprintf("u%d", i%100), fmt.Sprintf("s%05d", i))); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
}

func TestPresencePaging(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 2)
	const n = 10000
	joinMany(t, nodes[0], "big", n)
	for _, limit := range []int{1000, 333} {
		ms, err := allMembers(t, nodes[1], "big", limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != n {
			t.Fatalf("limit %d: %d members, want %d", limit, len(ms), n)
		}
		for i, m := range ms {
			if m.Session != fmt.Sprintf("s%05d", i) {
				t.Fatalf("limit %d: member %d is %s", limit, i, m.Session)
			}
		}
	}
	page, more, err := nodes[1].Members(context.Background(), "big", "s09998", 10)
	if err != nil || more || len(page) != 1 || page[0].Session != "s09999" {
		t.Errorf("last page %v more %v, %v", sessions(page), more, err)
	}
	page, more, err = nodes[1].Members(context.Background(), "big", "s09997", 2)
	if err != nil || more || len(page) != 2 {
		t.Errorf("page that ends at the last member: %v more %v, %v", sessions(page), more, err)
	}
	st, err := nodes[1].Stats(context.Background(), "big")
	if err != nil || st != (protocol.PresenceStats{Connections: n, Users: 100}) {
		t.Errorf("stats %+v, %v", st, err)
	}
}

// A user counts once however many connections and nodes; an anonymous connection is a user.
func TestPresenceUsers(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 2)
	stats := func() protocol.PresenceStats {
		t.Helper()
		st, err := nodes[1].Stats(context.Background(), "chat")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	join(t, nodes[0], "chat", member("a", "alice", "a1"))
	join(t, nodes[0], "chat", member("a", "alice", "a2")) // a second tab
	join(t, nodes[1], "chat", member("b", "alice", "b1")) // and on another node
	join(t, nodes[1], "chat", member("b", "", "b2"))
	join(t, nodes[1], "chat", member("b", "", "b3"))
	if st := stats(); st != (protocol.PresenceStats{Connections: 5, Users: 3}) {
		t.Errorf("stats %+v, want 5 connections of alice and 2 anonymous users", st)
	}
	join(t, nodes[1], "chat", member("b", "bob", "b2")) // b2 authenticated
	if st := stats(); st != (protocol.PresenceStats{Connections: 5, Users: 3}) {
		t.Errorf("stats %+v after b2 became bob", st)
	}
	leave(t, nodes[0], "chat", "a1")
	leave(t, nodes[1], "chat", "b1")
	if st := stats(); st != (protocol.PresenceStats{Connections: 3, Users: 3}) {
		t.Errorf("stats %+v after two of alice's tabs left", st)
	}
	leave(t, nodes[0], "chat", "a2")
	if st := stats(); st != (protocol.PresenceStats{Connections: 2, Users: 2}) {
		t.Errorf("stats %+v after alice left", st)
	}
}

func TestPresenceChannels(t *testing.T) {
	addr := anyRedis(t)
	nodes := presenceNodes(t, addr, transporttest.Prefix(t), 2)
	var want []string
	wantStats := map[string]protocol.PresenceStats{}
	for i := range 25 {
		c := fmt.Sprintf("room:%02d", i)
		want = append(want, c)
		join(t, nodes[i%2], c, member("n", "u", "s1"))
		wantStats[c] = protocol.PresenceStats{Connections: 1, Users: 1}
		if i%3 == 0 {
			wantStats[c] = protocol.PresenceStats{Connections: 3, Users: 2}
			join(t, nodes[1], c, member("n", "u", "s2"))
			join(t, nodes[1], c, member("n", "", "s3"))
		}
	}
	join(t, nodes[0], "lobby", member("n", "u", "s1"))
	join(t, nodes[0], "room", member("n", "u", "s1"))
	join(t, nodes[0], "rooms", member("n", "u", "s1"))
	join(t, nodes[0], "vacated:1", member("n", "u", "s1"))
	leave(t, nodes[1], "vacated:1", "s1")

	var got []string
	after := ""
	for pages := 0; ; pages++ {
		cs, more, err := nodes[1].Channels(context.Background(), "room:", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.PresenceStats != wantStats[c.Channel] {
				t.Errorf("%s: stats %+v, want %+v", c.Channel, c.PresenceStats, wantStats[c.Channel])
			}
			got = append(got, c.Channel)
			after = c.Channel
		}
		if !more {
			if pages != 2 {
				t.Errorf("%d pages of 10 for 25 channels", pages+1)
			}
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("channels %v, want %v", got, want)
	}
	all, more, err := nodes[0].Channels(context.Background(), "", "", 100)
	if err != nil || more || len(all) != 28 {
		t.Errorf("all channels: %d, more %v, %v", len(all), more, err)
	}
	none, more, err := nodes[0].Channels(context.Background(), "vacated", "", 10)
	if err != nil || more || len(none) != 0 {
		t.Errorf("vacated channels listed: %v, more %v, %v", none, more, err)
	}
}

// reaps records the OnReap calls of the nodes given to it.
type reaps struct {
	mu    sync.Mutex
	calls map[string]int // "channel session vacated" → calls, over every node
	nodes map[string]int // calls per node
}

func (r *reaps) watch(name string, b *redis.Broker) {
	b.OnReap(func(channel string, m protocol.Member, vacated bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls[fmt.Sprintf("%s %s %v", channel, m.Session, vacated)]++
		r.nodes[name]++
	})
}

func (r *reaps) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps(r.calls)
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// noReapPending polls until no lease of prefix is expired or being reaped.
func noReapPending(t *testing.T, addr, prefix string) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		n, err := c.ZCard(context.Background(), "{"+prefix+":presence}:reaping").Result()
		if err != nil || n != 0 {
			return fmt.Errorf("%d leases being reaped, %v", n, err)
		}
		return nil
	})
}

// A node that stops renewing its lease (closed without leaving, as if killed) loses its
// members; each of them is reported once, on one of the surviving nodes, with vacated right.
func TestPresenceReap(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	dropPresenceKeys(t, addr, prefix)
	r := &reaps{calls: map[string]int{}, nodes: map[string]int{}}
	var nodes []*redis.Broker
	for i := range 3 {
		b, err := redis.New(presenceConfig(addr, prefix), testLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		if i < 2 {
			r.watch(fmt.Sprint(i), b)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, b)
	}
	a, dead := nodes[0], nodes[2]
	join(t, a, "shared", member("a", "alice", "a1"))
	want := map[string]int{}
	for i := range 50 {
		s := fmt.Sprintf("d%02d", i)
		join(t, dead, "shared", member("d", "bob", s))
		want["shared "+s+" false"] = 1
	}
	join(t, dead, "alone", member("d", "bob", "d1"))
	join(t, dead, "alone", member("d", "", "d2"))
	wantMembers(t, a, "alone", []string{"d1", "d2"})

	killed := time.Now()
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, a, "shared", []string{"a1"})
	wantMembers(t, a, "alone", nil)
	// Not asserted (the machine may be loaded): the bound is 2 heartbeats + 1 after the last
	// renewal, so at most 600 ms here.
	t.Logf("members reaped %v after the node was closed", time.Since(killed).Round(10*time.Millisecond))
	noReapPending(t, addr, prefix)

	got := r.snapshot()
	alone := got["alone d1 true"] + got["alone d2 true"]
	if got["alone d1 true"]+got["alone d1 false"] != 1 || got["alone d2 true"]+got["alone d2 false"] != 1 || alone != 1 {
		t.Errorf("reaps of channel alone: %v, want d1 and d2 once, one of them vacating", got)
	}
	delete(got, "alone d1 true")
	delete(got, "alone d1 false")
	delete(got, "alone d2 true")
	delete(got, "alone d2 false")
	if !equalMaps(got, want) {
		t.Errorf("reaps of channel shared: %v, want each of the dead node's members once, not vacating", got)
	}
	st, err := a.Stats(context.Background(), "shared")
	if err != nil || st != (protocol.PresenceStats{Connections: 1, Users: 1}) {
		t.Errorf("stats after the reap %+v, %v", st, err)
	}
	cs, _, err := a.Channels(context.Background(), "", "", 10)
	if err != nil || len(cs) != 1 || cs[0].Channel != "shared" {
		t.Errorf("channels after the reap %+v, %v", cs, err)
	}
	// The survivor keeps its members: its lease is renewed.
	if ms, err := allMembers(t, a, "shared", 10); err != nil || len(ms) != 1 {
		t.Errorf("survivor's members %v, %v", sessions(ms), err)
	}
}

func equalMaps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// When the server loses the presence keys (a restart without persistence, here the keys
// deleted), each node records its members again from what it joined, with no ghost.
func TestPresenceRerecordLostKeys(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	nodes := presenceNodes(t, addr, prefix, 2)
	join(t, nodes[0], "room", member("a", "alice", "a1"))
	join(t, nodes[0], "room", member("a", "alice", "a2"))
	join(t, nodes[1], "room", member("b", "bob", "b1"))
	join(t, nodes[1], "other", member("b", "bob", "b2"))
	join(t, nodes[1], "gone", member("b", "bob", "b3"))
	leave(t, nodes[1], "gone", "b3")

	deletePresenceKeys(t, addr, prefix)
	wantMembers(t, nodes[0], "room", []string{"a1", "a2", "b1"})
	wantMembers(t, nodes[0], "other", []string{"b2"})
	wantMembers(t, nodes[0], "gone", nil)
	transporttest.WaitFor(t, 10*time.Second, func() error {
		st, err := nodes[1].Stats(context.Background(), "room")
		if err != nil || st != (protocol.PresenceStats{Connections: 3, Users: 2}) {
			return fmt.Errorf("stats %+v, %v", st, err)
		}
		cs, _, err := nodes[1].Channels(context.Background(), "", "", 10)
		if err != nil || len(cs) != 2 {
			return fmt.Errorf("channels %+v, %v", cs, err)
		}
		return nil
	})
	// Leaving after the re-recording removes the member for good.
	if !leave(t, nodes[1], "other", "b2") {
		t.Error("leaving the last re-recorded member did not vacate")
	}
}

// TestPresenceFailedLeaveRemovedLater (review 13, finding 2): a Leave that fails (here its ctx is
// done before the round trip) has taken the member out of the node's record: the next renewal
// removes it from Redis, and a re-recording (keys lost) does not bring it back; a member whose
// failed Leave is followed by a Join of the same session stays.
func TestPresenceFailedLeaveRemovedLater(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	nodes := presenceNodes(t, addr, prefix, 2)
	for _, s := range []string{"a1", "a2", "a3"} {
		join(t, nodes[0], "room", member("a", "alice", s))
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, s := range []string{"a1", "a3"} {
		if _, err := nodes[0].Leave(done, "room", s); err == nil {
			t.Fatalf("Leave %s with a done ctx succeeded", s)
		}
	}
	join(t, nodes[0], "room", member("a", "alice", "a3")) // joined again: not removed
	wantMembers(t, nodes[1], "room", []string{"a2", "a3"})
	deletePresenceKeys(t, addr, prefix)
	wantMembers(t, nodes[1], "room", []string{"a2", "a3"}) // recorded again, without a1
}

// A node whose lease ran out while it lived (its renewal paused, as by a network cut) is reaped
// by another node, which reports each of its members once; when the node renews again it finds
// its lease lost and records its members again.
func TestPresenceRerecordAfterReap(t *testing.T) {
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	dropKeys(t, addr, prefix)
	dropPresenceKeys(t, addr, prefix)
	r := &reaps{calls: map[string]int{}, nodes: map[string]int{}}
	cut := newNode(t, presenceConfig(addr, prefix))
	reaper, err := redis.New(presenceConfig(addr, prefix), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reaper.Close() })
	r.watch("reaper", reaper)
	if err := reaper.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		s := fmt.Sprintf("c%02d", i)
		join(t, cut, "room", member("c", "carol", s))
		want = append(want, s)
	}
	redis.PauseRenewal(cut, true)
	wantMembers(t, reaper, "room", nil)
	noReapPending(t, addr, prefix)
	got := r.snapshot()
	vacated := 0
	for k := range got {
		if strings.HasSuffix(k, " true") {
			vacated++
		}
	}
	if len(got) != 20 || vacated != 1 {
		t.Errorf("reaps %v, want each member once, the last one vacating", got)
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("reap %s reported %d times", k, n)
		}
	}
	redis.PauseRenewal(cut, false)
	wantMembers(t, reaper, "room", want)
	if n := len(r.snapshot()); n != 20 {
		t.Errorf("%d reaps after the node came back, want 20", n)
	}
	st, err := reaper.Stats(context.Background(), "room")
	if err != nil || st != (protocol.PresenceStats{Connections: 20, Users: 1}) {
		t.Errorf("stats %+v, %v", st, err)
	}
}

// A restart of a Redis without persistence: the nodes record their members again.
func TestPresenceServerRestart(t *testing.T) {
	srv := startServer(t)
	prefix := transporttest.Prefix(t)
	nodes := presenceNodes(t, srv.addr, prefix, 2)
	join(t, nodes[0], "room", member("a", "alice", "a1"))
	join(t, nodes[1], "room", member("b", "bob", "b1"))
	srv.restart(t)
	wantMembers(t, nodes[1], "room", []string{"a1", "b1"})
	// The scripts are loaded again as needed: joins and leaves work.
	transporttest.WaitFor(t, 10*time.Second, func() error {
		_, err := nodes[0].Join(context.Background(), "room", member("a", "alice", "a2"))
		return err
	})
	if leave(t, nodes[0], "room", "a1") {
		t.Error("vacated with members left")
	}
	wantMembers(t, nodes[1], "room", []string{"a2", "b1"})
}

func TestPresenceNotStartedClosed(t *testing.T) {
	addr := anyRedis(t)
	b, err := redis.New(presenceConfig(addr, transporttest.Prefix(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := func(want error) {
		t.Helper()
		ctx := context.Background()
		_, err1 := b.Join(ctx, "c", member("n", "u", "s"))
		_, err2 := b.Leave(ctx, "c", "s")
		_, _, err3 := b.Members(ctx, "c", "", 10)
		_, err4 := b.Stats(ctx, "c")
		_, _, err5 := b.Channels(ctx, "", "", 10)
		for i, err := range []error{err1, err2, err3, err4, err5} {
			if !errors.Is(err, want) {
				t.Errorf("call %d: %v, want %v", i+1, err, want)
			}
		}
	}
	calls(transports.ErrNotStarted)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	calls(transports.ErrClosed)
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Close stops the presence goroutine (renewal and reaping) and leaves no goroutine behind.
func TestPresenceCloseLeak(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	addr := anyRedis(t)
	prefix := transporttest.Prefix(t)
	deleteAfter := func() { deletePresenceKeys(t, addr, prefix) }
	defer deleteAfter()
	b, err := redis.New(presenceConfig(addr, prefix), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.OnReap(func(string, protocol.Member, bool) {})
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	join(t, b, "room", member("n", "u", "s1"))
	if _, _, err := b.Members(context.Background(), "room", "", 10); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPresenceMembersPage reads a page of 100 members from the middle of a channel of
// 1,000 and of 10,000 members: a page's cost does not grow with the channel.
func BenchmarkPresenceMembersPage(b *testing.B) {
	addr := machineAddr
	if !reachable(addr) {
		b.Skip("no Redis on " + addr)
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			prefix := transporttest.Prefix(b)
			defer deletePresenceKeys(b, addr, prefix)
			node, err := redis.New(presenceConfig(addr, prefix), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer node.Close()
			if err := node.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			joinMany(b, node, "big", n)
			after := fmt.Sprintf("s%05d", n/2)
			b.ResetTimer()
			for b.Loop() {
				ms, _, err := node.Members(context.Background(), "big", after, 100)
				if err != nil || len(ms) != 100 {
					b.Fatal(len(ms), err)
				}
			}
		})
	}
}

// BenchmarkPresenceJoin measures a Join (one round trip) into a channel of growing size.
func BenchmarkPresenceJoin(b *testing.B) {
	addr := machineAddr
	if !reachable(addr) {
		b.Skip("no Redis on " + addr)
	}
	prefix := transporttest.Prefix(b)
	defer deletePresenceKeys(b, addr, prefix)
	node, err := redis.New(presenceConfig(addr, prefix), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer node.Close()
	if err := node.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := node.Join(context.Background(), "big", member("n", fmt.Sprintf("u%d", i%100), fmt.Sprintf("s%08d", i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// presenceNodeMaker returns the presence suite's node constructor on addr: nodes not started,
// each prefix's keys deleted when its test ends.
func presenceNodeMaker(addr string) transporttest.NewPresenceNode {
	var mu sync.Mutex
	seen := map[string]bool{}
	return func(t *testing.T, prefix, _ string, heartbeat time.Duration) transports.Broker {
		mu.Lock()
		if !seen[prefix] {
			seen[prefix] = true
			dropKeys(t, addr, prefix)
			dropPresenceKeys(t, addr, prefix)
		}
		mu.Unlock()
		b, err := redis.New(redis.Config{Addr: addr, Prefix: prefix, Presence: transports.PresenceConfig{Heartbeat: heartbeat}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestPresenceConformance runs the presence conformance suite on the machine's Redis, and on a
// redis-server of its own that it restarts (without persistence: the nodes record again).
func TestPresenceConformance(t *testing.T) {
	transporttest.RunPresence(t, transporttest.PresenceFeatures{}, presenceNodeMaker(machineRedis(t)))
}

func TestPresenceConformanceOwnServer(t *testing.T) {
	srv := startServer(t)
	transporttest.RunPresence(t, transporttest.PresenceFeatures{RestartBroker: srv.restart}, presenceNodeMaker(srv.addr))
}
