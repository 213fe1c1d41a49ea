package router

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsgateway/gateway/protocol"
)

// testRetry is the router's retry policy with short intervals.
func testRetry(attempts int) wmw.Retry {
	return wmw.Retry{
		MaxRetries: attempts, InitialInterval: time.Microsecond, MaxInterval: time.Millisecond,
		Multiplier: 2, MaxElapsedTime: time.Minute,
		ShouldRetry: func(p wmw.RetryParams) bool {
			var pe *protocol.Error
			return !errors.As(p.Err, &pe)
		},
	}
}

// TestCountRetries: a message is tried once when it succeeds or its error may not be retried,
// 1 + MaxRetries times while it fails, until it succeeds; attempts after the first are counted,
// and a message whose context has ended is not tried.
func TestCountRetries(t *testing.T) {
	errBroker := errors.New("broker down")
	for _, tc := range []struct {
		name     string
		attempts int     // MaxRetries
		fails    int     // attempts that fail before one succeeds
		err      error   // what the failing attempts return
		calls    int     // handler calls expected
		retries  float64 // counted
		wantErr  error
	}{
		{"success", 3, 0, nil, 1, 0, nil},
		{"refusal not retried", 3, 5, protocol.Errorf(protocol.CodeForbidden, "no"), 1, 0, &protocol.Error{}},
		{"fails then succeeds", 3, 2, errBroker, 3, 2, nil},
		{"fails every attempt", 2, 10, errBroker, 3, 2, errBroker},
		{"no retries", 0, 10, errBroker, 1, 0, errBroker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"})
			calls := 0
			h := countRetries(testRetry(tc.attempts), counter)(func(*message.Message) ([]*message.Message, error) {
				if calls++; calls <= tc.fails {
					return nil, tc.err
				}
				return nil, nil
			})
			_, err := h(message.NewMessage("id", nil))
			switch want := tc.wantErr.(type) {
			case nil:
				if err != nil {
					t.Errorf("error %v, want none", err)
				}
			case *protocol.Error:
				if !errors.As(err, &want) {
					t.Errorf("error %v, want the refusal", err)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("error %v, want %v", err, want)
				}
			}
			if calls != tc.calls {
				t.Errorf("handler called %d times, want %d", calls, tc.calls)
			}
			if got := counted(counter); got != tc.retries {
				t.Errorf("retries counted %v, want %v", got, tc.retries)
			}
		})
	}
	t.Run("context ended", func(t *testing.T) {
		msg := message.NewMessage("id", nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		msg.SetContext(ctx)
		called := false
		h := countRetries(testRetry(3), prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"}))(
			func(*message.Message) ([]*message.Message, error) { called = true; return nil, nil })
		if _, err := h(msg); !errors.Is(err, context.Canceled) || called {
			t.Errorf("error %v, handler called %v; want context.Canceled, not called", err, called)
		}
	})
}

// TestCountRetriesFirstAttemptAllocs: a message that succeeds at once goes through without the
// retry middleware's backoff (which allocated some ten objects per message).
func TestCountRetriesFirstAttemptAllocs(t *testing.T) {
	h := countRetries(testRetry(3), prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"}))(
		func(*message.Message) ([]*message.Message, error) { return nil, nil })
	msg := message.NewMessage("id", nil)
	if n := testing.AllocsPerRun(100, func() { _, _ = h(msg) }); n > 0 {
		t.Errorf("%v allocations per message that succeeds at once, want 0", n)
	}
}

// BenchmarkCountRetries is the retry middleware around a handler that succeeds at once.
func BenchmarkCountRetries(b *testing.B) {
	h := countRetries(testRetry(3), prometheus.NewCounter(prometheus.CounterOpts{Name: "retries"}))(
		func(*message.Message) ([]*message.Message, error) { return nil, nil })
	msg := message.NewMessage("id", nil)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = h(msg)
	}
}

// counted is a counter's value.
func counted(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
