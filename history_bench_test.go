package gateway_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// BenchmarkHistoryPage: one GET /api/history page of 100 messages, newest first, and one
// forward from a position 500 back, of a channel whose 1000 messages are interleaved with 1000
// of other channels (which share its Redis shard or Kafka partition at times), per broker with
// history.
//
//	go test -run '^$' -bench BenchmarkHistoryPage -benchtime 200x .
func BenchmarkHistoryPage(b *testing.B) {
	for _, cb := range clusterBrokers {
		if !cb.History {
			continue
		}
		b.Run(cb.Name, func(b *testing.B) {
			nodes := historyNodes(b, cb.Setup(b).New)
			base := nodes[0].URL
			var pos []string
			for i := 0; i < 1000; i++ {
				_, out := apiPublish(b, base, map[string]any{"channel": "bench", "data": i})
				pos = append(pos, out["position"].(string))
				apiPublish(b, base, map[string]any{"channel": fmt.Sprintf("other-%d", i%50), "data": i})
			}
			for _, c := range []struct {
				name string
				q    url.Values
			}{
				{"reverse-newest-100", q("channel", "bench", "reverse", "true", "limit", "100")},
				{"forward-100-from-500-back", q("channel", "bench", "since", pos[499], "limit", "100")},
				{"reverse-100-from-500-back", q("channel", "bench", "reverse", "true", "since", pos[499], "limit", "100")},
			} {
				b.Run(c.name, func(b *testing.B) {
					for range b.N {
						if status, out := apiGet(b, base, "/api/history", c.q); status != http.StatusOK || len(out["messages"].([]any)) != 100 {
							b.Fatalf("%d %v", status, out["error"])
						}
					}
				})
			}
		})
	}
}
