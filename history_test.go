package gateway_test

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/wstest"
)

// TestHistoryBoundsPerPattern: history.channels bounds, per channel pattern, how many messages
// (count) and how old (age) a resume may reach back, on every broker that keeps history; a
// resume beyond the bound answers recovered:false and replays nothing; channels that no rule
// matches keep the broker's own bounds. Messages are published on one node and resumed on
// another.
func TestHistoryBoundsPerPattern(t *testing.T) {
	for _, cb := range clusterBrokers {
		if !cb.History {
			continue
		}
		t.Run(cb.Name, func(t *testing.T) {
			t.Parallel()
			cl := cb.Setup(t)
			newBroker, prefix := cl.New, cl.Prefix(t)
			rules := "GATEWAY_HISTORY_CHANNELS=short:*=3,stale:*=/200ms,young:*=/1h,$user=2"
			var nodes [2]*node
			for i := range nodes {
				cfg := testConfig(t, "GATEWAY_NODE_ID=h"+strconv.Itoa(i+1), rules)
				nodes[i] = startNode(t, cfg, gateway.WithBroker(newBroker(t, prefix)))
				wstest.WaitFor(t, func() error {
					if s := readyStatus(nodes[i].URL); s != 200 {
						return fmt.Errorf("/readyz %d", s)
					}
					return nil
				})
			}
			pub, _ := wstest.Dial(t, nodes[0].URL, allowAll(t, "alice"))

			// publish sends n messages to channel (or to alice's $user when channel is "$user")
			// and returns the position before them and the position of each.
			publish := func(channel string, n int) (before string, positions []string) {
				t.Helper()
				before = pub.Subscribe(channel).Str("position")
				for i := 0; i < n; i++ {
					body := map[string]any{"channel": channel, "data": i}
					if channel == "$user" {
						body = map[string]any{"user": "alice", "data": i}
					}
					mustAPIPublish(t, nodes[0].URL, body)
					positions = append(positions, pub.Expect("message").Str("position"))
				}
				return before, positions
			}
			// resume subscribes on node 2 from since and returns the replayed data and recovered.
			resume := func(channel, since string) ([]string, bool) {
				t.Helper()
				return resumeOn(t, nodes[1].URL, "alice", channel, since)
			}

			// Count: short:* keeps 3 for resuming; 3 missed are replayed, 4 are not.
			before, pos := publish("short:a", 5)
			if got, ok := resume("short:a", pos[1]); !ok || fmt.Sprint(got) != "[2 3 4]" {
				t.Fatalf("short:a, 3 missed: replayed %v recovered %v; want [2 3 4] true", got, ok)
			}
			if got, ok := resume("short:a", pos[0]); ok || len(got) != 0 {
				t.Fatalf("short:a, 4 missed: replayed %v recovered %v; want nothing, false", got, ok)
			}
			if got, ok := resume("short:a", before); ok || len(got) != 0 {
				t.Fatalf("short:a, 5 missed: replayed %v recovered %v; want nothing, false", got, ok)
			}
			// A channel no rule matches keeps the broker's bounds (and max_replay 1000).
			before, _ = publish("long:a", 5)
			if got, ok := resume("long:a", before); !ok || len(got) != 5 {
				t.Fatalf("long:a, 5 missed: replayed %v recovered %v; want 5, true", got, ok)
			}
			// $user has a rule of its own.
			before, pos = publish("$user", 3)
			if got, ok := resume("$user", pos[0]); !ok || fmt.Sprint(got) != "[1 2]" {
				t.Fatalf("$user, 2 missed: replayed %v recovered %v; want [1 2] true", got, ok)
			}
			if got, ok := resume("$user", before); ok || len(got) != 0 {
				t.Fatalf("$user, 3 missed: replayed %v recovered %v; want nothing, false", got, ok)
			}

			// Age: young:* keeps an hour; stale:* keeps 200 ms, so once the missed message is
			// older than that the resume is refused. Poll: the age passes, whatever the load.
			before, _ = publish("young:a", 2)
			if got, ok := resume("young:a", before); !ok || len(got) != 2 {
				t.Fatalf("young:a: replayed %v recovered %v; want 2, true", got, ok)
			}
			before, _ = publish("stale:a", 2)
			wstest.WaitFor(t, func() error {
				if got, ok := resume("stale:a", before); ok || len(got) != 0 {
					return fmt.Errorf("stale:a: replayed %v recovered %v; want nothing, false", got, ok)
				}
				return nil
			})
		})
	}
}

// resumeOn subscribes a new connection of user on the node at base to channel from since, and
// returns the data of the replayed messages and whether the reply said recovered.
func resumeOn(t *testing.T, base, user, channel, since string) (replayed []string, recovered bool) {
	t.Helper()
	r, _ := wstest.Dial(t, base, allowAll(t, user))
	defer r.Conn.Close()
	r.Send(map[string]any{"type": "subscribe", "id": "r", "channel": channel, "since": since})
	for {
		f := r.Next()
		switch f.Str("type") {
		case "message":
			replayed = append(replayed, f.Data())
		case "subscribed":
			return replayed, f.Bool("recovered")
		default:
			t.Fatalf("resume %s: %v", channel, f)
		}
	}
}
