package memory

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
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
