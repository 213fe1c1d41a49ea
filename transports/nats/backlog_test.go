package nats

import "testing"

// TestBacklogBehind: a subscription counts as behind only when a message that was there half a
// heartbeat ago (two samples back) has not reached its handler yet; a queue that is never
// empty but keeps moving (an owner during a join storm) is not behind.
func TestBacklogBehind(t *testing.T) {
	type sample struct {
		delivered, pending int64
		behind             bool
	}
	for _, tc := range []struct {
		name    string
		samples []sample
	}{
		{"idle", []sample{{0, 0, false}, {0, 0, false}, {0, 0, false}, {0, 0, false}}},
		{"a storm that keeps moving", []sample{{0, 5, false}, {40, 6, false}, {90, 4, false}, {130, 7, false}, {175, 5, false}}},
		{"a handler stuck on one message", []sample{{10, 1, false}, {10, 3, false}, {10, 9, true}, {10, 12, true}}},
		{"stuck, then caught up", []sample{{0, 4, false}, {2, 2, false}, {3, 1, true}, {4, 0, false}, {4, 0, false}}},
		{"the first two samples judge nothing", []sample{{0, 9, false}, {0, 9, false}, {0, 9, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q backlog
			for i, s := range tc.samples {
				if got := q.behind(s.delivered, s.pending); got != s.behind {
					t.Fatalf("sample %d (%d delivered, %d pending): behind %v, want %v", i, s.delivered, s.pending, got, s.behind)
				}
			}
		})
	}
}
