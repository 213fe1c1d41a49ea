package handlers_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/nats"
)

// publishing submits each event by publishing it on a broker, as the router's events handler
// does once the event went through the middleware.
type publishing struct {
	pub interface {
		Publish(topic string, msgs ...*message.Message) error
	}
	n atomic.Int64
}

func (p *publishing) Submit(_ context.Context, msg *message.Message) error {
	err := p.pub.Publish("events", msg)
	p.n.Add(1)
	return err
}

// BenchmarkEventsDrain: how fast a connect storm's lifecycle events reach core NATS, one event
// per op (connected, then subscribed, of b.N/2 sessions).
func BenchmarkEventsDrain(b *testing.B) {
	nodetest.SkipUnreachable(b, "NATS", "127.0.0.1:4222")
	br, err := nats.New(nats.Config{URL: "nats://127.0.0.1:4222", Prefix: "evbench-" + watermill.NewShortUUID()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	sub := &publishing{pub: br}
	m := metrics.New()
	e := handlers.NewEvents(handlers.EventsConfig{NodeID: "n1", Inbox: sub, Queue: b.N + 16, PublishTimeout: 5 * time.Second,
		Metrics: m, Log: slog.New(slog.DiscardHandler)})
	e.Start()
	defer e.Close(time.Minute)
	b.ResetTimer()
	for i := range b.N {
		typ := protocol.EventConnected
		if i%2 == 1 {
			typ = protocol.EventSubscribed
		}
		e.Emit(protocol.Event{Type: typ, Session: "s" + watermill.NewShortUUID()[:4], User: "u"})
	}
	poll.Until(b, time.Minute, func() error {
		if n := sub.n.Load(); n < int64(b.N) {
			return fmt.Errorf("%d of %d events submitted", n, b.N)
		}
		return nil
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
