//go:build !race

package nats_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceReapBound: a node killed (Close, which sends nothing, as SIGKILL) at any point of
// its heartbeat cycle loses its member within 2 heartbeats (1 s each) of the kill, with one
// OnReap. It asserts a time, so it runs without the race detector only.
func TestPresenceReapBound(t *testing.T) {
	srv := startServer(t, 0)
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.RunReapBound(t, transporttest.ReapBoundFeatures{
		Kill: func(t *testing.T, node transports.Broker) { _ = node.Close() },
	}, func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		return presenceNode(t, url, prefix, nodeID, heartbeat)
	})
}

// TestPresenceReapBoundDeadOwner: as TestPresenceReapBound, but the node killed owns the
// channel: its backup, the new owner, reaps its member from its copy once the sync of the new
// view is complete, still within 2 heartbeats of the kill.
func TestPresenceReapBoundDeadOwner(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	const hb = time.Second
	node := func(id string) *nats.Broker {
		n := presenceNode(t, url, prefix, id, hb)
		n.OnReap(reaps.fn)
		if err := n.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a, b := node("a"), node("b")
	want, vacated := map[string]int{}, map[string]int{}
	var took []string
	const trials = 4
	for i := range trials {
		id := fmt.Sprintf("owner%d", i)
		ch := ""
		for j := 0; ch == ""; j++ {
			if c := fmt.Sprintf("dead-owner-%d-%d", i, j); nats.Owner([]string{"a", "b", id}, c) == id {
				ch = c
			}
		}
		dying := node(id)
		wantView(t, a, "a", "b", id)
		wantView(t, b, "a", "b", id)
		mustJoin(t, a, ch, "a-"+ch)
		mustJoin(t, dying, ch, "d-"+ch)
		wantMembers(t, b, ch, "a-"+ch, "d-"+ch)
		time.Sleep(time.Duration(i) * hb / trials) // a phase of the heartbeat cycle, not a wait for something
		_ = dying.Close()                          // as SIGKILLed: it sends nothing
		killed := time.Now()
		want[ch+"/d-"+ch] = 1
		var gone time.Duration
		transporttest.WaitFor(t, 10*hb, func() error {
			ms, err := transporttest.AllMembers(t.Context(), b, ch, 100)
			if err != nil {
				return err
			}
			if got := transporttest.Sessions(ms); !slices.Equal(got, []string{"a-" + ch}) {
				return fmt.Errorf("members of %s: %v", ch, got)
			}
			if err := reaps.check(want, vacated); err != nil {
				return err
			}
			gone = time.Since(killed)
			return nil
		})
		took = append(took, gone.Round(time.Millisecond).String())
		if gone > 2*hb {
			t.Errorf("trial %d: the member of the dead owner of %s was reaped %v after the kill; the bound is %v", i, ch, gone.Round(time.Millisecond), 2*hb)
		}
	}
	t.Logf("kill to reap, dead owner, heartbeat %v: %v (bound %v)", hb, took, 2*hb)
}
