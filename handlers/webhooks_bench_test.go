package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/memory"
)

// BenchmarkWebhooks: events through one node's webhooks, from the events topic (memory broker)
// to a local receiver that answers 200 at once, by webhooks.batch. ns/op is per event.
func BenchmarkWebhooks(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			var got atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var body protocol.WebhookBatch
				raw, _ := io.ReadAll(r.Body)
				_ = json.Unmarshal(raw, &body)
				got.Add(int64(len(body.Events)))
			}))
			defer srv.Close()
			br := memory.NewBroker(memory.Config{})
			defer br.Close()
			n := br.Node("bench")
			defer n.Close()
			w := NewWebhooks(WebhooksConfig{URL: srv.URL, Format: GatewayWebhookFormat{Secret: []byte(hookSecret)},
				Events: protocol.EventTypes, Batch: batch, BatchWait: time.Millisecond, Timeout: 5 * time.Second,
				RetryInitial: time.Millisecond, RetryMax: time.Millisecond, RetryBudget: time.Minute,
				Broker: n, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)})
			if err := w.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			payload, _ := json.Marshal(protocol.Event{Type: protocol.EventConnected, User: "u", Session: "s", Node: "n", At: time.Now()})
			b.ResetTimer()
			for range b.N {
				if err := n.Publish(protocol.TopicEvents, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					b.Fatal(err)
				}
			}
			deadline := time.Now().Add(time.Minute)
			for got.Load() < int64(b.N) { // the clock runs until every event arrived
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d events arrived within a minute", got.Load(), b.N)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}
