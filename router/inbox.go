package router

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
)

// InboxTopic is the only topic an Inbox serves to the router.
const InboxTopic = "inbox"

// ErrNacked is returned by Submit when the router nacked a message without saying why.
var ErrNacked = errors.New("message refused")

// Inbox is how WebSocket sessions and the HTTP API hand messages to the node's router: an
// in-process Watermill subscriber whose publishers wait for the outcome. Submit blocks until the
// router acked the message (nil) or nacked it (the handler's error, as recorded by
// middleware.Outcome), so the router's ack becomes the client's ack frame and a final nack its error.
// Safe for concurrent use.
type Inbox struct {
	out       chan *message.Message
	done      chan struct{}
	closeOnce sync.Once
}

// NewInbox makes an empty inbox.
func NewInbox() *Inbox {
	return &Inbox{out: make(chan *message.Message), done: make(chan struct{})}
}

var _ message.Subscriber = (*Inbox)(nil)

// Submit hands msg to the router and waits for its outcome, at most until ctx ends.
func (i *Inbox) Submit(ctx context.Context, msg *message.Message) error {
	octx, recorded := middleware.WithOutcome(ctx)
	msg.SetContext(octx)
	select {
	case i.out <- msg:
	case <-ctx.Done():
		return ctx.Err()
	case <-i.done:
		return transports.ErrClosed
	}
	select {
	case <-msg.Acked():
		return nil
	case <-msg.Nacked():
		if err := recorded(); err != nil {
			return err
		}
		return ErrNacked
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe implements message.Subscriber for the router. The returned channel closes when ctx
// ends (the router closing).
func (i *Inbox) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic != InboxTopic {
		return nil, errors.New("inbox: unknown topic " + topic)
	}
	return forward(ctx, i.out), nil
}

// forward forwards in to a new channel that is closed when ctx ends, so that a router consuming a
// channel shared with publishers can stop.
func forward(ctx context.Context, in <-chan *message.Message) <-chan *message.Message {
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for {
			select {
			case m := <-in:
				select {
				case out <- m:
				case <-ctx.Done():
					m.Nack()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Close makes Submit fail from now on. Safe to call twice.
func (i *Inbox) Close() error {
	i.closeOnce.Do(func() { close(i.done) })
	return nil
}
