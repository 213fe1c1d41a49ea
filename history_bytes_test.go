package gateway_test

import (
	"strings"
	"testing"

	"github.com/wsgateway/gateway/internal/wstest"
)

// TestHistoryMaxBytes: on the embedded broker, history.max_bytes bounds the history of all
// channels together, oldest first: once a newer channel's messages pushed out an older one's, a
// resume from before the older ones answers recovered:false and replays nothing, and the newer
// channel still resumes.
func TestHistoryMaxBytes(t *testing.T) {
	// Messages of about 10 KB: five fit in 60,000 bytes, six do not.
	n := startNode(t, testConfig(t, "GATEWAY_HISTORY_MAX_BYTES=60000"))
	pub, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	payload := strings.Repeat("x", 10000)
	publish := func(channel string) (before string) {
		t.Helper()
		before = pub.Subscribe(channel).Str("position")
		for range 5 {
			mustAPIPublish(t, n.URL, map[string]any{"channel": channel, "data": payload})
			pub.Expect("message")
		}
		return before
	}
	resume := func(channel, since string) (int, bool) {
		t.Helper()
		replayed, recovered := resumeOn(t, n.URL, "bob", channel, since)
		return len(replayed), recovered
	}
	old := publish("old")
	young := publish("young")
	if got, ok := resume("old", old); ok || got != 0 {
		t.Fatalf("resume of the evicted channel: %d replayed, recovered %v; want 0, false", got, ok)
	}
	if got, ok := resume("young", young); !ok || got != 5 {
		t.Fatalf("resume of the newest channel: %d replayed, recovered %v; want 5, true", got, ok)
	}
}
