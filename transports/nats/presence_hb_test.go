package nats_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestPresenceHeartbeatConnection: a Broker that takes part in presence publishes and hears the
// heartbeats on a connection of its own, which Close closes; one that only asks has one
// connection, and one given its connection (NewWithConn) makes no other: its heartbeats share
// that connection, and it takes part all the same.
func TestPresenceHeartbeatConnection(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	clients := func(want int) {
		t.Helper()
		transporttest.WaitFor(t, 10*time.Second, func() error {
			if n := srv.NumClients(); n != want {
				return fmt.Errorf("%d connections on the server, want %d", n, want)
			}
			return nil
		})
	}
	newNode(t, url, prefix) // asks only
	clients(1)
	a := startPresenceNode(t, url, prefix, "a", reaps)
	clients(3)

	nc, err := natsgo.Connect(url, natsgo.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w, err := nats.NewWithConn(nc, nats.Config{Prefix: prefix, Name: "w", Presence: transports.PresenceConfig{Heartbeat: presenceHB}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	w.OnReap(reaps.fn)
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	clients(4)
	wantView(t, a, "a", "w")
	wantView(t, w, "a", "w")

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	clients(2)
	wantView(t, w, "w") // a's heartbeats stopped with it
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	clients(2) // the given connection stays open
	if !nc.IsConnected() {
		t.Fatal("the given connection was closed")
	}
}

// TestPresenceBusyNodeBeats: a node busy under its presence lock (as while it encodes a large
// sync) goes on beating: its peer keeps hearing it, and keeps it in its view.
func TestPresenceBusyNodeBeats(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	wantView(t, a, "a", "b")
	done := b.Busy()
	defer done()
	since := time.Now()
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if at := a.HeardAt("b"); !at.After(since.Add(2 * presenceHB)) {
			return fmt.Errorf("a heard b last at %v; b busy since %v", at.Format(time.StampMilli), since.Format(time.StampMilli))
		}
		return nil
	})
	if v := a.ViewIDs(); !slices.Equal(v, []string{"a", "b"}) {
		t.Fatalf("view of a: %v, want [a b]", v)
	}
}

// TestPresenceBackWhileWaiting: a request to sync "back" (the asker had dropped this node and
// took it back) that comes while this node still waits for the asker's sync of its own round
// starts no second round: the asker sent that sync after the request, so it is newer (a node
// that starts, which each side takes in at once, is synced once, not twice). Once the asker's
// sync came, such a request starts a round again.
func TestPresenceBackWhileWaiting(t *testing.T) {
	srv := startServer(t, 0)
	t.Cleanup(func() { stopServer(srv) })
	url, prefix, reaps := serverURL(srv), transporttest.Prefix(t), newReapCounter()
	a := startPresenceNode(t, url, prefix, "a", reaps)
	b := startPresenceNode(t, url, prefix, "b", reaps)
	wantView(t, a, "a", "b")
	wantView(t, b, "a", "b")
	synced := func(n *nats.Broker) {
		t.Helper()
		transporttest.WaitFor(t, 10*time.Second, func() error {
			if !n.Synced() {
				return fmt.Errorf("%s not synced", n.NodeID())
			}
			return nil
		})
	}
	synced(b)

	done := a.Busy() // a answers no sync meanwhile
	b.Resync()       // b waits for a's sync
	e := b.Epoch()
	b.InjectBackSync("a", a.Incarnation(), 1000)
	if got := b.Epoch(); got != e {
		done()
		t.Fatalf("b started round %d on a request to sync back while it waited for a's sync of round %d", got, e)
	}
	done()
	synced(b)
	b.InjectBackSync("a", a.Incarnation(), 1001)
	if got := b.Epoch(); got != e+1 {
		t.Fatalf("b is at round %d after a request to sync back once synced; want %d", got, e+1)
	}
	synced(b)
}
