package memory

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestRemoveSubLeavesNoReference: a subscription taken out of a topic is not left in the array
// behind the slice, where it would stay reachable (and with it its relay and context) for as
// long as the topic lives.
func TestRemoveSubLeavesNoReference(t *testing.T) {
	a, b, c := &funcSub{}, &funcSub{}, &funcSub{}
	for _, gone := range []*funcSub{a, b, c} {
		tp := &topic{subs: []sink{a, b, c}}
		tp.removeSub(gone)
		if len(tp.subs) != 2 {
			t.Fatalf("%d subscriptions left of 3 after removing one", len(tp.subs))
		}
		for i, s := range tp.subs[:cap(tp.subs)] {
			if s == sink(gone) {
				t.Fatalf("the removed subscription is still at index %d of the array (length %d)", i, len(tp.subs))
			}
		}
	}
}

// TestPresenceRecordsAgain: a node whose lease ran out while it lived (its renewal paused) has
// its members reaped, OnReap called once each on the other node; once it renews again, its
// broker records its members again from its own record, without what it left meanwhile.
func TestPresenceRecordsAgain(t *testing.T) {
	hb := 50 * time.Millisecond
	b := NewBroker(Config{Presence: transports.PresenceConfig{Heartbeat: hb}})
	defer b.Close()
	stalled, other := b.Node("p"), b.Node("p")
	defer stalled.Close()
	defer other.Close()
	var mu sync.Mutex
	reaped := map[string]int{}
	other.OnReap(func(channel string, m protocol.Member, vacated bool) {
		mu.Lock()
		defer mu.Unlock()
		reaped[m.Session]++
	})
	ctx := t.Context()
	for _, s := range []string{"s1", "s2"} {
		if _, err := stalled.Join(ctx, "c", protocol.Member{Session: s, Node: "stalled"}); err != nil {
			t.Fatal(err)
		}
	}
	members := func() []string {
		ms, _, err := other.Members(ctx, "c", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range ms {
			out = append(out, m.Session)
		}
		return out
	}
	stalled.paused.Store(true)
	poll.Until(t, 5*time.Second, func() error {
		if got := members(); len(got) != 0 {
			return fmt.Errorf("members %v while the lease ran out", got)
		}
		return nil
	})
	mu.Lock()
	if len(reaped) != 2 || reaped["s1"] != 1 || reaped["s2"] != 1 {
		t.Fatalf("OnReap calls %v, want s1 and s2 once", reaped)
	}
	mu.Unlock()
	// While its lease is gone the node leaves s2: only s1 comes back.
	if vacated, err := stalled.Leave(ctx, "c", "s2"); err != nil || vacated {
		t.Fatalf("Leave while the lease is gone: vacated %v, err %v", vacated, err)
	}
	stalled.paused.Store(false)
	poll.Until(t, 5*time.Second, func() error {
		if got := members(); len(got) != 1 || got[0] != "s1" {
			return fmt.Errorf("members %v after the renewal, want [s1]", got)
		}
		return nil
	})
}

// slept is the time the janitor last set its timer to after a pass, -1 for no deadline, 0
// before its first pass.
func (b *Broker) slept() time.Duration {
	b.mu.Lock()
	j := b.janitor
	b.mu.Unlock()
	if j == nil {
		return 0
	}
	return time.Duration(j.sleep.Load())
}

// TestJanitorSleepsUntilExpiry: the history janitor plans its next pass for when the oldest kept
// message expires (an hour away here), not every expireEvery; a message of a shorter TTL kept
// meanwhile wakes it and is dropped in the background as before; with nothing kept it sleeps
// with no deadline, and the next message kept wakes it again.
func TestJanitorSleepsUntilExpiry(t *testing.T) {
	b := NewBroker(Config{HistorySize: 10, HistoryTTL: time.Hour, Bounds: func(topic string) (int, time.Duration) {
		if topic == protocol.ChannelTopic("short") {
			return 0, time.Millisecond
		}
		return 0, 0
	}})
	defer b.Close()
	n := b.Node("p")
	defer n.Close()
	sleepsLong := func() error {
		if d := b.slept(); d < 30*time.Minute {
			return fmt.Errorf("the janitor set its timer to %v, want about an hour", d)
		}
		return nil
	}
	if err := n.Publish(protocol.ChannelTopic("long"), transporttest.NewMessage("an hour")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, sleepsLong)
	if err := n.Publish(protocol.ChannelTopic("short"), transporttest.NewMessage("a millisecond")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if got := b.Topics(); got != 1 {
			return fmt.Errorf("%d topics kept, want 1 (short's history expired, nothing read it)", got)
		}
		return sleepsLong()
	})

	empty := NewBroker(Config{HistorySize: 10, HistoryTTL: time.Millisecond})
	defer empty.Close()
	e := empty.Node("p")
	defer e.Close()
	for round := range 2 {
		if err := e.Publish(protocol.ChannelTopic("c"), transporttest.NewMessage("brief")); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, func() error {
			if got := empty.Topics(); got != 0 {
				return fmt.Errorf("round %d: %d topics kept after the history expired", round, got)
			}
			if d := empty.slept(); d != -1 {
				return fmt.Errorf("round %d: the janitor set its timer to %v with nothing kept, want none", round, d)
			}
			return nil
		})
	}
}
