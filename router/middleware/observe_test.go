package middleware_test

import (
	"errors"
	"testing"

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
