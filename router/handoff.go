package router

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// errSubscribed refuses a second subscription while one reads a handoff.
var errSubscribed = errors.New("router: the topic has a subscription already")

// handoff is the channel the router's subscription to an in-process source (Inbox, Feed)
// reads, which the source's senders send on themselves: no goroutine in between, so a message
// reaches the router with one goroutine switch, not two. One subscription reads it at a time;
// its channel closes when its context ends, and a send meanwhile waits for the next one.
// Safe for concurrent use.
type handoff struct {
	// mu is held for reading by a send, and for writing to change sub (an ending subscription
	// closes its channel under it, so that no send is on it then).
	mu      sync.RWMutex
	sub     *handoffSub   // nil while no subscription reads
	changed chan struct{} // closed (and replaced) when a subscription starts
}

// handoffSub is one subscription.
type handoffSub struct {
	out  chan *message.Message // what the router reads; closed when the subscription ends
	stop chan struct{}         // closed first, so that the sends waiting on out let go of mu
}

func newHandoff() *handoff { return &handoff{changed: make(chan struct{})} }

// subscribe starts a subscription, ended by ctx (a goroutine waits for it and closes the
// channel).
func (h *handoff) subscribe(ctx context.Context) (<-chan *message.Message, error) {
	sub := &handoffSub{out: make(chan *message.Message), stop: make(chan struct{})}
	h.mu.Lock()
	if h.sub != nil {
		h.mu.Unlock()
		return nil, errSubscribed
	}
	h.sub = sub
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	go func() { // owned by ctx: ends the subscription with it
		<-ctx.Done()
		close(sub.stop)
		h.mu.Lock()
		h.sub = nil
		close(sub.out)
		h.mu.Unlock()
	}()
	return sub.out, nil
}

// send hands m to the subscription, waiting for one while there is none. It reports whether it
// did; if not, a or b closed first (and it returns that one).
func (h *handoff) send(m *message.Message, a, b <-chan struct{}) (sent bool, stop <-chan struct{}) {
	for {
		h.mu.RLock()
		sub, changed := h.sub, h.changed
		if sub == nil {
			h.mu.RUnlock()
			select {
			case <-changed:
				continue
			case <-a:
				return false, a
			case <-b:
				return false, b
			}
		}
		select {
		case sub.out <- m:
			h.mu.RUnlock()
			return true, nil
		case <-sub.stop: // ending: wait for the next one
			h.mu.RUnlock()
		case <-a:
			h.mu.RUnlock()
			return false, a
		case <-b:
			h.mu.RUnlock()
			return false, b
		}
	}
}
