package service_test

import (
	"testing"
)

// TestEmitPosition: ToChannelPosition and ToUserPosition return the position clients see on the
// message, and a client that resumes from it gets exactly what came next.
func TestEmitPosition(t *testing.T) {
	c := newCluster(t)
	svc := c.service()
	alice, _ := c.dial("alice")
	alice.Subscribe("news")
	alice.Subscribe("$user")

	id, pos, err := svc.ToChannelPosition(ctx(t), "news", 1)
	if err != nil || id == "" || pos == "" {
		t.Fatalf("ToChannelPosition: %q %q %v", id, pos, err)
	}
	if m := alice.Expect("message"); m.Str("id") != id || m.Str("position") != pos {
		t.Fatalf("message %v; the emit returned id %s position %s", m, id, pos)
	}
	uid, upos, err := svc.ToUserPosition(ctx(t), "alice", "hi")
	if err != nil || upos == "" {
		t.Fatalf("ToUserPosition: %q %q %v", uid, upos, err)
	}
	if m := alice.Expect("message"); m.Str("channel") != "$user" || m.Str("id") != uid || m.Str("position") != upos {
		t.Fatalf("user message %v; the emit returned id %s position %s", m, uid, upos)
	}
	must(t)(svc.ToChannel(ctx(t), "news", 2)) // the old API still works
	alice.Expect("message")

	bob, _ := c.dial("bob")
	bob.Send(map[string]any{"type": "subscribe", "id": "r", "channel": "news", "since": pos})
	if m := bob.Expect("message"); m.Data() != "2" {
		t.Fatalf("resume from the emitted position: %v; want the next message, 2", m)
	}
	if s := bob.Expect("subscribed"); !s.Bool("recovered") {
		t.Fatalf("resume from the emitted position: %v", s)
	}
	if _, _, err := svc.ToChannelPosition(ctx(t), "bad channel", 1); err == nil {
		t.Fatal("ToChannelPosition took a bad channel name")
	}
}
