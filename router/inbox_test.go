package router_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/router"
	"github.com/wsgateway/gateway/transports"
)

func newMsg() *message.Message { return message.NewMessage(watermill.NewUUID(), []byte("x")) }

// ackAll acks every message of msgs until it closes, then closes done.
func ackAll(msgs <-chan *message.Message, done chan<- struct{}) {
	defer close(done)
	for m := range msgs {
		m.Ack()
	}
}

func TestInboxSubmitWaitsForASubscription(t *testing.T) {
	inbox := router.NewInbox()
	submitted := make(chan error, 1)
	go func() { submitted <- inbox.Submit(context.Background(), newMsg()) }()
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := inbox.Subscribe(ctx, router.InboxTopic)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go ackAll(msgs, done)
	if err := <-submitted; err != nil {
		t.Fatalf("Submit: %v, want the router's ack", err)
	}
	cancel()
	<-done // the channel closed with the subscription's context
}

func TestInboxTakesOneSubscriptionAtATime(t *testing.T) {
	inbox := router.NewInbox()
	ctx, cancel := context.WithCancel(context.Background())
	first, err := inbox.Subscribe(ctx, router.InboxTopic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inbox.Subscribe(context.Background(), router.InboxTopic); err == nil {
		t.Fatal("a second subscription was taken while the first reads the inbox")
	}
	cancel()
	for range first { // closes with its context
	}
	// A Submit waiting meanwhile goes to the next subscription.
	submitted := make(chan error, 1)
	go func() { submitted <- inbox.Submit(context.Background(), newMsg()) }()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	second, err := inbox.Subscribe(ctx2, router.InboxTopic)
	if err != nil {
		t.Fatalf("the subscription after the first ended: %v", err)
	}
	(<-second).Ack()
	if err := <-submitted; err != nil {
		t.Fatalf("Submit: %v", err)
	}
}

func TestInboxSubmitEndsWithItsContextOrTheInbox(t *testing.T) {
	inbox := router.NewInbox()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := inbox.Submit(ctx, newMsg()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Submit with no subscription and a cancelled context: %v", err)
	}
	_ = inbox.Close()
	if err := inbox.Submit(context.Background(), newMsg()); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}
}

// Submits racing subscriptions that come and go: every message is received by one
// subscription and acked, and no Submit sends on a closed channel (it would panic).
func TestInboxSubmitsAcrossSubscriptions(t *testing.T) {
	inbox := router.NewInbox()
	const submitters, each = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, submitters*each)
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				errs <- inbox.Submit(context.Background(), newMsg())
			}
		}()
	}
	acked := make(chan struct{}, submitters*each)
	total := 0
	for subscriptions := 0; total < submitters*each; subscriptions++ {
		ctx, cancel := context.WithCancel(context.Background())
		msgs, err := inbox.Subscribe(ctx, router.InboxTopic)
		if err != nil {
			t.Fatalf("subscription %d: %v", subscriptions, err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for m := range msgs {
				m.Ack()
				acked <- struct{}{}
			}
		}()
		for n := 0; n < 50 && total < submitters*each; n++ {
			<-acked
			total++
		}
		cancel()
		<-done
		for len(acked) > 0 {
			<-acked
			total++
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Submit: %v", err)
		}
	}
	if total != submitters*each {
		t.Fatalf("%d messages received, want %d", total, submitters*each)
	}
}
