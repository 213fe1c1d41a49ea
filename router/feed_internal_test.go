package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// quietBroker subscribes anything and delivers nothing; its subscriptions end with their context.
type quietBroker struct{}

func (quietBroker) Start(context.Context) error               { return nil }
func (quietBroker) Publish(string, ...*message.Message) error { return nil }
func (quietBroker) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	context.AfterFunc(ctx, func() { close(out) })
	return out, nil
}
func (b quietBroker) SubscribeGroup(ctx context.Context, topic, _ string) (<-chan *message.Message, error) {
	return b.Subscribe(ctx, topic)
}
func (quietBroker) Ping(context.Context) error { return nil }
func (quietBroker) Close() error               { return nil }

// quietHistory is a quietBroker that also keeps (an empty) history.
type quietHistory struct{ quietBroker }

func (quietHistory) Replay(context.Context, string, protocol.Position, int) ([]*message.Message, bool, error) {
	return nil, true, nil
}
func (quietHistory) Last(context.Context, string) (protocol.Position, error) {
	return protocol.Position{}, nil
}

// TestFeedKeepsNothingForClosedChannels: once the subscriptions of many channels are stopped,
// the Feed holds no state for any of them, with or without the broker's history.
func TestFeedKeepsNothingForClosedChannels(t *testing.T) {
	for name, broker := range map[string]transports.Broker{"history": quietHistory{}, "no history": quietBroker{}} {
		t.Run(name, func(t *testing.T) {
			f := NewFeed(broker)
			defer f.Close()
			for i := range 1000 {
				stop, err := f.Open(fmt.Sprintf("room:%d", i), nil)
				if err != nil {
					t.Fatal(err)
				}
				stop()
			}
			f.mu.Lock()
			counters, cancels := len(f.counters), len(f.cancels)
			f.mu.Unlock()
			if counters != 0 || cancels != 0 {
				t.Fatalf("after 1000 channels opened and stopped the feed holds %d counters and %d subscriptions, want none", counters, cancels)
			}
		})
	}
}

// TestFeedReopenIsANewEpoch: without history, a channel's positions belong to its subscription:
// after it was stopped and opened again (its counter freed meanwhile) a resume from the earlier
// subscription's position is not complete, and one from the new subscription's is.
func TestFeedReopenIsANewEpoch(t *testing.T) {
	f := NewFeed(quietBroker{})
	defer f.Close()
	ctx := context.Background()
	stop, err := f.Open("c", nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := f.Last(ctx, "c")
	if _, complete, _ := f.Replay(ctx, "c", first, 10); !complete {
		t.Fatal("a resume from the open subscription's own last position is not complete")
	}
	stop()
	if _, complete, _ := f.Replay(ctx, "c", first, 10); complete {
		t.Fatal("a resume while the channel is not subscribed claims to be complete")
	}
	stop, err = f.Open("c", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	second, _ := f.Last(ctx, "c")
	if second.Epoch == first.Epoch {
		t.Fatalf("the reopened subscription has the epoch of the first, %q", first.Epoch)
	}
	if _, complete, _ := f.Replay(ctx, "c", first, 10); complete {
		t.Fatal("a resume from the first subscription's position is complete after a reopen")
	}
	if _, complete, _ := f.Replay(ctx, "c", second, 10); !complete {
		t.Fatal("a resume from the reopened subscription's position is not complete")
	}
}

// TestFeedForgetsLostSubscription: a subscription the broker ends by itself calls lost and
// leaves nothing behind in the Feed.
func TestFeedForgetsLostSubscription(t *testing.T) {
	b := &endingBroker{ends: make(chan struct{})}
	f := NewFeed(b)
	defer f.Close()
	lost := make(chan struct{})
	if _, err := f.Open("c", func() { close(lost) }); err != nil {
		t.Fatal(err)
	}
	close(b.ends)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("lost was not called")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.counters) != 0 || len(f.cancels) != 0 {
		t.Fatalf("after a lost subscription the feed holds %d counters and %d subscriptions", len(f.counters), len(f.cancels))
	}
}

// endingBroker's subscriptions end by themselves when ends closes.
type endingBroker struct {
	quietBroker
	ends chan struct{}
}

func (b *endingBroker) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	go func() {
		select {
		case <-ctx.Done():
		case <-b.ends:
		}
		close(out)
	}()
	return out, nil
}
