package jetstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Groups on a stream: a core NATS queue subscription on the durable push consumer's deliver
// subject, not the watermill-nats adapter. The server pushes a member several messages ahead of
// the one its subscriber holds (up to the consumer's MaxAckPending across the group); the adapter
// keeps those in nats.go, out of reach, so after AckWait the server gave them, and the held one,
// to another member while this one still had them. Here every message pushed to the member stays
// in held, oldest first, until the subscriber acks or nacks it, and is reported in progress every
// AckWait/3 (+WPI), so that JetStream redelivers it only when the member is gone: a node that
// dies stops reporting and its messages go to another member AckWait later. A member that stops
// naks what it still has, so the others get it at once.

type groupUp struct {
	s      *sub
	nsub   *nats.Subscription
	cancel context.CancelFunc
	done   sync.WaitGroup
	more   chan struct{} // a message was pushed (capacity 1)

	mu      sync.Mutex
	held    []*nats.Msg // pushed, neither acked nor nacked yet, oldest first
	stopped bool
}

func (s *sub) openGroup(again bool) (upstream, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.b.cfg.PublishTimeout)
	subject, queue, err := s.ensureDurable(ctx, s.durableName(), again)
	cancel()
	if err != nil {
		return nil, unavailable("subscribe", err)
	}
	u := &groupUp{s: s, more: make(chan struct{}, 1)}
	if queue == "" {
		u.nsub, err = s.b.nc.Subscribe(subject, u.push)
	} else {
		u.nsub, err = s.b.nc.QueueSubscribe(subject, queue, u.push)
	}
	if err != nil {
		return nil, unavailable("subscribe", err)
	}
	dctx, dcancel := context.WithCancel(s.ctx)
	u.cancel = dcancel
	u.done.Add(2)
	go u.deliverAll(dctx)
	go u.renew(dctx)
	// The SUB must have reached the server before Subscribe returns.
	if err := s.b.nc.FlushTimeout(s.b.cfg.PublishTimeout); err != nil {
		u.stop()
		return nil, unavailable("subscribe", err)
	}
	return u, nil
}

// push runs on nats.go's goroutine of the subscription for each message the server pushes.
func (u *groupUp) push(nm *nats.Msg) {
	if !strings.HasPrefix(nm.Reply, "$JS.ACK.") {
		return // not a message of the stream
	}
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		_ = nm.Nak()
		return
	}
	u.held = append(u.held, nm)
	u.mu.Unlock()
	select {
	case u.more <- struct{}{}:
	default:
	}
}

func (u *groupUp) front() *nats.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.held) == 0 {
		return nil
	}
	return u.held[0]
}

func (u *groupUp) pop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.held[0] = nil
	u.held = u.held[1:]
}

// deliverAll hands the held messages to the subscriber in order; an ack or a nack of the
// subscriber goes to the broker (after a nack the broker may give the message to another member).
func (u *groupUp) deliverAll(ctx context.Context) {
	defer u.done.Done()
	for {
		nm := u.front()
		if nm == nil {
			select {
			case <-u.more:
				continue
			case <-ctx.Done():
				return
			}
		}
		m, err := u.s.b.codec.Unmarshal(nm)
		if err != nil {
			return // not reached: the codec's errors come from a gate, which this codec has none of
		}
		acked := u.s.deliver(ctx, m, false)
		if !acked && ctx.Err() != nil {
			return // stop naks it
		}
		if acked {
			_ = nm.Ack()
		} else {
			_ = nm.Nak()
		}
		u.pop()
	}
}

// renew reports every held message in progress every AckWait/3.
func (u *groupUp) renew(ctx context.Context) {
	defer u.done.Done()
	t := time.NewTicker(max(u.s.b.cfg.AckWait/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		u.mu.Lock()
		held := append([]*nats.Msg(nil), u.held...)
		u.mu.Unlock()
		for _, nm := range held {
			if err := nm.InProgress(); err != nil && !errors.Is(err, nats.ErrMsgAlreadyAckd) {
				u.s.log.Debug("jetstream: cannot report a held group message in progress", "error", err)
				break // the connection is down: the next tick tries again
			}
		}
	}
}

func (u *groupUp) lost() <-chan struct{} { return nil }

// stop ends the member: no more pushes, the goroutines end, and what it still held is nakked so
// the other members get it without waiting for AckWait.
func (u *groupUp) stop() {
	_ = u.nsub.Unsubscribe()
	if u.s.b.nc.IsConnected() { // the server stops pushing to this member once it has the UNSUB
		_ = u.s.b.nc.FlushTimeout(u.s.b.cfg.PublishTimeout)
	}
	u.cancel()
	u.done.Wait()
	u.mu.Lock()
	u.stopped = true
	held := u.held
	u.held = nil
	u.mu.Unlock()
	for _, nm := range held {
		_ = nm.Nak()
	}
}
