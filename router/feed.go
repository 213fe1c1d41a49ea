package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// FeedTopic is the only topic a Feed serves to the router.
const FeedTopic = "feed"

// Feed merges the broker subscriptions of the channels that have local subscribers into one
// Watermill subscription that the node's router consumes. Open subscribes one channel on the
// broker (the hub calls it for a channel's first local subscriber) and the returned stop ends it.
//
// For brokers without transports.History it stamps each message with a position of its own (an epoch
// unique to this Feed and to the channel's current broker subscription, and a counter), so
// clients always see positions; resuming from them answers recovered:false on any other node,
// after a restart, and after the subscription was lost or reopened (messages may have passed
// unseen meanwhile). The counter of a channel exists only while its subscription is open, so
// a node keeps nothing for a channel it no longer subscribes.
type Feed struct {
	broker  transports.Broker
	history transports.History // nil when the broker keeps none
	epoch   string

	out     chan *message.Message
	done    chan struct{}
	closeMu sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	counters map[string]*localSeq // channel -> its open subscription's counter (no transports.History)
	opens    atomic.Uint64        // subscriptions opened: numbers the epochs of the counters
	cancels  map[*context.CancelFunc]struct{}
	peaks    [2]int // of counters and cancels (transports.Shrink)
	taken    bool
}

// NewFeed makes a Feed over broker.
func NewFeed(broker transports.Broker) *Feed {
	h, _ := broker.(transports.History)
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Feed{broker: broker, history: h, epoch: "l" + hex.EncodeToString(b[:]),
		out: make(chan *message.Message), done: make(chan struct{}),
		counters: map[string]*localSeq{}, cancels: map[*context.CancelFunc]struct{}{}}
}

// Subscribe implements message.Subscriber for the router: it returns the merged channel. It may
// be called once, with FeedTopic. The returned channel closes when ctx ends.
func (f *Feed) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if topic != FeedTopic || f.taken {
		return nil, errors.New("feed: only one subscription to the feed topic")
	}
	f.taken = true
	return forward(ctx, f.out), nil
}

// Open subscribes channel on the broker and forwards its messages to the merged channel. When
// the broker ends the subscription by itself (not through stop, nor Close), lost is called.
func (f *Feed) Open(channel string, lost func()) (func(), error) {
	select {
	case <-f.done:
		return nil, transports.ErrClosed
	default:
	}
	topic := protocol.ChannelTopic(channel)
	ctx, cancel := context.WithCancel(context.Background())
	counter := f.reopen(channel) // nil with transports.History
	// toRouter hands one message of the channel to the router; false once the feed closed or
	// the subscription ended (m's context: the broker's Close must not wait for the router).
	toRouter := func(m *message.Message) bool {
		m.Metadata.Set(protocol.MetaChannel, channel)
		if f.history == nil {
			m.Metadata.Set(protocol.MetaPosition, protocol.Position{Epoch: counter.epoch, Lo: counter.n.Add(1)}.String())
		}
		select {
		case f.out <- m:
			return true
		case <-f.done:
			m.Nack()
			cancel()
			return false
		case <-m.Context().Done():
			return false
		}
	}
	// release forgets the subscription: once stopped, or once the broker ended it.
	release := func() {
		cancel()
		f.mu.Lock()
		delete(f.cancels, &cancel)
		f.cancels = transports.Shrink(f.cancels, &f.peaks[1])
		if counter != nil && f.counters[channel] == counter {
			delete(f.counters, channel)
			f.counters = transports.Shrink(f.counters, &f.peaks[0])
		}
		f.mu.Unlock()
	}
	ended := func() {
		select {
		case <-ctx.Done(): // stopped, or the feed closed
		default:
			release()
			if lost != nil {
				lost()
			}
		}
	}
	var in <-chan *message.Message
	var err error
	if h, ok := f.broker.(transports.FuncSubscriber); ok {
		err = h.SubscribeFunc(ctx, topic, toRouter, ended) // no goroutine of the Feed's own
	} else {
		in, err = f.broker.Subscribe(ctx, topic)
	}
	if err != nil {
		release()
		return nil, err
	}
	f.mu.Lock()
	select {
	case <-f.done: // closed meanwhile
		f.mu.Unlock()
		release()
		return nil, transports.ErrClosed
	default:
	}
	if ctx.Err() == nil { // not ended already (then it released itself)
		f.cancels[&cancel] = struct{}{}
		f.cancels = transports.Shrink(f.cancels, &f.peaks[1])
	}
	f.mu.Unlock()
	stop := release
	if in != nil {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for m := range in {
				toRouter(m) // once the feed closed, it nacks what still comes
			}
			ended()
		}()
	}
	return stop, nil
}

// localSeq numbers the messages of one broker subscription of a channel (no transports.History).
type localSeq struct {
	epoch string
	n     atomic.Uint64
}

// newEpoch returns an epoch no other subscription of this Feed has: positions of one
// subscription cannot be resumed from another's.
func (f *Feed) newEpoch() string {
	return f.epoch + "-" + strconv.FormatUint(f.opens.Add(1), 10)
}

// reopen starts a new local numbering for channel, when the broker keeps no history.
func (f *Feed) reopen(channel string) *localSeq {
	if f.history != nil {
		return nil
	}
	c := &localSeq{epoch: f.newEpoch()}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters[channel] = c
	f.counters = transports.Shrink(f.counters, &f.peaks[0])
	return c
}

// Last returns the position of the newest message of channel: from the broker's history, or
// this Feed's own counter. Without history and without an open subscription of the channel it
// is a position of an epoch never used, which no replay completes.
func (f *Feed) Last(ctx context.Context, channel string) (protocol.Position, error) {
	if f.history != nil {
		return f.history.Last(ctx, protocol.ChannelTopic(channel))
	}
	f.mu.Lock()
	c := f.counters[channel]
	f.mu.Unlock()
	if c == nil {
		return protocol.Position{Epoch: f.newEpoch()}, nil
	}
	return protocol.Position{Epoch: c.epoch, Lo: c.n.Load()}, nil
}

// Replay returns what channel had after since, from the broker's history; without one it
// returns nothing and complete only when since is this Feed's own latest position.
func (f *Feed) Replay(ctx context.Context, channel string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	if f.history != nil {
		msgs, complete, err := f.history.Replay(ctx, protocol.ChannelTopic(channel), since, limit)
		for _, m := range msgs {
			m.Metadata.Set(protocol.MetaChannel, channel)
		}
		return msgs, complete, err
	}
	last, _ := f.Last(ctx, channel)
	return nil, since == last, nil
}

// KeepsHistory reports whether the broker keeps channel history (transports.History).
func (f *Feed) KeepsHistory() bool { return f.history != nil }

// Before returns, newest first, at most limit messages of channel before the position before
// (the zero position: the newest), from the broker's history read backwards
// (transports.ReverseHistory); transports.ErrNoHistory when the broker cannot.
func (f *Feed) Before(ctx context.Context, channel string, before protocol.Position, limit int) ([]*message.Message, error) {
	rh, ok := f.broker.(transports.ReverseHistory)
	if f.history == nil || !ok {
		return nil, transports.ErrNoHistory
	}
	msgs, err := rh.Before(ctx, protocol.ChannelTopic(channel), before, limit)
	for _, m := range msgs {
		m.Metadata.Set(protocol.MetaChannel, channel)
	}
	return msgs, err
}

// Close stops forwarding. The router must be closed before (it owns the merged channel's
// consumer); the broker subscriptions end with their contexts. Safe to call twice.
func (f *Feed) Close() error {
	f.closeMu.Do(func() {
		f.mu.Lock()
		close(f.done)
		for c := range f.cancels {
			(*c)()
		}
		f.mu.Unlock()
	})
	f.wg.Wait()
	return nil
}
