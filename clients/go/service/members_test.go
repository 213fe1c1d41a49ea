package service_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/memory"
)

var presenceEnv = []string{"GATEWAY_PRESENCE_CHANNELS=room:*"}

// checkMembers connects alice (two tabs) and bob to the node at url, in room:1 and room:2, and
// reads their presence through svc, which shares the node's broker.
func checkMembers(t *testing.T, url string, svc *service.Service) {
	dial := func(user string) (*wstest.Client, string) {
		tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"})
		if err != nil {
			t.Fatal(err)
		}
		cl, w := wstest.Dial(t, url, tok)
		return cl, w.Str("session")
	}
	a1, s1 := dial("alice")
	a2, s2 := dial("alice")
	b, s3 := dial("bob")
	for _, cl := range []*wstest.Client{a1, a2, b} {
		cl.Subscribe("room:1")
	}
	b.Subscribe("room:2")

	want := map[string]string{s1: "alice", s2: "alice", s3: "bob"}
	poll.Until(t, wait, func() error {
		st, err := svc.PresenceStats(ctx(t), "room:1")
		if err != nil || st != (protocol.PresenceStats{Connections: 3, Users: 2}) {
			return fmt.Errorf("stats %+v, %v", st, err)
		}
		return nil
	})
	// Page by 2: every member once, in session order.
	var got []protocol.Member
	after := ""
	for range 3 {
		ms, next, err := svc.Members(ctx(t), "room:1", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ms...)
		if next == "" {
			break
		}
		after = next
	}
	if len(got) != 3 {
		t.Fatalf("members %+v", got)
	}
	for i, m := range got {
		if want[m.Session] != m.User || m.Node != "node-a" || (i > 0 && m.Session <= got[i-1].Session) {
			t.Fatalf("members %+v", got)
		}
	}
	cs, next, err := svc.Channels(ctx(t), "room:", "", 1)
	if err != nil || len(cs) != 1 || next != "room:1" || cs[0] != (protocol.ChannelStats{Channel: "room:1", PresenceStats: protocol.PresenceStats{Connections: 3, Users: 2}}) {
		t.Fatalf("channels %+v next %q, %v", cs, next, err)
	}
	cs, next, err = svc.Channels(ctx(t), "room:", next, 0)
	if err != nil || len(cs) != 1 || next != "" || cs[0].Channel != "room:2" || cs[0].Connections != 1 {
		t.Fatalf("channels %+v next %q, %v", cs, next, err)
	}
	if ms, next, err := svc.Members(ctx(t), "nobody", "", 0); err != nil || len(ms) != 0 || ms == nil || next != "" {
		t.Fatalf("members of an empty channel %v %q, %v", ms, next, err)
	}

	// A leave is seen.
	a2.Conn.Close()
	poll.Until(t, wait, func() error {
		st, err := svc.PresenceStats(ctx(t), "room:1")
		if err != nil || st != (protocol.PresenceStats{Connections: 2, Users: 2}) {
			return fmt.Errorf("stats %+v, %v", st, err)
		}
		return nil
	})

	for _, limit := range []int{-1, protocol.MaxPresencePage + 1} {
		if _, _, err := svc.Members(ctx(t), "room:1", "", limit); !errors.Is(err, service.ErrInvalid) {
			t.Fatalf("limit %d: %v", limit, err)
		}
	}
	if _, err := svc.PresenceStats(ctx(t), "bad channel"); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("bad channel: %v", err)
	}
}

// TestMembersOnMemory: a Service on the memory broker a gateway node uses reads its presence.
func TestMembersOnMemory(t *testing.T) {
	c := newCluster(t, presenceEnv...)
	svc := c.service()
	checkMembers(t, c.URL, svc)

	// After Close: ErrClosed.
	_ = svc.Close()
	if _, err := svc.PresenceStats(ctx(t), "room:1"); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// noPresence hides the presence of a broker.
type noPresence struct{ transports.Broker }

func TestMembersWithoutPresence(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	svc, err := service.New(noPresence{broker.Node("np")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, _, err := svc.Members(ctx(t), "room:1", "", 0); !errors.Is(err, service.ErrNoPresence) {
		t.Fatalf("Members: %v", err)
	}
	if _, err := svc.PresenceStats(ctx(t), "room:1"); !errors.Is(err, service.ErrNoPresence) {
		t.Fatalf("PresenceStats: %v", err)
	}
	if _, _, err := svc.Channels(ctx(t), "", "", 0); !errors.Is(err, service.ErrNoPresence) {
		t.Fatalf("Channels: %v", err)
	}
}

// TestMembersOnBrokers: the same on redis and jetstream (when reachable), the service building
// its broker as a separate process would. The service's broker reads only: on redis, the only
// lease is the node's.
func TestMembersOnBrokers(t *testing.T) {
	for _, tc := range []struct {
		broker, addr string
	}{
		{"jetstream", "127.0.0.1:4222"},
		{"redis", "127.0.0.1:6379"},
	} {
		t.Run(tc.broker, func(t *testing.T) {
			if !nodetest.Reachable(tc.addr) {
				t.Skipf("no %s server on %s", tc.broker, tc.addr)
			}
			prefix := nodetest.SharedPrefix(t)
			cfg := testConfig(t, append([]string{"GATEWAY_BROKER=" + tc.broker, "GATEWAY_TOPIC_PREFIX=" + prefix,
				"GATEWAY_NATS_URL=nats://" + tc.addr, "GATEWAY_REDIS_ADDR=" + tc.addr,
				"GATEWAY_JETSTREAM_MAX_AGE=1h", "GATEWAY_JETSTREAM_MAX_BYTES=16777216",
				"GATEWAY_PRESENCE_HEARTBEAT=100ms"}, presenceEnv...)...)
			url := startNode(t, cfg)
			svc, err := service.New(newBroker(t, cfg), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := svc.Start(ctx(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			checkMembers(t, url, svc)
			if tc.broker == "redis" {
				rc := goredis.NewClient(&goredis.Options{Addr: tc.addr})
				defer rc.Close()
				key := "{" + prefix + ":presence}:leases"
				if n, err := rc.ZCard(ctx(t), key).Result(); err != nil || n != 1 {
					t.Fatalf("%s holds %d leases (%v), want the node's only", key, n, err)
				}
			}
		})
	}
}
