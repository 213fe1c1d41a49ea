package nats_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// presenceNode makes a node (not started) of the presence cluster of prefix on the server at url.
// Like a gateway node with presence channels it sets OnReap before Start, so that it takes part
// in presence from Start on (the suite may set its own OnReap after).
func presenceNode(t testing.TB, url, prefix, id string, heartbeat time.Duration) *nats.Broker {
	t.Helper()
	b, err := nats.New(nats.Config{
		URL:             url,
		Prefix:          prefix,
		Name:            id,
		ReconnectWait:   50 * time.Millisecond,
		ReconnectJitter: 50 * time.Millisecond,
		Presence:        transports.PresenceConfig{Heartbeat: heartbeat},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.OnReap(func(string, protocol.Member, bool) {})
	return b
}

// TestPresenceConformance runs the presence suite on an in-process nats-server, which the
// restart test stops and starts again on the same port: core NATS keeps nothing, the nodes hold
// every member and find each other again. Kill is Close: a node sends nothing when it closes,
// exactly as when it is SIGKILLed.
func TestPresenceConformance(t *testing.T) {
	srv := startServer(t, 0)
	port := srv.Addr().(*net.TCPAddr).Port
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.RunPresence(t, transporttest.PresenceFeatures{
		Kill: func(t *testing.T, node transports.Broker) { _ = node.Close() },
		RestartBroker: func(t *testing.T) {
			stopServer(srv)
			srv = startServer(t, port)
		},
	}, func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		return presenceNode(t, url, prefix, nodeID, heartbeat)
	})
}

// reapCounter counts the OnReap calls of the nodes of a test.
type reapCounter struct {
	mu      sync.Mutex
	calls   map[string]int // channel/session -> calls
	vacated map[string]int // channel -> calls with vacated
}

func newReapCounter() *reapCounter {
	return &reapCounter{calls: map[string]int{}, vacated: map[string]int{}}
}

func (r *reapCounter) fn(channel string, m protocol.Member, vacated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[channel+"/"+m.Session]++
	if vacated {
		r.vacated[channel]++
	}
}

func (r *reapCounter) check(calls, vacated map[string]int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !maps.Equal(r.calls, calls) {
		return fmt.Errorf("OnReap calls %v, want %v", r.calls, calls)
	}
	if !maps.Equal(r.vacated, vacated) {
		return fmt.Errorf("OnReap vacated %v, want %v", r.vacated, vacated)
	}
	return nil
}

// startPresenceNode starts a presence node whose OnReap counts into r.
func startPresenceNode(t *testing.T, url, prefix, id string, r *reapCounter) *nats.Broker {
	t.Helper()
	b := presenceNode(t, url, prefix, id, presenceHB)
	b.OnReap(r.fn)
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return b
}

const presenceHB = 250 * time.Millisecond

// wantMembers waits until channel's members read from p are exactly want.
func wantMembers(t *testing.T, p transports.Presence, channel string, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	transporttest.WaitFor(t, 10*time.Second, func() error {
		ms, err := transporttest.AllMembers(t.Context(), p, channel, 3)
		if err != nil {
			return err
		}
		if got := transporttest.Sessions(ms); !slices.Equal(got, want) {
			return fmt.Errorf("members of %s: %v, want %v", channel, got, want)
		}
		return nil
	})
}

func mustJoin(t *testing.T, b *nats.Broker, channel, session string) bool {
	t.Helper()
	occupied, err := b.Join(t.Context(), channel, protocol.Member{User: "u-" + session, Session: session, Node: b.NodeID()})
	if err != nil {
		t.Fatalf("Join %s %s: %v", channel, session, err)
	}
	return occupied
}

// TestPresenceOwnerMoves: a node that joins the cluster takes over the channels it wins and
// one that dies hands them back, members listed once throughout; the dead node's members are
// reaped once each, also in the channels it owned itself (from their backup copies).
func TestPresenceOwnerMoves(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	var shared, solo []string
	for i := range 20 {
		shared = append(shared, fmt.Sprintf("shared-%02d", i))
		solo = append(solo, fmt.Sprintf("solo-%02d", i))
	}
	for _, ch := range shared {
		mustJoin(t, a, ch, "a@"+ch)
		mustJoin(t, b, ch, "b@"+ch)
	}
	owned := func(chs []string) (n int) {
		for _, ch := range chs {
			if nats.Owner([]string{"a", "b", "c"}, ch) == "c" {
				n++
			}
		}
		return n
	}
	if owned(shared) == 0 || owned(solo) == 0 || owned(solo) == len(solo) {
		t.Fatalf("the test needs channels that c owns and others: c owns %d shared and %d solo", owned(shared), owned(solo))
	}

	c := startPresenceNode(t, url, prefix, "c", reaps) // takes over the channels it wins
	for _, ch := range shared {
		if mustJoin(t, c, ch, "c@"+ch) {
			t.Fatalf("a join of %s, which had members, reported occupied after the owner moved", ch)
		}
	}
	for _, ch := range solo {
		if !mustJoin(t, c, ch, "c@"+ch) {
			t.Fatalf("the first join of %s did not report occupied", ch)
		}
	}
	for _, n := range []*nats.Broker{a, b, c} {
		for _, ch := range shared {
			wantMembers(t, n, ch, "a@"+ch, "b@"+ch, "c@"+ch)
		}
		for _, ch := range solo {
			wantMembers(t, n, ch, "c@"+ch)
		}
	}

	_ = c.Close() // as SIGKILLed: it tells no one
	wantCalls, wantVacated := map[string]int{}, map[string]int{}
	for _, ch := range shared {
		wantCalls[ch+"/c@"+ch] = 1
	}
	for _, ch := range solo {
		wantCalls[ch+"/c@"+ch] = 1
		wantVacated[ch] = 1
	}
	transporttest.WaitFor(t, 10*time.Second, func() error { return reaps.check(wantCalls, wantVacated) })
	for _, n := range []*nats.Broker{a, b} {
		for _, ch := range shared {
			wantMembers(t, n, ch, "a@"+ch, "b@"+ch)
		}
		for _, ch := range solo {
			wantMembers(t, n, ch)
		}
	}
	time.Sleep(3 * presenceHB) // a wait for what must not happen: a second reap
	if err := reaps.check(wantCalls, wantVacated); err != nil {
		t.Fatal(err)
	}
	if st, err := b.Stats(t.Context(), shared[0]); err != nil || st != (protocol.PresenceStats{Connections: 2, Users: 2}) {
		t.Fatalf("stats after the reaping: %+v, %v", st, err)
	}
}

// TestPresenceNodeRestart: a node that comes back with the same id is another incarnation: the
// members of the one that died are reaped once, those of the new one listed.
func TestPresenceNodeRestart(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	old := startPresenceNode(t, url, prefix, "b", reaps)
	channels := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	for _, ch := range channels {
		mustJoin(t, a, ch, "a1")
		mustJoin(t, old, ch, "b-old")
	}
	_ = old.Close()
	b := startPresenceNode(t, url, prefix, "b", reaps) // at once: before the old one is found dead
	for _, ch := range channels {
		mustJoin(t, b, ch, "b-new")
	}
	want := map[string]int{}
	for _, ch := range channels {
		want[ch+"/b-old"] = 1
	}
	transporttest.WaitFor(t, 10*time.Second, func() error { return reaps.check(want, map[string]int{}) })
	for _, ch := range channels {
		wantMembers(t, a, ch, "a1", "b-new")
		wantMembers(t, b, ch, "a1", "b-new")
	}
}

// TestPresenceAsker: a broker that never joined a member nor set OnReap (a service's) asks the
// owners without taking part; its first Join makes it take part.
func TestPresenceAsker(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	mustJoin(t, a, "room", "a1")
	svc, err := nats.New(nats.Config{URL: url, Prefix: prefix, Name: "service",
		Presence: transports.PresenceConfig{Heartbeat: presenceHB}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantMembers(t, svc, "room", "a1")
	if st, err := svc.Stats(t.Context(), "room"); err != nil || st != (protocol.PresenceStats{Connections: 1, Users: 1}) {
		t.Fatalf("stats from the service: %+v, %v", st, err)
	}
	if chs, more, err := svc.Channels(t.Context(), "", "", 10); err != nil || more || len(chs) != 1 || chs[0].Channel != "room" {
		t.Fatalf("channels from the service: %v, %v, %v", chs, more, err)
	}
	late := presenceNode(t, url, prefix, "late", presenceHB)
	late.OnReap(nil) // takes no part until it joins
	if err := late.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustJoin(t, late, "room", "l1")
	wantMembers(t, a, "room", "a1", "l1")
	_ = svc.Close() // a service that goes away takes nothing with it
	_ = late.Close()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		return reaps.check(map[string]int{"room/l1": 1}, map[string]int{})
	})
	wantMembers(t, a, "room", "a1")
}

// BenchmarkPresence measures, between two nodes on an in-process nats-server, what a node asks
// of the owner of a channel that is the other node: a page of 100 members from the middle of a
// channel of 1,000 and of 10,000 members, Stats, a Join, and Channels (a scatter to both nodes).
func BenchmarkPresence(b *testing.B) {
	srv := startServer(b, 0)
	defer stopServer(srv)
	url, prefix := serverURL(srv), transporttest.Prefix(b)
	nodes := map[string]*nats.Broker{}
	for _, id := range []string{"x", "y"} {
		n := presenceNode(b, url, prefix, id, transports.DefaultPresenceHeartbeat)
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		nodes[id] = n
	}
	// asker is the node that does not own ch: each call is a request to the other.
	asker := func(ch string) (owner, asker *nats.Broker) {
		if nats.Owner([]string{"x", "y"}, ch) == "x" {
			return nodes["x"], nodes["y"]
		}
		return nodes["y"], nodes["x"]
	}
	ctx := context.Background()
	for _, size := range []int{1000, 10000} {
		ch := fmt.Sprintf("big%d", size)
		owner, ask := asker(ch)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < size; i += 16 {
					s := fmt.Sprintf("s%06d", i)
					if _, err := owner.Join(ctx, ch, protocol.Member{User: "u" + s, Session: s, Node: "x"}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		after := fmt.Sprintf("s%06d", size/2)
		b.Run(fmt.Sprintf("members_page/members=%d", size), func(b *testing.B) {
			for b.Loop() {
				if ms, _, err := ask.Members(ctx, ch, after, 100); err != nil || len(ms) != 100 {
					b.Fatal(len(ms), err)
				}
			}
		})
		b.Run(fmt.Sprintf("stats/members=%d", size), func(b *testing.B) {
			for b.Loop() {
				if st, err := ask.Stats(ctx, ch); err != nil || st.Connections != size {
					b.Fatal(st, err)
				}
			}
		})
	}
	b.Run("join", func(b *testing.B) {
		_, ask := asker("joins")
		i := 0
		for b.Loop() {
			s := fmt.Sprintf("j%08d", i)
			if _, err := ask.Join(ctx, "joins", protocol.Member{User: "u", Session: s, Node: ask.NodeID()}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("channels", func(b *testing.B) {
		for b.Loop() {
			if chs, _, err := nodes["x"].Channels(ctx, "big", "", 100); err != nil || len(chs) != 2 {
				b.Fatal(chs, err)
			}
		}
	})
}

// TestPresenceLostLeave: a leave whose request to the owner was lost (the Leave failed) leaves
// no ghost: the node pushes its members of the channel to the owner, which drops the entry.
func TestPresenceLostLeave(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	for _, ch := range []string{"l0", "l1", "l2", "l3"} { // some owned by a, some by b
		mustJoin(t, b, ch, "b1")
		mustJoin(t, b, ch, "b2")
		mustJoin(t, a, ch, "a1")
		b.LoseLeave(ch, "b1")
		wantMembers(t, a, ch, "a1", "b2")
		wantMembers(t, b, ch, "a1", "b2")
	}
	if err := reaps.check(map[string]int{}, map[string]int{}); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceLeaveAfterDeadline: a Leave whose ctx has ended may fail, but the member leaves
// all the same (the Presence contract: a failed Leave took it out of the node's own members, and
// the broker drops it later), whichever node owns the channel.
func TestPresenceLeaveAfterDeadline(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, ch := range []string{"d0", "d1", "d2", "d3"} { // some owned by a, some by b
		mustJoin(t, b, ch, "b1")
		mustJoin(t, b, ch, "b2")
		_, _ = b.Leave(done, ch, "b1")
		wantMembers(t, a, ch, "b2")
		wantMembers(t, b, ch, "b2")
	}
}

// TestPresenceConfigFrom: a gateway node's broker takes its presence heartbeat and its node id
// from the node's configuration.
func TestPresenceConfigFrom(t *testing.T) {
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=0123456789abcdef", "GATEWAY_BROKER=nats",
		"GATEWAY_NODE_ID=n7", "GATEWAY_PRESENCE_HEARTBEAT=750ms"})
	if err != nil {
		t.Fatal(err)
	}
	c := nats.ConfigFrom(cfg)
	if c.Name != "n7" || c.Presence.Heartbeat != 750*time.Millisecond {
		t.Fatalf("ConfigFrom: name %q, presence heartbeat %v", c.Name, c.Presence.Heartbeat)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceOwnerMovesAsNodeDies: a node dies and, before it is found dead, another comes and
// takes over channels where the dead one had members: they are reaped once all the same (the
// owner before hands copies of them to the new owner).
func TestPresenceOwnerMovesAsNodeDies(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	x := startPresenceNode(t, url, prefix, "x", reaps)
	d := startPresenceNode(t, url, prefix, "d", reaps)
	var chs []string
	moved := 0
	for i := range 24 {
		ch := fmt.Sprintf("m%02d", i)
		chs = append(chs, ch)
		if nats.Owner([]string{"x", "d"}, ch) == "x" && nats.Owner([]string{"x", "d", "n"}, ch) == "n" {
			moved++
		}
		mustJoin(t, x, ch, "x@"+ch)
		mustJoin(t, d, ch, "d@"+ch)
	}
	if moved == 0 {
		t.Fatal("no channel moves from x to n: the test needs some")
	}
	_ = d.Close()
	n := startPresenceNode(t, url, prefix, "n", reaps) // before d is found dead
	want := map[string]int{}
	for _, ch := range chs {
		want[ch+"/d@"+ch] = 1
	}
	transporttest.WaitFor(t, 10*time.Second, func() error { return reaps.check(want, map[string]int{}) })
	for _, ch := range chs {
		wantMembers(t, n, ch, "x@"+ch)
	}
	time.Sleep(3 * presenceHB) // a wait for what must not happen: a second reap
	if err := reaps.check(want, map[string]int{}); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceLargeInfo: members whose info is large (100 KB each, 3 MB in all, beyond NATS's
// 1 MB payload) move to a new owner in several sync messages and are listed in pages cut to what
// a message carries.
func TestPresenceLargeInfo(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	ch := ""
	for i := 0; ch == ""; i++ {
		if c := fmt.Sprintf("big%d", i); nats.Owner([]string{"a", "b"}, c) == "b" {
			ch = c
		}
	}
	a := startPresenceNode(t, url, prefix, "a", reaps)
	info := json.RawMessage(`{"bio":"` + strings.Repeat("x", 100<<10) + `"}`)
	var want []string
	for i := range 30 {
		s := fmt.Sprintf("s%02d", i)
		if _, err := a.Join(t.Context(), ch, protocol.Member{User: "u", Session: s, Node: "a", Info: info}); err != nil {
			t.Fatal(err)
		}
		want = append(want, s)
	}
	b := startPresenceNode(t, url, prefix, "b", reaps) // owns ch: a syncs the 30 members to it
	for _, n := range []*nats.Broker{a, b} {
		transporttest.WaitFor(t, 10*time.Second, func() error {
			ms, err := transporttest.AllMembers(t.Context(), n, ch, 100)
			if err != nil {
				return err
			}
			if got := transporttest.Sessions(ms); !slices.Equal(got, want) {
				return fmt.Errorf("members %v, want %v", got, want)
			}
			for _, m := range ms {
				if string(m.Info) != string(info) {
					return fmt.Errorf("member %s: info of %d bytes", m.Session, len(m.Info))
				}
			}
			return nil
		})
	}
}

// wantView waits until the ids of n's view are ids.
func wantView(t *testing.T, n *nats.Broker, ids ...string) {
	t.Helper()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if v := n.ViewIDs(); !slices.Equal(v, ids) {
			return fmt.Errorf("view of %s: %v, want %v", n.NodeID(), v, ids)
		}
		return nil
	})
}

// TestPresenceStalledOwnerResyncs: an owner that stalled long enough for the others to drop it,
// but dropped no one itself (it heard their heartbeats), syncs its channels again when they take
// it back: the joins and leaves made elsewhere meanwhile are in its list, not the list from
// before the stall.
func TestPresenceStalledOwnerResyncs(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	ch := ""
	for i := 0; ch == ""; i++ {
		if c := fmt.Sprintf("st-%d", i); nats.Owner([]string{"a", "b"}, c) == "b" {
			ch = c
		}
	}
	wantView(t, a, "a", "b")
	mustJoin(t, a, ch, "a1")
	mustJoin(t, a, ch, "a2")
	wantMembers(t, b, ch, "a1", "a2")

	resume := b.Stall()
	wantView(t, a, "a") // a dropped b and owns ch now
	if _, err := a.Leave(t.Context(), ch, "a1"); err != nil {
		resume()
		t.Fatal(err)
	}
	if _, err := a.Join(t.Context(), ch, protocol.Member{User: "u-a3", Session: "a3", Node: "a"}); err != nil {
		resume()
		t.Fatal(err)
	}
	resume()
	wantView(t, a, "a", "b") // b owns ch again
	wantView(t, b, "a", "b") // b never dropped a
	wantMembers(t, b, ch, "a2", "a3")
	wantMembers(t, a, ch, "a2", "a3")
}

// fakeWire is what TestPresenceSyncAskedAgainOnlyWhenStalled reads and writes as a peer.
type fakeWire struct {
	Op   string `json:"op"`
	From struct {
		ID  string `json:"id"`
		Inc string `json:"inc"`
	} `json:"from"`
	Epoch uint64 `json:"epoch,omitempty"`
}

// TestPresenceSyncAskedAgainOnlyWhenStalled: a node waiting for a peer's sync asks again only
// when nothing of that sync came since it last asked: a large sync under way is not asked for
// again (and sent again) every half heartbeat. The peer is the test, over its own connection.
func TestPresenceSyncAskedAgainOnlyWhenStalled(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix := serverURL(srv), transporttest.Prefix(t)
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var z fakeWire
	z.From.ID, z.From.Inc = "z", "zinc"
	syncs, beats := make(chan fakeWire, 100), make(chan struct{}, 100)
	read := func(fn func(fakeWire)) natsgo.MsgHandler {
		return func(m *natsgo.Msg) {
			var w fakeWire
			if json.Unmarshal(m.Data, &w) == nil {
				fn(w)
			}
		}
	}
	if _, err := nc.Subscribe(prefix+".presence.node.z.zinc", read(func(w fakeWire) {
		if w.Op == "sync" {
			syncs <- w
		}
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(prefix+".presence.hb", read(func(w fakeWire) {
		if w.From.ID == "b" {
			select {
			case beats <- struct{}{}:
			default:
			}
		}
	})); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const hb = time.Second
	b := presenceNode(t, url, prefix, "b", hb)
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// z beats every quarter heartbeat and, while feeding holds an epoch, sends b a part of its
	// sync of that epoch every 50 ms (never "done").
	var feeding atomic.Uint64
	send := func(w fakeWire, subject string) {
		data, _ := json.Marshal(w)
		_ = nc.Publish(subject, data)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			if i%5 == 0 {
				w := z
				w.Op = "hb"
				send(w, prefix+".presence.hb")
			}
			if e := feeding.Load(); e > 0 {
				w := z
				w.Op, w.Epoch = "rec", e
				send(w, prefix+".presence.node.b."+b.Incarnation())
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })

	next := func(c <-chan fakeWire) fakeWire {
		t.Helper()
		select {
		case w := <-c:
			return w
		case <-time.After(10 * time.Second):
			t.Fatal("b sent no sync request in 10s")
			return fakeWire{}
		}
	}
	first := next(syncs)
	feeding.Store(first.Epoch)
	// While z's sync comes, b does not ask again: 4 of its beats (2 heartbeats) after 2 to
	// begin with (an ask before the first part came is right).
	for n := 0; n < 6; {
		select {
		case <-beats:
			n++
		case w := <-syncs:
			if w.Epoch == first.Epoch && n >= 2 {
				t.Fatalf("b asked z again for the sync of epoch %d while it came (after %d beats)", w.Epoch, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("b did not beat in 10s")
		}
	}
	feeding.Store(0) // z's sync stalls: b asks again
	if w := next(syncs); w.Epoch != first.Epoch || w.From.ID != "b" {
		t.Fatalf("b asked %+v, want the sync of epoch %d again", w, first.Epoch)
	}
}

// TestPresenceFailedSyncKeepsMembers: a sync whose records could not all be sent is not ended
// with "done" (the owner would drop every member it did not get): the owner asks again, and
// the members stay listed.
func TestPresenceFailedSyncKeepsMembers(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	ch := ""
	for i := 0; ch == ""; i++ { // owned by b, also once c is there
		c := fmt.Sprintf("fs-%d", i)
		if nats.Owner([]string{"a", "b"}, c) == "b" && nats.Owner([]string{"a", "b", "c"}, c) == "b" {
			ch = c
		}
	}
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	wantView(t, a, "a", "b")
	wantView(t, b, "a", "b")
	mustJoin(t, a, ch, "a1")
	mustJoin(t, a, ch, "a2")
	wantMembers(t, b, ch, "a1", "a2")

	// a's records fail until the test lifts the fault: b's sync rounds (its new view with c,
	// and the one c's request starts) cannot complete; b must keep a's members and ask again.
	const faults = 1 << 20
	a.FailSyncRecs(faults)
	c := startPresenceNode(t, url, prefix, "c", reaps)
	wantView(t, b, "a", "b", "c")
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if n := faults - a.SyncFaultsLeft(); n < 3 {
			return fmt.Errorf("a's records for b failed %d times, want b to ask again until they come", n)
		}
		return nil
	})
	if b.Synced() {
		t.Fatal("b's sync completed though a's records never came")
	}
	a.FailSyncRecs(0)
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if !b.Synced() {
			return errors.New("b's sync is not complete")
		}
		return nil
	})
	wantMembers(t, b, ch, "a1", "a2")
	wantMembers(t, c, ch, "a1", "a2")
	if err := reaps.check(map[string]int{}, map[string]int{}); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceJoinTooLarge: a member larger than the server takes fails its Join with
// nats.go's ErrMaxPayload (not a timeout), though requests to other nodes are queued.
func TestPresenceJoinTooLarge(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	ch := ""
	for i := 0; ch == ""; i++ {
		if c := fmt.Sprintf("tl-%d", i); nats.Owner([]string{"a", "b"}, c) == "b" {
			ch = c
		}
	}
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	wantView(t, a, "a", "b")
	info := json.RawMessage(`{"bio":"` + strings.Repeat("x", 2<<20) + `"}`)
	_, err := a.Join(t.Context(), ch, protocol.Member{User: "u", Session: "big", Node: "a", Info: info})
	if !errors.Is(err, natsgo.ErrMaxPayload) {
		t.Fatalf("Join of a 2 MB member: %v, want ErrMaxPayload", err)
	}
	mustJoin(t, a, ch, "a1")
	wantMembers(t, b, ch, "a1")
}

// TestPresenceLateMessageOfDeadNode: messages of a dead node that come after it was reaped (a
// join it sent before it died, the backup copy of a join) list no ghost and reap no member
// twice, also at the next view change; a backup copy of a member not reaped yet is reaped once.
func TestPresenceLateMessageOfDeadNode(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	pick := func(owner string, not ...string) string {
		for i := 0; ; i++ {
			c := fmt.Sprintf("late-%d", i)
			if nats.Owner([]string{"d", "x"}, c) == owner && !slices.Contains(not, c) {
				return c
			}
		}
	}
	dch := pick("d") // d owns it, x backs it
	xch := pick("x") // x owns it
	x := startPresenceNode(t, url, prefix, "x", reaps)
	d := startPresenceNode(t, url, prefix, "d", reaps)
	wantView(t, x, "d", "x")
	wantView(t, d, "d", "x")
	mustJoin(t, d, dch, "d1")
	mustJoin(t, d, xch, "d2")
	wantMembers(t, x, dch, "d1")
	wantMembers(t, x, xch, "d2")
	inc := d.Incarnation()
	_ = d.Close() // as SIGKILLed
	want := map[string]int{dch + "/d1": 1, xch + "/d2": 1}
	transporttest.WaitFor(t, 10*time.Second, func() error { return reaps.check(want, map[string]int{dch: 1, xch: 1}) })

	member := func(s string) protocol.Member { return protocol.Member{User: "u-" + s, Session: s, Node: "d"} }
	x.Inject("bjoin", "d", inc, dch, member("d1")) // reaped already
	x.Inject("join", "d", inc, xch, member("d3"))  // a join d sent before it died
	x.Inject("bjoin", "d", inc, dch, member("d4")) // a copy of a member x never had: reaped now
	want[dch+"/d4"] = 1
	transporttest.WaitFor(t, 10*time.Second, func() error { return reaps.check(want, map[string]int{dch: 2, xch: 1}) })
	wantMembers(t, x, xch)
	wantMembers(t, x, dch)

	// A view change makes x reap what it holds of the dead: nothing is left to reap twice.
	n := startPresenceNode(t, url, prefix, "n", reaps)
	wantView(t, x, "n", "x")
	wantView(t, n, "n", "x")
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if !x.Synced() || !n.Synced() {
			return errors.New("x and n have not synced")
		}
		return nil
	})
	for _, node := range []*nats.Broker{x, n} {
		wantMembers(t, node, xch)
		wantMembers(t, node, dch)
	}
	if err := reaps.check(want, map[string]int{dch: 2, xch: 1}); err != nil {
		t.Fatal(err)
	}
}
