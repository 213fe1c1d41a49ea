package gateway_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/wsgateway/gateway/internal/wstest"
)

// coalesceBurst is how many clients join, then leave, at once in TestPresenceCoalescedStorm.
const coalesceBurst = 20

// TestPresenceCoalescedStorm: a burst of joins on one node reaches the subscribers of another
// node as fewer frames than joins (presence.coalesce gathers them: here a window of 1s, so the
// burst falls in one or two), each member once; every client of the burst ends with the full
// member set (its presence answer and the joins after it); the burst's leaves come as few
// frames too; and a client that resumes from before the burst gets the same frames, members
// and positions as a client that stayed, then recovered:true.
func TestPresenceCoalescedStorm(t *testing.T) {
	pc := newPresenceCluster(t, 2, "GATEWAY_PRESENCE_COALESCE=1s")
	n1, n2 := pc.nodes[0], pc.nodes[1]
	const room = "room:storm"

	// The watcher on node 2 records every frame; r (on node 1) leaves before the burst and
	// resumes after it.
	w, ww := wstest.Dial(t, n2.URL, allowAll(t, "watcher"))
	w.Subscribe(room)
	expectJoinLeave(t, w, "join", room, ww.Str("session"))
	r, wr := wstest.Dial(t, n1.URL, allowAll(t, "resumer"))
	r.Subscribe(room)
	since := expectJoinLeave(t, r, "join", room, wr.Str("session")).Str("position")
	expectJoinLeave(t, w, "join", room, wr.Str("session"))
	r.Conn.Close()
	seen := []wstest.Frame{expectJoinLeave(t, w, "leave", room, wr.Str("session"))}

	// The burst: clients dialled first, then every subscribe (and a presence query right
	// behind it) sent at once.
	want := map[string]bool{ww.Str("session"): true}
	clients := make([]*wstest.Client, coalesceBurst)
	for i := range clients {
		c, wc := wstest.Dial(t, n1.URL, allowAll(t, fmt.Sprintf("u%d", i)))
		clients[i] = c
		want[wc.Str("session")] = true
	}
	for _, c := range clients {
		c.Send(map[string]any{"type": "subscribe", "id": "s", "channel": room})
		c.Send(map[string]any{"type": "presence", "id": "p", "channel": room, "limit": 1000})
	}

	// The watcher: each joiner once, in fewer frames than joins, each frame with a position,
	// a frame of several with members and no member.
	readStorm := func(typ string, sessions map[string]bool) {
		t.Helper()
		got := map[string]int{}
		frames := 0
		for len(got) < len(sessions) {
			f := w.Next()
			ms := joinLeaveMembers(f)
			if f.Str("type") != typ || f.Str("channel") != room || f.Str("position") == "" || len(ms) == 0 ||
				(len(ms) > 1) != (f["member"] == nil) {
				t.Fatalf("got %v, want a %s with a position, of members or one member", f, typ)
			}
			for _, m := range ms {
				s, _ := m["session"].(string)
				if !sessions[s] || m["node"] != "p1" {
					t.Fatalf("%s of %v, want one of the burst's on p1", typ, m)
				}
				got[s]++
			}
			seen = append(seen, f)
			frames++
		}
		for s, n := range got {
			if n != 1 {
				t.Fatalf("%s of %s %d times", typ, s, n)
			}
		}
		if frames >= len(sessions) {
			t.Fatalf("%d %s frames for %d members: not coalesced", frames, typ, len(sessions))
		}
		t.Logf("%d %ss in %d frames", len(sessions), typ, frames)
	}
	joiners := maps.Clone(want)
	delete(joiners, ww.Str("session"))
	readStorm("join", joiners)

	// Every client of the burst ends with every member: its presence answer, plus the joins it
	// got after its subscribed (a member recorded after the answer has its join published
	// after the client subscribed).
	for i, c := range clients {
		c.Expect("subscribed")
		has := map[string]bool{}
		answered := false
		for !answered || len(has) < len(want) {
			f := c.Next()
			switch f.Str("type") {
			case "presence":
				answered = true
				for _, m := range membersOf(f) {
					has[m["session"].(string)] = true
				}
			case "join":
				for _, m := range joinLeaveMembers(f) {
					has[m["session"].(string)] = true
				}
			default:
				t.Fatalf("client %d: %v", i, f)
			}
		}
		if !maps.Equal(has, want) {
			t.Fatalf("client %d has members %v, want %v", i, slices.Sorted(maps.Keys(has)), slices.Sorted(maps.Keys(want)))
		}
	}

	// They all leave at once: few leave frames.
	for _, c := range clients {
		c.Conn.Close()
	}
	readStorm("leave", joiners)
	if ms := membersOf(presenceOf(t, w, room, "", 0)); len(ms) != 1 || ms[0]["session"] != ww.Str("session") {
		t.Fatalf("members after the leaves: %v", ms)
	}

	// The resumer comes back: what the watcher saw since its join, frame for frame.
	r2, wr2 := wstest.Dial(t, n2.URL, allowAll(t, "resumer"))
	r2.Send(map[string]any{"type": "subscribe", "id": "r", "channel": room, "since": since})
	for i, want := range seen {
		got := r2.Next()
		if got.Str("type") != want.Str("type") || got.Str("position") != want.Str("position") ||
			fmt.Sprint(got["member"]) != fmt.Sprint(want["member"]) || fmt.Sprint(got["members"]) != fmt.Sprint(want["members"]) {
			t.Fatalf("replayed frame %d: %v, want %v", i, got, want)
		}
	}
	if s := r2.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("resume %v", s)
	}
	expectJoinLeave(t, r2, "join", room, wr2.Str("session"))
}
