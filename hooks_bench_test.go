package gateway_test

import (
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

// BenchmarkSubscribeHook measures a subscribe's round trip (subscribe to subscribed, then an
// unsubscribe) on one memory node: without a hook, with an HTTP subscribe hook on a local
// backend, and with that hook's cache; it reports the p50 and p99 of the subscribe.
func BenchmarkSubscribeHook(b *testing.B) {
	backend := newHookBackend(b, func(protocol.HookRequest) *protocol.HookReply { return nil })
	for _, bc := range []struct {
		name string
		env  []string
	}{
		{"none", []string{"GATEWAY_LIMITS_SUBSCRIBE_RATE=-1"}},
		{"http", append(hookEnv(backend.URL, "subscribe"), "GATEWAY_LIMITS_SUBSCRIBE_RATE=-1")},
		{"http_cached", append(hookEnv(backend.URL, "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CACHE=1h", "GATEWAY_LIMITS_SUBSCRIBE_RATE=-1")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := startNode(b, testConfig(b, bc.env...))
			c, _ := wstest.Dial(b, n.URL, allowAll(b, "alice"))
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				c.Send(`{"type":"subscribe","id":"s","channel":"room:1"}`)
				c.Expect("subscribed")
				took = append(took, time.Since(start))
				c.Send(`{"type":"unsubscribe","id":"u","channel":"room:1"}`)
				c.Expect("unsubscribed")
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
		})
	}
}
