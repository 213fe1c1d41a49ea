package wsclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway/clients/go/wsclient"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/protocol"
)

// TestPresenceFrames: the presence and presence_stats requests and their answers (a page, the
// counts only, an error), against the fake server.
func TestPresenceFrames(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL})
	fc := fs.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	type pageResult struct {
		p   *wsclient.PresencePage
		err error
	}
	ask := func(opts ...wsclient.PresenceOption) <-chan pageResult {
		out := make(chan pageResult, 1)
		go func() {
			p, err := c.Presence(ctx, "room:1", opts...)
			out <- pageResult{p, err}
		}()
		return out
	}

	res := ask(wsclient.WithLimit(2))
	f := fc.expect(protocol.TypePresence)
	if f["channel"] != "room:1" || f["limit"] != 2.0 {
		t.Fatalf("presence frame %v", f)
	}
	if _, ok := f["after"]; ok {
		t.Fatalf("first page has after: %v", f)
	}
	fc.send(obj{"type": "presence", "id": f["id"], "channel": "room:1", "next": "s2", "members": []obj{
		{"user": "alice", "session": "s1", "node": "n1", "info": obj{"name": "Alice"}},
		{"user": "", "session": "s2", "node": "n2"},
	}})
	r := recvResult(t, res)
	if r.err != nil || r.p.Next != "s2" || r.p.Stats != nil || len(r.p.Members) != 2 ||
		r.p.Members[0].User != "alice" || string(r.p.Members[0].Info) != `{"name":"Alice"}` || r.p.Members[1].Node != "n2" {
		t.Fatalf("page %+v, %v", r.p, r.err)
	}

	res = ask(wsclient.WithAfter("s2"))
	f = fc.expect(protocol.TypePresence)
	if f["after"] != "s2" {
		t.Fatalf("presence frame %v", f)
	}
	if _, ok := f["limit"]; ok {
		t.Fatalf("limit sent without WithLimit: %v", f)
	}
	fc.send(obj{"type": "presence", "id": f["id"], "channel": "room:1", "members": []obj{}})
	if r := recvResult(t, res); r.err != nil || r.p.Next != "" || r.p.Members == nil || len(r.p.Members) != 0 {
		t.Fatalf("last page %+v, %v", r.p, r.err)
	}

	// Beyond presence.max_members: the counts only.
	res = ask()
	f = fc.expect(protocol.TypePresence)
	fc.send(obj{"type": "presence", "id": f["id"], "channel": "room:1", "connections": 20000, "users": 15000})
	if r := recvResult(t, res); r.err != nil || r.p.Stats == nil || *r.p.Stats != (wsclient.PresenceStats{Connections: 20000, Users: 15000}) {
		t.Fatalf("counts-only page %+v, %v", r.p, r.err)
	}

	// An error is an *Error.
	res = ask()
	f = fc.expect(protocol.TypePresence)
	fc.send(obj{"type": "error", "id": f["id"], "code": "unavailable", "message": "this broker keeps no presence yet"})
	var e *wsclient.Error
	if r := recvResult(t, res); !errors.As(r.err, &e) || e.Code != wsclient.CodeUnavailable {
		t.Fatalf("error %v", r.err)
	}
	// A limit out of range is refused before anything is sent.
	if _, err := c.Presence(ctx, "room:1", wsclient.WithLimit(protocol.MaxPresencePage+1)); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
		t.Fatalf("limit out of range: %v", err)
	}

	type statsResult struct {
		st  wsclient.PresenceStats
		err error
	}
	sres := make(chan statsResult, 1)
	go func() {
		st, err := c.PresenceStats(ctx, "room:1")
		sres <- statsResult{st, err}
	}()
	f = fc.expect(protocol.TypePresenceStats)
	if f["channel"] != "room:1" {
		t.Fatalf("presence_stats frame %v", f)
	}
	fc.send(obj{"type": "presence_stats", "id": f["id"], "channel": "room:1", "connections": 3, "users": 2})
	if r := recvResult(t, sres); r.err != nil || r.st != (wsclient.PresenceStats{Connections: 3, Users: 2}) {
		t.Fatalf("stats %+v, %v", r.st, r.err)
	}

	// PresenceAll reads every page.
	type allResult struct {
		members []wsclient.Member
		err     error
	}
	ares := make(chan allResult, 1)
	go func() {
		m, _, err := c.PresenceAll(ctx, "room:1")
		ares <- allResult{m, err}
	}()
	f = fc.expect(protocol.TypePresence)
	fc.send(obj{"type": "presence", "id": f["id"], "channel": "room:1", "next": "a", "members": []obj{{"session": "a"}}})
	f = fc.expect(protocol.TypePresence)
	if f["after"] != "a" {
		t.Fatalf("second page asked %v", f)
	}
	fc.send(obj{"type": "presence", "id": f["id"], "channel": "room:1", "members": []obj{{"session": "b"}}})
	if r := recvResult(t, ares); r.err != nil || len(r.members) != 2 || r.members[0].Session != "a" || r.members[1].Session != "b" {
		t.Fatalf("PresenceAll %+v, %v", r.members, r.err)
	}
}

// told reports whether m is a join or leave (kind) of one of user's connections.
func told(m wsclient.Message, kind, user string) bool {
	return m.Kind == kind && slices.ContainsFunc(m.Members, func(w wsclient.Member) bool { return w.User == user })
}

func joinLeave(typ, channel, pos, session string) obj {
	return obj{"type": typ, "channel": channel, "position": pos, "member": obj{"user": "u-" + session, "session": session, "node": "n"}}
}

// TestJoinLeaveInStream: joins and leaves come on Messages in order with the messages, with
// Kind and Member, and the duplicate check by position treats them like messages at a resume.
func TestJoinLeaveInStream(t *testing.T) {
	fs := newFakeServer(t)
	c := dial(t, wsclient.Options{URL: fs.URL, MinBackoff: 10 * time.Millisecond})
	fc := fs.next(t)
	res := subscribeAsync(c, "room:1")
	f := fc.expect("subscribe")
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "room:1", "position": "e:0:0:cc", "recovered": false})
	sub := recvResult(t, res).get(t)
	fc.send(joinLeave("join", "room:1", "e:0:1:cc", "s1"))
	fc.send(msg("room:1", "e:0:2:cc", 2))
	fc.send(joinLeave("leave", "room:1", "e:0:3:cc", "s1"))

	check := func(m wsclient.Message, kind, pos, session string) {
		t.Helper()
		if m.Kind != kind || m.Position != pos {
			t.Fatalf("got %+v, want %s at %s", m, kind, pos)
		}
		if kind == protocol.TypeMessage {
			if m.Member != nil {
				t.Fatalf("message with a member: %+v", m)
			}
			return
		}
		if m.Member == nil || m.Member.Session != session || m.Member.User != "u-"+session || m.ID != "" || m.Bytes != nil ||
			len(m.Members) != 1 || m.Members[0].Session != session {
			t.Fatalf("%s: %+v (member %+v)", kind, m, m.Member)
		}
	}
	check(next(t, sub.Messages()), protocol.TypeJoin, "e:0:1:cc", "s1")
	check(next(t, sub.Messages()), protocol.TypeMessage, "e:0:2:cc", "")
	check(next(t, sub.Messages()), protocol.TypeLeave, "e:0:3:cc", "s1")

	// The resume replays from e:0:2 (what the client delivered is e:0:3): the replayed leave
	// is dropped, the missed join comes once.
	fc.ws.Close()
	fc = fs.next(t)
	f = fc.expect("subscribe")
	if f["since"] != "e:0:3:cc" {
		t.Fatalf("resubscribe %v", f)
	}
	fc.send(joinLeave("leave", "room:1", "e:0:3:cc", "s1"))
	fc.send(joinLeave("join", "room:1", "e:0:4:cc", "s2"))
	fc.send(obj{"type": "subscribed", "id": f["id"], "channel": "room:1", "position": "e:0:4:cc", "recovered": true})
	fc.send(joinLeave("join", "room:1", "e:0:4:cc", "s2"))
	fc.send(msg("room:1", "e:0:5:cc", 5))
	m := next(t, sub.Messages())
	check(m, protocol.TypeJoin, "e:0:4:cc", "s2")
	if m.Gap {
		t.Fatal("Gap after a recovered resume")
	}
	check(next(t, sub.Messages()), protocol.TypeMessage, "e:0:5:cc", "")
	if sub.Position() != "e:0:5:cc" {
		t.Fatalf("position %q", sub.Position())
	}
	// A join of a channel not subscribed is dropped.
	fc.send(joinLeave("join", "other", "e:0:1:cc", "s3"))
	fc.send(msg("room:1", "e:0:6:cc", 6))
	check(next(t, sub.Messages()), protocol.TypeMessage, "e:0:6:cc", "")

	// Several members in one frame (a coalesced window): Members in order, no Member, one
	// position; and a join of nobody is dropped.
	fc.send(obj{"type": "leave", "channel": "room:1", "position": "e:0:7:cc", "members": []obj{
		{"user": "u-s2", "session": "s2", "node": "n"}, {"user": "u-s4", "session": "s4", "node": "n"}}})
	fc.send(obj{"type": "join", "channel": "room:1", "position": "e:0:8:cc", "members": []obj{}})
	fc.send(msg("room:1", "e:0:9:cc", 9))
	m = next(t, sub.Messages())
	if m.Kind != protocol.TypeLeave || m.Position != "e:0:7:cc" || m.Member != nil || len(m.Members) != 2 ||
		m.Members[0].Session != "s2" || m.Members[1].Session != "s4" || m.Members[1].User != "u-s4" {
		t.Fatalf("leave of several: %+v", m)
	}
	check(next(t, sub.Messages()), protocol.TypeMessage, "e:0:9:cc", "")
}

// TestPresenceOnGateway: two nodes on one memory broker; presence pages and stats across them,
// joins and leaves in the stream, and those missed while disconnected replayed at the resume.
func TestPresenceOnGateway(t *testing.T) {
	broker, prefix := newBroker(t)
	env := []string{"GATEWAY_PRESENCE_CHANNELS=room:*", "GATEWAY_PRESENCE_JOIN_LEAVE=room:*"}
	a := startNode(t, broker, prefix, "node-a", env...)
	b := startNode(t, broker, prefix, "node-b", env...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	aliceToken, err := auth.SignHS256([]byte(testSecret), "alice", time.Hour, []string{"*"}, []string{"*"}, auth.WithInfo(json.RawMessage(`{"name":"Alice"}`)))
	if err != nil {
		t.Fatal(err)
	}
	alice := dial(t, wsclient.Options{URL: a.URL, Token: aliceToken,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	sub := subscribe(t, alice, "room:1")
	m := next(t, sub.Messages())
	if m.Kind != protocol.TypeJoin || m.Member == nil || m.Member.Session != alice.Session() || m.Member.User != "alice" || m.Member.Node != "node-a" ||
		string(m.Member.Info) != `{"name":"Alice"}` {
		t.Fatalf("own join: %+v", m)
	}
	bob := dial(t, wsclient.Options{URL: b.URL, Token: allowAll(t, "bob")})
	bobSub := subscribe(t, bob, "room:1")
	m = next(t, sub.Messages())
	if m.Kind != protocol.TypeJoin || m.Member.User != "bob" || m.Member.Node != "node-b" {
		t.Fatalf("bob's join: %+v", m)
	}

	st, err := bob.PresenceStats(ctx, "room:1")
	if err != nil || st != (wsclient.PresenceStats{Connections: 2, Users: 2}) {
		t.Fatalf("stats %+v, %v", st, err)
	}
	p, err := alice.Presence(ctx, "room:1", wsclient.WithLimit(1))
	if err != nil || len(p.Members) != 1 || p.Next == "" {
		t.Fatalf("first page %+v, %v", p, err)
	}
	p2, err := alice.Presence(ctx, "room:1", wsclient.WithAfter(p.Next), wsclient.WithLimit(1))
	if err != nil || len(p2.Members) != 1 || p2.Next != "" || p2.Members[0].Session <= p.Members[0].Session {
		t.Fatalf("second page %+v, %v", p2, err)
	}
	all, _, err := bob.PresenceAll(ctx, "room:1")
	if err != nil || len(all) != 2 {
		t.Fatalf("PresenceAll %+v, %v", all, err)
	}
	var e *wsclient.Error
	if _, err := alice.Presence(ctx, "other"); !errors.As(err, &e) || e.Code != wsclient.CodeBadRequest {
		t.Fatalf("presence of a channel without presence: %v", err)
	}

	// Alice is cut off; meanwhile carol joins, a message comes, carol leaves.
	a.Tap.SetDown(true)
	if a.Tap.Cut() != 1 {
		t.Fatal("expected one connection to cut")
	}
	waitDisconnected(t, alice)
	carol := dial(t, wsclient.Options{URL: b.URL, Token: allowAll(t, "carol")})
	carolSub := subscribe(t, carol, "room:1")
	// Bob sees carol's join before she leaves (of a join and a leave within one coalescing
	// window, presence.coalesce, only the leave would be sent).
	for m := next(t, bobSub.Messages()); !told(m, protocol.TypeJoin, "carol"); m = next(t, bobSub.Messages()) {
	}
	if err := carolSub.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	// Bob sees carol's leave: it is in the stream before the message.
	for m := next(t, bobSub.Messages()); !told(m, protocol.TypeLeave, "carol"); m = next(t, bobSub.Messages()) {
	}
	apiPublish(t, a.AltURL, map[string]any{"channel": "room:1", "data": "end"})
	a.Tap.SetDown(false)

	// Alice resumes: carol's join and leave come once, in order, then the message, without a gap.
	var got []string
	seen := map[string]bool{}
	for {
		m := next(t, sub.Messages())
		if m.Gap {
			t.Fatalf("gap at %+v", m)
		}
		if seen[m.Position] {
			t.Fatalf("position %s delivered twice", m.Position)
		}
		seen[m.Position] = true
		if m.Kind == protocol.TypeMessage {
			got = append(got, string(m.Data))
			break
		}
		if told(m, m.Kind, "carol") {
			got = append(got, m.Kind+" carol")
		}
	}
	if want := fmt.Sprint([]string{"join carol", "leave carol", `"end"`}); fmt.Sprint(got) != want {
		t.Fatalf("after the resume %v, want %s", got, want)
	}
	// Her own new join comes right after her `subscribed`, which said recovered.
	for m := next(t, sub.Messages()); !(m.Kind == protocol.TypeJoin && slices.ContainsFunc(m.Members, func(w wsclient.Member) bool {
		return w.Session == alice.Session()
	})); m = next(t, sub.Messages()) {
	}
	if !sub.Recovered() {
		t.Fatal("not recovered")
	}
}
