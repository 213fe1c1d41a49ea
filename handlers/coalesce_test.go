package handlers

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
)

// published records what a coalescer published, one entry per message: "<channel> <kind>
// <sessions joined by ,>".
type published struct {
	mu   sync.Mutex
	msgs []string
	// busy counts publishes running per channel: more than one at once is a defect.
	busy    map[string]int
	overlap atomic.Bool
	hold    chan struct{} // when set, each publish waits for a value
}

func (p *published) publish(channel, kind string, members []protocol.Member) {
	p.mu.Lock()
	if p.busy == nil {
		p.busy = map[string]int{}
	}
	if p.busy[channel]++; p.busy[channel] > 1 {
		p.overlap.Store(true)
	}
	p.mu.Unlock()
	if p.hold != nil {
		<-p.hold
	}
	sessions := make([]string, len(members))
	for i, m := range members {
		sessions[i] = m.Session
	}
	p.mu.Lock()
	p.busy[channel]--
	p.msgs = append(p.msgs, channel+" "+kind+" "+strings.Join(sessions, ","))
	p.mu.Unlock()
}

func (p *published) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.msgs...)
}

func member(session string) protocol.Member {
	return protocol.Member{User: "u-" + session, Session: session, Node: "n1"}
}

// equal fails the test unless got is want.
func equal(t *testing.T, got, want []string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published\n%q\nwant\n%q", got, want)
	}
}

// TestCoalescerWindow: the changes go out when their window ends, without Close, each message
// of one kind, in the order they came (how many windows they fall in depends on the machine's
// pace: the grouping itself is TestCoalescerHoldsForTheWindow's); a later window's change in a
// message of its own.
func TestCoalescerWindow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var p published
	c := newCoalescer(20*time.Millisecond, p.publish)
	defer c.Close()
	for _, s := range []string{"a", "b", "c"} {
		c.add("room", protocol.KindJoin, member(s))
	}
	c.add("room", protocol.KindLeave, member("x"))
	c.add("room", protocol.KindJoin, member("d"))
	c.add("other", protocol.KindJoin, member("e"))
	want := []string{"join a", "join b", "join c", "leave x", "join d", "other join e"}
	flat := func() []string { // each member of each message, in order; other's last
		var room, other []string
		for _, m := range p.all() {
			f := strings.Fields(m)
			for _, s := range strings.Split(f[2], ",") {
				if f[0] == "room" {
					room = append(room, f[1]+" "+s)
				} else {
					other = append(other, f[0]+" "+f[1]+" "+s)
				}
			}
		}
		return append(room, other...)
	}
	poll.Until(t, 10*time.Second, func() error {
		if got := flat(); len(got) < len(want) {
			return fmt.Errorf("published %q", p.all())
		}
		return nil
	})
	equal(t, flat(), want)
	if n := len(p.all()); n > len(want) {
		t.Fatalf("%d messages for %d changes", n, len(want))
	}

	// A later window: its own message.
	c.add("room", protocol.KindLeave, member("b"))
	poll.Until(t, 10*time.Second, func() error {
		if got := p.all(); got[len(got)-1] != "room leave b" {
			return fmt.Errorf("published %q", got)
		}
		return nil
	})
	if p.overlap.Load() {
		t.Fatal("two publishes of one channel at once")
	}
}

// TestCoalescerHoldsForTheWindow: nothing is published before the window ends (here an hour,
// so it is Close that flushes), and Close publishes everything pending, in order.
func TestCoalescerHoldsForTheWindow(t *testing.T) {
	var p published
	c := newCoalescer(time.Hour, p.publish)
	c.add("room", protocol.KindJoin, member("a"))
	c.add("room", protocol.KindJoin, member("b"))
	c.add("room", protocol.KindLeave, member("z"))
	if got := p.all(); len(got) != 0 {
		t.Fatalf("published before the window ended: %q", got)
	}
	c.Close()
	equal(t, p.all(), []string{"room join a,b", "room leave z"})
	c.Close() // twice: nothing more, no panic
	if c.add("room", protocol.KindJoin, member("late")) {
		t.Fatal("add after Close accepted")
	}
	equal(t, p.all(), []string{"room join a,b", "room leave z"})
}

// TestCoalescerLastChangeStands: of several changes of one session in a window only the last is
// sent, at its place in the order; the changes around it keep theirs. Whenever in the window a
// subscriber read the members (any prefix of the changes), applying what is sent to what it read
// gives the members after every change.
func TestCoalescerLastChangeStands(t *testing.T) {
	var p published
	c := newCoalescer(time.Hour, p.publish)
	before := map[string]bool{"old": true, "b": true, "stay": true}
	changes := []struct{ kind, session string }{
		{protocol.KindJoin, "a"},
		{protocol.KindLeave, "old"},
		{protocol.KindLeave, "a"}, // joined and left
		{protocol.KindLeave, "b"},
		{protocol.KindJoin, "b"}, // left and came back
		{protocol.KindJoin, "c"},
		{protocol.KindJoin, "a"}, // and a again
	}
	for _, ch := range changes {
		c.add("room", ch.kind, member(ch.session))
	}
	c.add("solo", protocol.KindJoin, member("s"))
	c.add("solo", protocol.KindLeave, member("s"))
	c.Close()
	var room []string
	for _, m := range p.all() {
		if strings.HasPrefix(m, "room ") {
			room = append(room, m)
		}
	}
	equal(t, room, []string{"room leave old", "room join b,c,a"})
	if !slices.Contains(p.all(), "solo leave s") {
		t.Fatalf("solo: %q, want its last change, the leave", p.all())
	}

	apply := func(set map[string]bool, kind, session string) {
		if kind == protocol.KindJoin {
			set[session] = true
		} else {
			delete(set, session)
		}
	}
	truth := maps.Clone(before)
	for _, ch := range changes {
		apply(truth, ch.kind, ch.session)
	}
	for k := 0; k <= len(changes); k++ { // a subscriber that read presence after k changes
		read := maps.Clone(before)
		for _, ch := range changes[:k] {
			apply(read, ch.kind, ch.session)
		}
		for _, m := range room {
			f := strings.Fields(m)
			for _, s := range strings.Split(f[2], ",") {
				apply(read, f[1], s)
			}
		}
		if !maps.Equal(read, truth) {
			t.Fatalf("read after %d changes, ends with %v, want %v", k, slices.Sorted(maps.Keys(read)), slices.Sorted(maps.Keys(truth)))
		}
	}
}

// TestCoalescerBound: a window that gathers more than a message holds is published in full
// messages as soon as each is full, without waiting for its end; the rest at its end.
func TestCoalescerBound(t *testing.T) {
	var p published
	c := newCoalescer(time.Hour, p.publish)
	total := 2*coalesceMaxMembers + 7
	var want []string
	for i := range total {
		c.add("room", protocol.KindJoin, member(fmt.Sprintf("s%04d", i)))
		want = append(want, fmt.Sprintf("s%04d", i))
	}
	poll.Until(t, 10*time.Second, func() error {
		if got := p.all(); len(got) != 2 {
			return fmt.Errorf("%d messages published, want the 2 full ones", len(got))
		}
		return nil
	})
	c.Close()
	got := p.all()
	if len(got) != 3 {
		t.Fatalf("%d messages, want 3", len(got))
	}
	var sessions []string
	for i, m := range got {
		f := strings.Fields(m)
		ss := strings.Split(f[2], ",")
		if n := []int{coalesceMaxMembers, coalesceMaxMembers, 7}[i]; len(ss) != n {
			t.Fatalf("message %d has %d members, want %d", i, len(ss), n)
		}
		sessions = append(sessions, ss...)
	}
	equal(t, sessions, want)
}

// TestCoalescerBoundBytes: members with a large info fill a message by its size first; each
// message stays within coalesceMaxBytes, or holds one member.
func TestCoalescerBoundBytes(t *testing.T) {
	var mu sync.Mutex
	var sizes, counts []int
	c := newCoalescer(time.Hour, func(channel, kind string, members []protocol.Member) {
		raw, _ := json.Marshal(members)
		mu.Lock()
		sizes, counts = append(sizes, len(raw)), append(counts, len(members))
		mu.Unlock()
	})
	info := json.RawMessage(`{"bio":"` + strings.Repeat("x", 100<<10) + `"}`)
	for i := range 5 {
		m := member(fmt.Sprint(i))
		m.Info = info
		c.add("room", protocol.KindJoin, m)
	}
	c.Close()
	n := 0
	for i, s := range sizes {
		if s > coalesceMaxBytes && counts[i] > 1 {
			t.Fatalf("message %d: %d bytes of %d members", i, s, counts[i])
		}
		n += counts[i]
	}
	if n != 5 || len(sizes) < 3 {
		t.Fatalf("messages of %v members, want the 5 in at least 3", counts)
	}
}

// TestCoalescerOneAtATime: while a channel's message is being published, its new changes wait,
// then go out after it, in order; a channel never has two publishes at once, and another
// channel is not held up.
func TestCoalescerOneAtATime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := published{hold: make(chan struct{})}
	c := newCoalescer(time.Millisecond, p.publish)
	c.add("room", protocol.KindJoin, member("a"))
	poll.Until(t, 10*time.Second, func() error { // its publish started and is held
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.busy["room"] != 1 {
			return fmt.Errorf("no publish running")
		}
		return nil
	})
	c.add("room", protocol.KindJoin, member("b"))
	c.add("room", protocol.KindLeave, member("a")) // a's join is being published: no cancel
	c.add("room", protocol.KindJoin, member("c"))
	c.add("other", protocol.KindJoin, member("o"))
	for range 5 { // room's four messages and other's one, in any order between channels
		p.hold <- struct{}{}
	}
	c.Close()
	var room []string
	for _, m := range p.all() {
		if strings.HasPrefix(m, "room ") {
			room = append(room, m)
		}
	}
	equal(t, room, []string{"room join a", "room join b", "room leave a", "room join c"})
	if p.overlap.Load() {
		t.Fatal("two publishes of one channel at once")
	}
}

// TestCoalescerCloseFlushesRunning: Close while a flush is publishing waits for it and
// publishes what came meanwhile, without waiting for a window.
func TestCoalescerCloseFlushesRunning(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	p := published{hold: make(chan struct{})}
	c := newCoalescer(time.Hour, p.publish)
	for i := range coalesceMaxMembers { // full: published at once
		c.add("room", protocol.KindJoin, member(fmt.Sprintf("s%04d", i)))
	}
	c.add("room", protocol.KindLeave, member("late"))
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	p.hold <- struct{}{}
	p.hold <- struct{}{}
	<-closed
	got := p.all()
	if len(got) != 2 || got[1] != "room leave late" {
		t.Fatalf("published %d messages; want the full one, then %q", len(got), "room leave late")
	}
}
