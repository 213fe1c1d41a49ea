package middleware_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/router/middleware"
)

func TestObserveCountsByOutcomeAndTimesEveryMessage(t *testing.T) {
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "handled"}, []string{"handler", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration"}, []string{"handler"})
	ok, failing := &counting{}, &counting{err: errors.New("boom")}
	observe := middleware.Observe(handled, duration)

	for i := 0; i < 2; i++ {
		if _, err := observe(ok.handle)(newMsg("ok")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := observe(failing.handle)(newMsg("bad")); err == nil {
		t.Fatal("Observe swallowed the handler's error")
	}
	// Outside a router the handler name is "".
	if n := counterValue(t, handled.WithLabelValues("", "ack")); n != 2 {
		t.Fatalf("ack count %v, want 2", n)
	}
	if n := counterValue(t, handled.WithLabelValues("", "error")); n != 1 {
		t.Fatalf("error count %v, want 1", n)
	}
	if n := histogramCount(t, duration.WithLabelValues("")); n != 3 {
		t.Fatalf("%d handling times observed, want 3", n)
	}
}

func TestObserveCountsEachHandlerOfARouterOnItsOwnSeries(t *testing.T) {
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "handled"}, []string{"handler", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration"}, []string{"handler"})
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	r.AddMiddleware(middleware.Observe(handled, duration))
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	var wg sync.WaitGroup
	wg.Add(5)
	for _, name := range []string{"a", "b"} {
		r.AddConsumerHandler(name, name, pubsub, func(*message.Message) error { wg.Done(); return nil })
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	<-r.Running()
	for _, topic := range []string{"a", "b", "b", "a", "a"} {
		if err := pubsub.Publish(topic, newMsg("x")); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := r.Close(); err != nil { // waits for the handlers, Observe included
		t.Fatal(err)
	}
	if a, b := counterValue(t, handled.WithLabelValues("a", "ack")), counterValue(t, handled.WithLabelValues("b", "ack")); a != 3 || b != 2 {
		t.Fatalf("acks a %v, b %v; want 3 and 2", a, b)
	}
	if a, b := histogramCount(t, duration.WithLabelValues("a")), histogramCount(t, duration.WithLabelValues("b")); a != 3 || b != 2 {
		t.Fatalf("handling times a %d, b %d; want 3 and 2", a, b)
	}
}

// BenchmarkObserve is one message through Observe around a handler that does nothing.
func BenchmarkObserve(b *testing.B) {
	handled := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "handled"}, []string{"handler", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration"}, []string{"handler"})
	h := middleware.Observe(handled, duration)((&counting{}).handle)
	msg := newMsg("x")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = h(msg)
	}
}
