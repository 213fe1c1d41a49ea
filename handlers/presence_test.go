package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// recordingInbox keeps what is submitted.
type recordingInbox struct {
	mu   sync.Mutex
	msgs []*message.Message
}

func (r *recordingInbox) Submit(_ context.Context, m *message.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

// of returns the submitted messages of kind.
func (r *recordingInbox) of(kinds ...string) []*message.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*message.Message
	for _, m := range r.msgs {
		for _, k := range kinds {
			if m.Metadata.Get(protocol.MetaKind) == k {
				out = append(out, m)
			}
		}
	}
	return out
}

// joinAll is a broker presence that records every join and leave (the channel's first join is
// occupied, nothing is vacated) and keeps its OnReap.
type joinAll struct {
	transports.Presence
	reap func(channel string, m protocol.Member, vacated bool)
}

func (j *joinAll) Join(context.Context, string, protocol.Member) (bool, error) { return false, nil }
func (j *joinAll) Leave(context.Context, string, string) (bool, error)         { return false, nil }
func (j *joinAll) OnReap(fn func(string, protocol.Member, bool))               { j.reap = fn }

// TestPresenceCoalesced: with a window, the lifecycle events of each member are emitted at once,
// one per member, while the stream gets the window's joins as one message (an array of members,
// in order) and reaped leaves gathered too; Close publishes what is pending. The messages decode
// into the frames subscribers get: `members` for several, `member` for one.
func TestPresenceCoalesced(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	stream, events := &recordingInbox{}, &recordingInbox{}
	ev := newTestEvents(events)
	ev.Start()
	defer ev.Close(time.Second)
	broker := &joinAll{}
	p := NewPresence(PresenceConfig{NodeID: "n1", Presence: broker, Channels: []string{"room:*"}, JoinLeave: []string{"room:*"},
		Inbox: stream, Events: ev, Timeout: time.Second, Coalesce: time.Hour, Log: slog.New(slog.DiscardHandler)})
	for _, s := range []string{"a", "b", "c"} {
		p.Join("room:1", member(s))()
	}
	broker.reap("room:1", member("dead1"), false)
	broker.reap("room:1", member("dead2"), false)
	memberEvents := func() []string {
		var out []string
		for _, m := range events.of(protocol.KindEvent) {
			var e protocol.Event
			_ = json.Unmarshal(m.Payload, &e)
			if e.Type == protocol.EventMemberJoined || e.Type == protocol.EventMemberLeft {
				out = append(out, e.Type+" "+e.Session)
			}
		}
		slices.Sort(out) // the reaped are announced on goroutines of their own
		return out
	}
	want := []string{"member_joined a", "member_joined b", "member_joined c", "member_left dead1", "member_left dead2"}
	poll.Until(t, 10*time.Second, func() error { // before the window's end: at once
		if got := memberEvents(); !slices.Equal(got, want) {
			return fmt.Errorf("lifecycle events %q, want %q", got, want)
		}
		return nil
	})
	if got := stream.of(protocol.KindJoin, protocol.KindLeave); len(got) != 0 {
		t.Fatalf("%d join or leave messages before the window ended", len(got))
	}
	p.Close()
	p.Close()

	got := stream.of(protocol.KindJoin, protocol.KindLeave)
	if len(got) != 2 {
		t.Fatalf("%d messages, want the joins' and the leaves'", len(got))
	}
	var frames []string
	for i, m := range got {
		m.Metadata.Set(protocol.MetaPosition, fmt.Sprint(i+1))
		frame, _ := channelFrame(m, "room:1", "room:1")
		frames = append(frames, string(frame))
	}
	dead1, dead2 := `{"user":"u-dead1","session":"dead1","node":"n1"}`, `{"user":"u-dead2","session":"dead2","node":"n1"}`
	wantFrames := [][]string{
		{`{"type":"join","channel":"room:1","members":[{"user":"u-a","session":"a","node":"n1"},{"user":"u-b","session":"b","node":"n1"},{"user":"u-c","session":"c","node":"n1"}],"position":`},
		{`{"type":"leave","channel":"room:1","members":[` + dead1 + "," + dead2 + `],"position":`,
			`{"type":"leave","channel":"room:1","members":[` + dead2 + "," + dead1 + `],"position":`},
	}
	for i, f := range frames {
		if !slices.ContainsFunc(wantFrames[i], func(w string) bool { return strings.HasPrefix(f, w) }) {
			t.Fatalf("frame %d: %s\nwant it to start with one of %s", i, f, wantFrames[i])
		}
	}
}

// TestPresenceNotCoalesced: with a window of 0, each join is its own message at once, a member
// as the payload: the frame of one `member`.
func TestPresenceNotCoalesced(t *testing.T) {
	stream := &recordingInbox{}
	p := NewPresence(PresenceConfig{NodeID: "n1", Presence: &joinAll{}, Channels: []string{"room:*"}, JoinLeave: []string{"room:*"},
		Inbox: stream, Timeout: time.Second, Log: slog.New(slog.DiscardHandler)})
	defer p.Close()
	p.Join("room:1", member("a"))()
	p.Join("room:1", member("b"))()
	got := stream.of(protocol.KindJoin)
	if len(got) != 2 {
		t.Fatalf("%d messages, want 2", len(got))
	}
	frame, _ := channelFrame(got[1], "room:1", "room:1")
	if want := `{"type":"join","channel":"room:1","member":{"user":"u-b","session":"b","node":"n1"},"position":`; !strings.HasPrefix(string(frame), want) {
		t.Fatalf("frame %s, want it to start %s", frame, want)
	}
}

// TestJoinLeaveFrameRefusesBadMembers: a join whose payload is not a member, or an array with a
// member without a session, is not a join frame (it is delivered as a message, as before).
func TestJoinLeaveFrameRefusesBadMembers(t *testing.T) {
	for _, payload := range []string{`[]`, `[{"session":"a"},{"user":"x"}]`, `{"user":"x"}`, `[1,2]`} {
		m := message.NewMessage("id", []byte(payload))
		m.Metadata.Set(protocol.MetaKind, protocol.KindJoin)
		if _, ok := joinLeaveFrame(m, protocol.KindJoin, "room", "room", protocol.Position{}); ok {
			t.Errorf("payload %s made a join frame", payload)
		}
	}
}
