package transporttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// PresenceFeatures says what the presence suite can do with the broker under test.
type PresenceFeatures struct {
	// Heartbeat is the presence heartbeat the suite gives its nodes (default 250 ms): short, so
	// that reaping takes a second or so, and long enough that a live node's renewal is not late
	// on a loaded machine.
	Heartbeat time.Duration
	// Kill makes node stop as a SIGKILLed node would: no leave, no more lease renewal. Nil: Close.
	Kill func(t *testing.T, node transports.Broker)
	// RestartBroker restarts the server the nodes talk to, losing what it kept or not; after
	// it, the nodes' members must come back (recorded again by the nodes) and nothing else.
	// Nil skips the restart test.
	RestartBroker func(t *testing.T)
	// WorksBeforeStart: the broker's presence works before Start (memory); otherwise every
	// method must fail with transports.ErrNotStarted before it.
	WorksBeforeStart bool
	// Members is the size of the channel the paging test fills (default 10,000).
	Members int
	// Timeout bounds each wait (default 10 s, at least 10 heartbeats).
	Timeout time.Duration
}

// NewPresenceNode returns a new node, not started, whose broker implements transports.Presence,
// renewing its presence lease every heartbeat. Nodes made with the same prefix share one broker
// namespace (one cluster); nodeID is the node's id (Member.Node of the members it joins). The
// suite sets OnReap where it needs to, then starts the node; it closes every node.
type NewPresenceNode func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker

// RunPresence runs the presence conformance suite.
func RunPresence(t *testing.T, f PresenceFeatures, newNode NewPresenceNode) {
	if f.Heartbeat == 0 {
		f.Heartbeat = 250 * time.Millisecond
	}
	if f.Members == 0 {
		f.Members = 10000
	}
	if f.Timeout == 0 {
		f.Timeout = max(10*time.Second, 10*f.Heartbeat)
	}
	if f.Kill == nil {
		f.Kill = func(t *testing.T, node transports.Broker) { _ = node.Close() }
	}
	s := &presenceSuite{f: f, newNode: newNode}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"MembersOfThreeNodes", s.testMembers},
		{"JoinAndLeaveAgain", s.testIdempotent},
		{"OccupiedAndVacatedOnce", s.testOnce},
		{"Paging", s.testPaging},
		{"Stats", s.testStats},
		{"Channels", s.testChannels},
		{"Reap", s.testReap},
		{"BrokerRestart", s.testRestart},
		{"NotStarted", s.testNotStarted},
		{"Closed", s.testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type presenceSuite struct {
	f       PresenceFeatures
	newNode NewPresenceNode
}

// presenceNode is a started node of the suite.
type presenceNode struct {
	transports.Broker
	transports.Presence
	id string
}

// node makes, sets up (before Start) and starts a node, closed at the end of the test.
func (s *presenceSuite) node(t *testing.T, prefix, id string, setup func(transports.Presence)) presenceNode {
	t.Helper()
	b := s.newNode(t, prefix, id, s.f.Heartbeat)
	t.Cleanup(func() { _ = b.Close() })
	p, ok := b.(transports.Presence)
	if !ok {
		t.Fatalf("%T does not implement transports.Presence", b)
	}
	if setup != nil {
		setup(p)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	WaitFor(t, s.f.Timeout, func() error { return b.Ping(t.Context()) })
	return presenceNode{Broker: b, Presence: p, id: id}
}

func (s *presenceSuite) nodes(t *testing.T, prefix string, n int) []presenceNode {
	out := make([]presenceNode, n)
	for i := range out {
		out[i] = s.node(t, prefix, "node"+strconv.Itoa(i), nil)
	}
	return out
}

func (n presenceNode) member(user, session string) protocol.Member {
	return protocol.Member{User: user, Session: session, Node: n.id}
}

func (n presenceNode) join(t *testing.T, channel string, m protocol.Member) bool {
	t.Helper()
	occupied, err := n.Join(t.Context(), channel, m)
	if err != nil {
		t.Fatalf("Join %s %s: %v", channel, m.Session, err)
	}
	return occupied
}

func (n presenceNode) leave(t *testing.T, channel, session string) bool {
	t.Helper()
	vacated, err := n.Leave(t.Context(), channel, session)
	if err != nil {
		t.Fatalf("Leave %s %s: %v", channel, session, err)
	}
	return vacated
}

// AllMembers reads every member of channel, page by page, and fails on a page larger than
// limit, a member out of order or repeated, or an empty page that says there is more.
func AllMembers(ctx context.Context, p transports.Presence, channel string, limit int) ([]protocol.Member, error) {
	var out []protocol.Member
	after := ""
	for {
		page, more, err := p.Members(ctx, channel, after, limit)
		if err != nil {
			return nil, err
		}
		if len(page) > limit {
			return nil, fmt.Errorf("a page of %d members, limit %d", len(page), limit)
		}
		for _, m := range page {
			if m.Session <= after {
				return nil, fmt.Errorf("member %q after %q: out of order or repeated", m.Session, after)
			}
			after = m.Session
		}
		out = append(out, page...)
		if !more {
			return out, nil
		}
		if len(page) == 0 {
			return nil, errors.New("an empty page with more")
		}
	}
}

// Sessions are the session ids of ms.
func Sessions(ms []protocol.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Session
	}
	return out
}

// expectMembers waits until channel's members, read from p, are exactly want (sorted sessions).
func (s *presenceSuite) expectMembers(t *testing.T, p transports.Presence, channel string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	WaitFor(t, s.f.Timeout, func() error {
		ms, err := AllMembers(t.Context(), p, channel, 7)
		if err != nil {
			return err
		}
		if got := Sessions(ms); !slices.Equal(got, want) {
			return fmt.Errorf("members of %s: %v, want %v", channel, got, want)
		}
		return nil
	})
}

func (s *presenceSuite) testMembers(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 3)
	info := json.RawMessage(`{"name":"Ann"}`)
	var want []string
	for i, n := range ns {
		for j := range 3 {
			m := n.member("u"+strconv.Itoa(j), fmt.Sprintf("s%d-%d", i, j))
			if j == 0 {
				m.Info = info
			}
			n.join(t, "room", m)
			want = append(want, m.Session)
		}
	}
	for _, n := range ns {
		s.expectMembers(t, n, "room", want)
	}
	ms, err := AllMembers(t.Context(), ns[1], "room", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		var i, j int
		if _, err := fmt.Sscanf(m.Session, "s%d-%d", &i, &j); err != nil {
			t.Fatalf("session %q", m.Session)
		}
		if m.Node != ns[i].id || m.User != "u"+strconv.Itoa(j) {
			t.Fatalf("member %+v: want node %s, user u%d", m, ns[i].id, j)
		}
		if j == 0 && string(m.Info) != string(info) || j != 0 && len(m.Info) != 0 {
			t.Fatalf("member %s has info %s", m.Session, m.Info)
		}
	}
	if ms, more, err := ns[0].Members(t.Context(), "elsewhere", "", 10); err != nil || len(ms) != 0 || more {
		t.Fatalf("members of an empty channel: %v, more %v, err %v", ms, more, err)
	}
}

func (s *presenceSuite) testIdempotent(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 2)
	if !ns[0].join(t, "c", ns[0].member("a", "s1")) {
		t.Fatal("the first join did not report occupied")
	}
	if ns[0].join(t, "c", ns[0].member("a", "s1")) {
		t.Fatal("joining a recorded session again reported occupied")
	}
	m := ns[0].member("a", "s1")
	m.Info = json.RawMessage(`{"v":2}`)
	ns[0].join(t, "c", m)
	s.expectMembers(t, ns[1], "c", []string{"s1"})
	WaitFor(t, s.f.Timeout, func() error { // read from another node, which sees it as expectMembers does
		if ms, _, err := ns[1].Members(t.Context(), "c", "", 10); err != nil || len(ms) != 1 || string(ms[0].Info) != `{"v":2}` {
			return fmt.Errorf("a join again did not replace the entry: %+v, %v", ms, err)
		}
		return nil
	})
	if ns[1].leave(t, "c", "nobody") {
		t.Fatal("leaving a session that is not recorded reported vacated")
	}
	if !ns[0].leave(t, "c", "s1") {
		t.Fatal("leaving the last member did not report vacated")
	}
	if ns[0].leave(t, "c", "s1") {
		t.Fatal("leaving again reported vacated")
	}
	if st, err := ns[1].Stats(t.Context(), "c"); err != nil || st != (protocol.PresenceStats{}) {
		t.Fatalf("stats of a vacated channel: %+v, %v", st, err)
	}
}

// testOnce: members of several nodes join one channel at once, then leave at once: one join
// reports occupied and one leave vacated, in every round.
func (s *presenceSuite) testOnce(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 3)
	const perNode = 5
	for round := range 5 {
		channel := "once" + strconv.Itoa(round)
		var occupied, vacated atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, len(ns)*perNode)
		for i, n := range ns {
			for j := range perNode {
				wg.Add(1)
				go func() {
					defer wg.Done()
					o, err := n.Join(t.Context(), channel, n.member("u", fmt.Sprintf("s%d-%d", i, j)))
					if err != nil {
						errs <- err
					}
					if o {
						occupied.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		for i, n := range ns {
			for j := range perNode {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := n.Leave(t.Context(), channel, fmt.Sprintf("s%d-%d", i, j))
					if err != nil {
						errs <- err
					}
					if v {
						vacated.Add(1)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if occupied.Load() != 1 || vacated.Load() != 1 {
			t.Fatalf("round %d: %d joins reported occupied and %d leaves vacated, want 1 and 1", round, occupied.Load(), vacated.Load())
		}
	}
}

// testPaging fills one channel with f.Members members from two nodes and reads it back in pages
// of several sizes: every member exactly once, in session order.
func (s *presenceSuite) testPaging(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 2)
	want := make([]string, s.f.Members)
	for i := range want {
		want[i] = fmt.Sprintf("m%06d", i)
	}
	joinAll(t, ns, "big", want)
	sorted := slices.Sorted(slices.Values(want))
	for _, limit := range []int{1000, 333, 100} {
		ms, err := AllMembers(t.Context(), ns[1], "big", limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := Sessions(ms); !slices.Equal(got, sorted) {
			t.Fatalf("pages of %d: %d members, want %d, in order, each once", limit, len(got), len(sorted))
		}
	}
	// A page from the middle starts right after its after.
	mid := len(sorted)/2 - 1
	ms, more, err := ns[0].Members(t.Context(), "big", sorted[mid], 2)
	if err != nil || !more || len(ms) != 2 || ms[0].Session != sorted[mid+1] || ms[1].Session != sorted[mid+2] {
		t.Fatalf("the page after %s: %v, more %v, err %v", sorted[mid], Sessions(ms), more, err)
	}
	// The last page says there is no more.
	last := sorted[len(sorted)-1]
	if ms, more, err := ns[0].Members(t.Context(), "big", sorted[len(sorted)-2], 5); err != nil || more || len(ms) != 1 || ms[0].Session != last {
		t.Fatalf("the last page: %v, more %v, err %v", Sessions(ms), more, err)
	}
	if st, err := ns[0].Stats(t.Context(), "big"); err != nil || st.Connections != len(want) {
		t.Fatalf("stats of the big channel: %+v, %v", st, err)
	}
}

// joinAll joins sessions to channel, spread over the nodes, a few at a time.
func joinAll(t *testing.T, ns []presenceNode, channel string, sessions []string) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(sessions); i += 8 {
				n := ns[i%len(ns)]
				if _, err := n.Join(t.Context(), channel, n.member("u"+strconv.Itoa(i), sessions[i])); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("Join: %v", err)
	}
}

// testStats: a user with two connections on two nodes counts once; anonymous connections each
// count as a user.
func (s *presenceSuite) testStats(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 2)
	ns[0].join(t, "st", ns[0].member("ann", "a1"))
	ns[1].join(t, "st", ns[1].member("ann", "a2"))
	ns[1].join(t, "st", ns[1].member("bob", "b1"))
	ns[0].join(t, "st", ns[0].member("", "x1"))
	ns[1].join(t, "st", ns[1].member("", "x2"))
	want := protocol.PresenceStats{Connections: 5, Users: 4}
	for _, n := range ns {
		WaitFor(t, s.f.Timeout, func() error {
			st, err := n.Stats(t.Context(), "st")
			if err != nil || st != want {
				return fmt.Errorf("stats %+v, err %v; want %+v", st, err, want)
			}
			return nil
		})
	}
	ns[0].leave(t, "st", "a1")
	want = protocol.PresenceStats{Connections: 4, Users: 4}
	WaitFor(t, s.f.Timeout, func() error {
		st, err := ns[1].Stats(t.Context(), "st")
		if err != nil || st != want {
			return fmt.Errorf("stats after a leave %+v, err %v; want %+v", st, err, want)
		}
		return nil
	})
}

func (s *presenceSuite) testChannels(t *testing.T) {
	ns := s.nodes(t, Prefix(t), 2)
	var rooms []string
	for i := range 25 {
		name := fmt.Sprintf("room:%02d", i)
		rooms = append(rooms, name)
		n := ns[i%2]
		n.join(t, name, n.member("u", "s"+name))
		if i%5 == 0 {
			ns[1].join(t, name, ns[1].member("v", "t"+name))
		}
	}
	ns[0].join(t, "roomy", ns[0].member("u", "s-roomy"))
	ns[0].join(t, "other", ns[0].member("u", "s-other"))
	WaitFor(t, s.f.Timeout, func() error {
		var got []protocol.ChannelStats
		after := ""
		for {
			page, more, err := ns[1].Channels(t.Context(), "room:", after, 4)
			if err != nil {
				return err
			}
			if len(page) > 4 {
				return fmt.Errorf("a page of %d channels, limit 4", len(page))
			}
			got = append(got, page...)
			if !more {
				break
			}
			if len(page) == 0 {
				return errors.New("an empty page with more")
			}
			after = page[len(page)-1].Channel
		}
		names := make([]string, len(got))
		for i, c := range got {
			names[i] = c.Channel
			want := protocol.PresenceStats{Connections: 1, Users: 1}
			if i%5 == 0 {
				want = protocol.PresenceStats{Connections: 2, Users: 2}
			}
			if c.PresenceStats != want {
				return fmt.Errorf("channel %s: %+v, want %+v", c.Channel, c.PresenceStats, want)
			}
		}
		if !slices.Equal(names, rooms) {
			return fmt.Errorf("channels room:*: %v, want %v", names, rooms)
		}
		return nil
	})
	ns[0].leave(t, "other", "s-other")
	WaitFor(t, s.f.Timeout, func() error {
		page, _, err := ns[1].Channels(t.Context(), "", "", 100)
		if err != nil {
			return err
		}
		for _, c := range page {
			if c.Channel == "other" {
				return errors.New("a vacated channel is still listed")
			}
		}
		if len(page) != 26 {
			return fmt.Errorf("%d channels listed, want 26", len(page))
		}
		return nil
	})
}

// reapLog records the OnReap calls of the nodes of a test.
type reapLog struct {
	mu    sync.Mutex
	calls map[string]int // channel/session -> calls
	vac   map[string]int // channel -> calls with vacated
}

func (l *reapLog) setup(p transports.Presence) {
	p.OnReap(func(channel string, m protocol.Member, vacated bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.calls[channel+"/"+m.Session]++
		if vacated {
			l.vac[channel]++
		}
	})
}

func (l *reapLog) check(want map[string]int, vacated map[string]int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !mapsEqual(l.calls, want) {
		return fmt.Errorf("OnReap calls %v, want %v", l.calls, want)
	}
	if !mapsEqual(l.vac, vacated) {
		return fmt.Errorf("OnReap vacated %v, want %v", l.vac, vacated)
	}
	return nil
}

func mapsEqual(a, b map[string]int) bool {
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

// testReap: a node that stops without leaving loses its members (within the broker's bound,
// RunReapBound; the test waits longer, not to assert a timing), and OnReap is called once in the
// cluster for each, vacated for the channel it emptied; the other nodes' members stay.
func (s *presenceSuite) testReap(t *testing.T) {
	prefix := Prefix(t)
	log := &reapLog{calls: map[string]int{}, vac: map[string]int{}}
	a := s.node(t, prefix, "a", log.setup)
	b := s.node(t, prefix, "b", log.setup)
	dying := s.node(t, prefix, "dying", log.setup)
	a.join(t, "shared", a.member("ann", "a1"))
	b.join(t, "shared", b.member("bob", "b1"))
	dying.join(t, "shared", dying.member("ann", "d1"))
	dying.join(t, "shared", dying.member("cat", "d2"))
	dying.join(t, "alone", dying.member("cat", "d3"))
	s.expectMembers(t, a, "shared", []string{"a1", "b1", "d1", "d2"})
	s.f.Kill(t, dying.Broker)
	s.expectMembers(t, a, "shared", []string{"a1", "b1"})
	s.expectMembers(t, b, "alone", nil)
	want := map[string]int{"shared/d1": 1, "shared/d2": 1, "alone/d3": 1}
	WaitFor(t, s.f.Timeout, func() error { return log.check(want, map[string]int{"alone": 1}) })
	// Two more heartbeats and a pass: nothing is reaped twice, and the living are kept.
	time.Sleep(3 * s.f.Heartbeat) // a wait for what must not happen: no poll can show it
	if err := log.check(want, map[string]int{"alone": 1}); err != nil {
		t.Fatal(err)
	}
	s.expectMembers(t, b, "shared", []string{"a1", "b1"})
	if st, err := b.Stats(t.Context(), "shared"); err != nil || st != (protocol.PresenceStats{Connections: 2, Users: 2}) {
		t.Fatalf("stats after the reaping: %+v, %v", st, err)
	}
}

// testRestart: after the broker restarts (keeping its data or not), the nodes' members come
// back, recorded again by their nodes, and a member left after it stays gone.
func (s *presenceSuite) testRestart(t *testing.T) {
	if s.f.RestartBroker == nil {
		t.Skip("no broker restart for this broker")
	}
	ns := s.nodes(t, Prefix(t), 2)
	ns[0].join(t, "r", ns[0].member("ann", "a1"))
	ns[0].join(t, "r", ns[0].member("ann", "a2"))
	ns[1].join(t, "r", ns[1].member("bob", "b1"))
	s.expectMembers(t, ns[1], "r", []string{"a1", "a2", "b1"})
	s.f.RestartBroker(t)
	for _, n := range ns {
		WaitFor(t, s.f.Timeout, func() error { return n.Ping(t.Context()) })
	}
	s.expectMembers(t, ns[1], "r", []string{"a1", "a2", "b1"})
	WaitFor(t, s.f.Timeout, func() error {
		_, err := ns[0].Leave(t.Context(), "r", "a2")
		return err
	})
	s.expectMembers(t, ns[0], "r", []string{"a1", "b1"})
	time.Sleep(3 * s.f.Heartbeat) // renewals after the leave bring back no ghost
	s.expectMembers(t, ns[0], "r", []string{"a1", "b1"})
}

// testNotStarted: before Start every method fails with ErrNotStarted (or works, for a broker
// that works before Start).
func (s *presenceSuite) testNotStarted(t *testing.T) {
	b := s.newNode(t, Prefix(t), "early", s.f.Heartbeat)
	t.Cleanup(func() { _ = b.Close() })
	p := b.(transports.Presence)
	ctx := t.Context()
	checks := map[string]error{}
	_, checks["Join"] = p.Join(ctx, "c", protocol.Member{Session: "s", Node: "early"})
	_, checks["Leave"] = p.Leave(ctx, "c", "s")
	_, _, checks["Members"] = p.Members(ctx, "c", "", 10)
	_, checks["Stats"] = p.Stats(ctx, "c")
	_, _, checks["Channels"] = p.Channels(ctx, "", "", 10)
	for name, err := range checks {
		if s.f.WorksBeforeStart && err != nil {
			t.Errorf("%s before Start: %v", name, err)
		}
		if !s.f.WorksBeforeStart && !errors.Is(err, transports.ErrNotStarted) {
			t.Errorf("%s before Start: %v, want ErrNotStarted", name, err)
		}
	}
}

// testClosed: after Close every method fails with ErrClosed.
func (s *presenceSuite) testClosed(t *testing.T) {
	n := s.node(t, Prefix(t), "c", nil)
	n.join(t, "c", n.member("u", "s"))
	if err := n.Broker.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	checks := map[string]error{}
	_, checks["Join"] = n.Join(ctx, "c", n.member("u", "s2"))
	_, checks["Leave"] = n.Leave(ctx, "c", "s")
	_, _, checks["Members"] = n.Members(ctx, "c", "", 10)
	_, checks["Stats"] = n.Stats(ctx, "c")
	_, _, checks["Channels"] = n.Channels(ctx, "", "", 10)
	for name, err := range checks {
		if !errors.Is(err, transports.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// ReapBoundFeatures says how RunReapBound runs on the broker under test.
type ReapBoundFeatures struct {
	// Heartbeat is the presence heartbeat of the nodes (default 1 s: long against a loaded
	// machine's scheduling delays, so that the bound, not the machine, is what is measured).
	Heartbeat time.Duration
	// Kill makes node stop as a SIGKILLed node would (nil: Close), as in PresenceFeatures.
	Kill func(t *testing.T, node transports.Broker)
	// Trials is how many nodes are killed, each at another point of its renewal cycle (default 4).
	Trials int
}

// ReapBound is the bound transports.Presence promises: a node that stops loses its members
// within 2 heartbeats of the moment it stopped.
const ReapBound = 2

// RunReapBound kills nodes, each at another point of its renewal cycle, and asserts that a
// survivor no longer lists the dead node's member, and that OnReap was called for it once,
// within ReapBound heartbeats of the kill. It logs each kill-to-reap time (docs/presence.md
// quotes them). It asserts a time: run it outside the race detector, which slows the nodes
// down by an unbounded factor.
func RunReapBound(t *testing.T, f ReapBoundFeatures, newNode NewPresenceNode) {
	if f.Heartbeat == 0 {
		f.Heartbeat = time.Second
	}
	if f.Trials == 0 {
		f.Trials = 4
	}
	if f.Kill == nil {
		f.Kill = func(t *testing.T, node transports.Broker) { _ = node.Close() }
	}
	s := &presenceSuite{f: PresenceFeatures{Heartbeat: f.Heartbeat, Kill: f.Kill, Timeout: max(10*time.Second, 10*f.Heartbeat)}, newNode: newNode}
	prefix := Prefix(t)
	log := &reapLog{calls: map[string]int{}, vac: map[string]int{}}
	a := s.node(t, prefix, "a", log.setup)
	b := s.node(t, prefix, "b", log.setup)
	a.join(t, "bound", a.member("ann", "a1"))
	bound := ReapBound * f.Heartbeat
	want := map[string]int{}
	var took []string
	for i := range f.Trials {
		id := "dying" + strconv.Itoa(i)
		dying := s.node(t, prefix, id, log.setup)
		session := "d" + strconv.Itoa(i)
		dying.join(t, "bound", dying.member("dan", session))
		s.expectMembers(t, b, "bound", []string{"a1", session})
		// Kill at another phase of the node's renewals each time.
		time.Sleep(time.Duration(i) * f.Heartbeat / time.Duration(f.Trials)) // a phase, not a wait for something
		// The clock starts before Kill: a node stops renewing when its Kill begins (a Close
		// stops its renewals first, then waits for its goroutines and connections, which may
		// take a while), so a clock started once Kill returned would leave that time out.
		killed := time.Now()
		f.Kill(t, dying.Broker)
		want["bound/"+session] = 1
		var gone time.Duration
		WaitFor(t, s.f.Timeout, func() error {
			ms, err := AllMembers(t.Context(), b, "bound", 1000)
			if err != nil {
				return err
			}
			if slices.Contains(Sessions(ms), session) {
				return fmt.Errorf("%s still listed %v after the kill", session, time.Since(killed).Round(time.Millisecond))
			}
			if err := log.check(want, nil); err != nil {
				return err
			}
			gone = time.Since(killed)
			return nil
		})
		took = append(took, gone.Round(time.Millisecond).String())
		if gone > bound {
			t.Errorf("trial %d: %s was reaped %v after its node was killed; the bound is %v (%d heartbeats of %v)", i, session, gone.Round(time.Millisecond), bound, ReapBound, f.Heartbeat)
		}
	}
	t.Logf("kill to reap, heartbeat %v: %v (bound %v)", f.Heartbeat, took, bound)
	s.expectMembers(t, a, "bound", []string{"a1"})
}
