package transports

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Relay is the queue of a SubscribeFunc subscription that something shared feeds (a reader or a
// dispatcher for many subscriptions, or the memory broker's publish), which must not wait long
// for any one subscriber. Offer
// queues a message; the first one queued while the relay is idle starts a goroutine that hands
// the queue to deliver, one message at a time (DeliverUntilAcked), and exits once the queue is empty. An
// idle relay holds no goroutine and no buffer.
//
// Offer and Close may be called from any goroutine; call Close once the subscription's context
// is done. The relay ends the subscription itself (cancel) when deliver refuses a message.
type Relay struct {
	ctx     context.Context    // the subscription's: done when it ends
	cancel  context.CancelFunc // ends the subscription
	deliver func(*message.Message) bool
	limit   int             // messages queued at most
	wg      *sync.WaitGroup // the broker's, if any: counts the running drain too

	mu      sync.Mutex
	items   []*message.Message // oldest first
	busy    bool               // a drain goroutine runs
	done    bool               // closed: nothing is queued or started anymore
	space   chan struct{}      // closed when a message is taken, for an Offer waiting for room
	running sync.WaitGroup     // the drain goroutine, while one runs
}

// NewRelay returns the relay of a subscription: ctx is its context and cancel ends it. wg, when
// not nil, must be held above zero by the subscription until after Close.
func NewRelay(ctx context.Context, cancel context.CancelFunc, deliver func(*message.Message) bool, limit int, wg *sync.WaitGroup) *Relay {
	return &Relay{ctx: ctx, cancel: cancel, deliver: deliver, limit: max(limit, 1), wg: wg}
}

// Offer queues m. When the queue is full it waits up to wait for room, and reports false when
// none came: the consumer is too slow, and the caller ends the subscription rather than skip
// the message. A closed relay takes nothing and reports true.
func (r *Relay) Offer(m *message.Message, wait time.Duration) bool {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		r.mu.Lock()
		if r.done {
			r.mu.Unlock()
			return true
		}
		if len(r.items) < r.limit {
			r.items = append(r.items, m)
			if !r.busy {
				r.busy = true
				if r.wg != nil {
					r.wg.Add(1)
				}
				r.running.Add(1)
				go r.drain()
			}
			r.mu.Unlock()
			return true
		}
		if r.space == nil {
			r.space = make(chan struct{})
		}
		space := r.space
		r.mu.Unlock()
		if t == nil {
			if wait <= 0 {
				return false
			}
			t = time.NewTimer(wait)
		}
		select {
		case <-space:
		case <-r.ctx.Done():
			return true
		case <-t.C:
			return false
		}
	}
}

// take pops the next message for drain, or marks drain finished (false) when there is none or
// the relay is closed.
func (r *Relay) take() (*message.Message, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || len(r.items) == 0 || r.ctx.Err() != nil {
		r.busy = false
		return nil, false
	}
	m := r.items[0]
	r.items[0] = nil
	r.items = r.items[1:]
	if len(r.items) == 0 {
		r.items = nil // an idle relay keeps no array
	}
	if r.space != nil {
		close(r.space)
		r.space = nil
	}
	return m, true
}

func (r *Relay) drain() {
	if r.wg != nil {
		defer r.wg.Done()
	}
	defer r.running.Done()
	for {
		m, ok := r.take()
		if !ok {
			return
		}
		switch DeliverUntilAcked(r.ctx, m, r.deliver) {
		case Refused:
			r.cancel() // the subscriber is going away
			return
		case Ended:
			return
		}
	}
}

// Close drops what is queued, stops queuing, and waits for the running drain to return: nothing
// is delivered after it returns. Call it once the subscription's context is done.
func (r *Relay) Close() {
	r.mu.Lock()
	r.done = true
	r.items = nil
	if r.space != nil {
		close(r.space)
		r.space = nil
	}
	r.mu.Unlock()
	r.running.Wait()
}
