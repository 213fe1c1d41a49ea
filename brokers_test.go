package gateway_test

import (
	"context"
	"errors"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// badStarts build, for the brokers whose Start can fail, a broker whose Start fails: nats.go
// refuses an option, a CA file that is not there (New does no I/O, so only Start finds out).
var badStarts = map[string]func() (transports.Broker, error){
	"nats": func() (transports.Broker, error) {
		return nats.New(nats.Config{URL: "nats://" + nodetest.NATSAddr, Options: []natsgo.Option{natsgo.RootCAs("/no/such/ca.pem")}}, nil)
	},
	"jetstream": func() (transports.Broker, error) {
		return jetstream.New(jetstream.Config{URL: "nats://" + nodetest.NATSAddr, Options: []natsgo.Option{natsgo.RootCAs("/no/such/ca.pem")}}, nil)
	},
}

// oncePerProcess is the goroutine sarama's metrics start with the first Kafka client of the
// process (go-metrics' meter arbiter) and never stop: not the broker's.
var oncePerProcess = goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick")

// TestBrokerLifecycle: on every broker, New starts no goroutine and does nothing a caller can
// use (ErrNotStarted, which is an ErrUnavailable); Start starts the broker once (a second Start
// does nothing) and Close stops all of it; Close works without Start and twice, and a Start after
// Close fails with ErrClosed; a Start that fails leaves nothing running.
func TestBrokerLifecycle(t *testing.T) {
	for _, bk := range nodetest.Brokers {
		t.Run(bk.Name, func(t *testing.T) {
			cluster := bk.Setup(t) // a kfake cluster's goroutines are not the broker's
			t.Run("NewStartsNothing", func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), oncePerProcess)
				ignore := goleak.IgnoreCurrent()
				find := func() error { return goleak.Find(ignore, oncePerProcess) }
				b, err := cluster.Build(t, transporttest.Prefix(t))
				if err != nil {
					t.Fatal(err)
				}
				if err := find(); err != nil {
					t.Errorf("New started goroutines: %v", err)
				}
				if bk.InProcess { // a memory node needs no Start: it works without
					_ = b.Close()
					return
				}
				checkNotStarted(t, b)
				if err := find(); err != nil {
					t.Errorf("calls before Start started goroutines: %v", err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("StartClose", func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), oncePerProcess)
				b, err := cluster.Build(t, transporttest.Prefix(t))
				if err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if err := b.Start(t.Context()); err != nil {
						t.Fatal(err)
					}
				}
				// The broker answers, and a subscription runs, before Close stops it all.
				wstest.WaitFor(t, func() error { return b.Ping(t.Context()) })
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if _, err := b.Subscribe(ctx, protocol.ChannelTopic("lifecycle")); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
			})
			t.Run("CloseWithoutStart", func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), oncePerProcess)
				b, err := cluster.Build(t, transporttest.Prefix(t))
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				if err := b.Close(); err != nil {
					t.Fatalf("second Close: %v", err)
				}
				if err := b.Start(t.Context()); !errors.Is(err, transports.ErrClosed) {
					t.Fatalf("Start after Close: %v, want ErrClosed", err)
				}
			})
			bad := badStarts[bk.Name]
			if bad == nil {
				return // its Start cannot fail, but after Close (above)
			}
			t.Run("FailedStart", func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), oncePerProcess)
				b, err := bad()
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Start(t.Context()); err == nil {
					t.Fatal("Start succeeded")
				}
				checkNotStarted(t, b)
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// checkNotStarted: a broker that did not start fails every call with ErrNotStarted, at once.
func checkNotStarted(t *testing.T, b transports.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	msg := transporttest.NewMessage("x")
	_, subErr := b.Subscribe(ctx, protocol.ChannelTopic("c"))
	_, groupErr := b.SubscribeGroup(ctx, protocol.TopicInbound, "g")
	for what, err := range map[string]error{
		"Publish":        b.Publish(protocol.ChannelTopic("c"), msg),
		"Subscribe":      subErr,
		"SubscribeGroup": groupErr,
		"Ping":           b.Ping(ctx),
	} {
		if !errors.Is(err, transports.ErrNotStarted) || !errors.Is(err, transports.ErrUnavailable) {
			t.Errorf("%s before Start: %v, want ErrNotStarted (an ErrUnavailable)", what, err)
		}
	}
	if h, ok := b.(transports.History); ok {
		_, _, replayErr := h.Replay(ctx, protocol.ChannelTopic("c"), protocol.Position{}, 10)
		_, lastErr := h.Last(ctx, protocol.ChannelTopic("c"))
		for what, err := range map[string]error{"Replay": replayErr, "Last": lastErr} {
			if !errors.Is(err, transports.ErrNotStarted) {
				t.Errorf("%s before Start: %v, want ErrNotStarted", what, err)
			}
		}
	}
}
