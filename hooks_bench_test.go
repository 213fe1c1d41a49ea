package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

// BenchmarkSubscribeHook measures a subscribe's round trip (subscribe to subscribed, then an
// unsubscribe) on one node of each broker: without a hook; with an HTTP subscribe hook on a
// local backend (an httptest server answering {}), and with that hook's cache; with the hook
// over the broker (a service's OnHooks on a broker connection of its own answering {}), and
// with its cache. Another connection holds the channel, so the node's broker subscription
// stays and each row adds only its hook to the same subscribe. It reports the p50 and p99.
// docs/performance.md ("Hooks (issue 14)") has the figures.
func BenchmarkSubscribeHook(b *testing.B) {
	backend := newHookBackend(b, func(protocol.HookRequest) *protocol.HookReply { return nil })
	for _, cb := range nodetest.Brokers {
		b.Run(cb.Name, func(b *testing.B) {
			newBroker := hookBrokers(b, cb)
			for _, bc := range []struct {
				name    string
				env     []string
				service bool // a service answers the hook over the broker
			}{
				{"none", nil, false},
				{"http", hookEnv(backend.URL, "subscribe"), false},
				{"http_cached", append(hookEnv(backend.URL, "subscribe"), "GATEWAY_HOOKS_SUBSCRIBE_CACHE=1h"), false},
				{"broker", []string{"GATEWAY_HOOKS_SUBSCRIBE_VIA=broker"}, true},
				{"broker_cached", []string{"GATEWAY_HOOKS_SUBSCRIBE_VIA=broker", "GATEWAY_HOOKS_SUBSCRIBE_CACHE=1h"}, true},
			} {
				b.Run(bc.name, func(b *testing.B) {
					env := append([]string{"GATEWAY_LIMITS_SUBSCRIBE_RATE=-1", "GATEWAY_HOOKS_SUBSCRIBE_TIMEOUT=10s"}, bc.env...)
					n := startNode(b, testConfig(b, env...), gateway.WithBroker(newBroker()))
					if bc.service {
						svc, err := service.New(newBroker(), nil)
						if err != nil {
							b.Fatal(err)
						}
						b.Cleanup(func() { _ = svc.Close() })
						err = svc.OnHooks(b.Context(), service.HookHandlers{Subscribe: func(context.Context, *protocol.HookRequest) (protocol.HookReply, error) {
							return protocol.HookReply{}, nil
						}})
						if err != nil {
							b.Fatal(err)
						}
					}
					wstest.WaitFor(b, func() error {
						if s := readyStatus(n.URL); s != 200 {
							return fmt.Errorf("/readyz %d", s)
						}
						return nil
					})
					holder, _ := wstest.Dial(b, n.URL, allowAll(b, "holder"))
					holder.Subscribe("room:1")
					c, _ := wstest.Dial(b, n.URL, allowAll(b, "alice"))
					round := func() time.Duration {
						start := time.Now()
						c.Send(`{"type":"subscribe","id":"s","channel":"room:1"}`)
						c.Expect("subscribed")
						took := time.Since(start)
						c.Send(`{"type":"unsubscribe","id":"u","channel":"room:1"}`)
						c.Expect("unsubscribed")
						return took
					}
					for range 20 { // the first calls wait for the services' group (kafka)
						round()
					}
					took := make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for range b.N {
						took = append(took, round())
					}
					b.StopTimer()
					slices.Sort(took)
					b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
				})
			}
		})
	}
}
