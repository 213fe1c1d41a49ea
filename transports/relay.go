package transports

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Relay is the queue of a SubscribeFunc subscription that something shared feeds (a reader or a
// dispatcher for many subscriptions, or the memory broker's publish), which must not wait long
// for any one subscriber. Offer queues a message; the first one queued while the relay is idle
// starts a goroutine that hands the queue to RelayConfig.Deliver, one message at a time, each
// until acked (DeliverUntilAckedAfter with RelayConfig.NackDelay), and exits once the queue is
// empty. An idle relay holds no goroutine and no buffer.
//
// Offer, Finish and Close may be called from any goroutine; call Close once the subscription's
// context is done. The relay ends the subscription itself (cancel) when Deliver refuses a
// message, and after Finish once the queue is empty.
type Relay struct {
	ctx    context.Context    // the subscription's: done when it ends
	cancel context.CancelFunc // ends the subscription
	cfg    RelayConfig

	mu        sync.Mutex
	items     []*message.Message  // oldest first
	one       [1]*message.Message // the array of a queue of one, which the usual message finds: none allocated
	busy      bool                // a drain goroutine runs
	done      bool                // closed: nothing is queued or started anymore
	finishing bool                // Finish was called: nothing more is queued
	space     chan struct{}       // closed when a message is taken, for an Offer waiting for room
	running   sync.WaitGroup      // the drain goroutine, while one runs
}

// RelayConfig is how a Relay delivers.
type RelayConfig struct {
	// Deliver hands a message to the subscriber, as in FuncSubscriber.SubscribeFunc: false
	// means the subscriber refused it, and the relay ends the subscription.
	Deliver func(*message.Message) bool
	// Limit is the most messages queued at once (at least 1); an Offer beyond it waits for room.
	Limit int
	// NackDelay is how long a nacked message waits before it is delivered again; 0: at once.
	NackDelay time.Duration
	// WG, when not nil, counts the running drain goroutine too (the broker's, so that its
	// Close can wait for it). The subscription must hold it above zero until after Close.
	WG *sync.WaitGroup
}

// NewRelay returns the relay of a subscription: ctx is its context and cancel ends it.
func NewRelay(ctx context.Context, cancel context.CancelFunc, cfg RelayConfig) *Relay {
	cfg.Limit = max(cfg.Limit, 1)
	return &Relay{ctx: ctx, cancel: cancel, cfg: cfg}
}

// Offer queues m. When the queue is full it waits up to wait for room, and reports false when
// none came: the consumer is too slow, and the caller ends the subscription rather than skip
// the message. A closed or finishing relay takes nothing and reports true.
func (r *Relay) Offer(m *message.Message, wait time.Duration) bool {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	expired := false
	for {
		r.mu.Lock()
		if r.done || r.finishing {
			r.mu.Unlock()
			return true
		}
		if len(r.items) < r.cfg.Limit {
			if r.items == nil {
				r.items = r.one[:0]
			}
			r.items = append(r.items, m)
			if !r.busy {
				r.busy = true
				if r.cfg.WG != nil {
					r.cfg.WG.Add(1)
				}
				r.running.Add(1)
				go r.drain()
			}
			r.mu.Unlock()
			return true
		}
		if expired || wait <= 0 {
			r.mu.Unlock()
			return false
		}
		if r.space == nil {
			r.space = make(chan struct{})
		}
		space := r.space
		r.mu.Unlock()
		if t == nil {
			t = time.NewTimer(wait)
		}
		select {
		case <-space:
		case <-r.ctx.Done():
			return true
		case <-t.C:
			expired = true // one more look: room may have come as the time ran out
		}
	}
}

// take pops the next message for drain, or marks drain finished (false) when there is none or
// the relay is closed. finished reports that the queue of a finishing relay ran empty.
func (r *Relay) take() (m *message.Message, ok, finished bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || len(r.items) == 0 || r.ctx.Err() != nil {
		r.busy = false
		return nil, false, r.finishing && !r.done
	}
	m = r.items[0]
	r.items[0] = nil
	r.items = r.items[1:]
	if len(r.items) == 0 {
		r.items, r.one[0] = nil, nil // an idle relay keeps no array, nor a message
	}
	if r.space != nil {
		close(r.space)
		r.space = nil
	}
	return m, true, false
}

func (r *Relay) drain() {
	if r.cfg.WG != nil {
		defer r.cfg.WG.Done()
	}
	defer r.running.Done()
	for {
		m, ok, finished := r.take()
		if finished {
			r.cancel() // Finish: everything queued was delivered
		}
		if !ok {
			return
		}
		switch DeliverUntilAckedAfter(r.ctx, m, r.cfg.Deliver, r.cfg.NackDelay) {
		case Refused:
			r.cancel() // the subscriber is going away
			return
		case Ended:
			return
		}
	}
}

// Finish stops queuing, as Close does, but lets what is queued be delivered (in order, each
// until acked); then the relay ends the subscription (cancel), at once when nothing is queued.
// It is for a subscription that the feeder drops (too slow, or what follows is lost) whose
// consumer must still get what it was handed. It does not wait; Close is still called once the
// subscription's context is done, and drops what is left then.
func (r *Relay) Finish() {
	r.mu.Lock()
	if r.done || r.finishing {
		r.mu.Unlock()
		return
	}
	r.finishing = true
	if r.space != nil { // an Offer waiting for room takes nothing now
		close(r.space)
		r.space = nil
	}
	idle := !r.busy
	r.mu.Unlock()
	if idle {
		r.cancel()
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
