package kafka

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/transports"
)

// SubscribeGroup implements transports.Broker with the Kafka consumer group
// <prefix>.<group>: competing consumers, committed offsets, and a new group starts at the oldest
// retained record so messages published before its first member joined are delivered. It
// returns once this member has its assignment (or after OperationTimeout; consumption goes on).
//
// It drives sarama's ConsumerGroup itself rather than through watermill-kafka's Subscriber,
// whose reconnect loop runs again at once when Consume fails (a tight loop of new clients, see
// LIBRARY-NOTES) and which does not tell when the assignment is done.
func (b *Broker) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	kt, _, err := b.kafkaTopic(topic)
	if err != nil {
		return nil, err
	}
	if kt == b.names.channels {
		// One topic holds every channel: a group on it would get all of them.
		return nil, fmt.Errorf("kafka: channel topic %q cannot be consumed in a group", topic)
	}
	if _, err := b.ready(ctx, b.cfg.OperationTimeout); err != nil {
		return nil, err
	}
	cfg := b.saramaConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	name := b.names.prefix + "." + group
	cg, err := sarama.NewConsumerGroup(b.cfg.Brokers, name, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka group %s: %w", transports.ErrUnavailable, name, err)
	}
	gctx, cancel := context.WithCancel(ctx)
	h := &groupHandler{b: b, ctx: gctx, out: make(chan *message.Message), assigned: make(chan struct{})}
	started := b.goTrack(func() {
		defer cancel()
		h.run(cg, kt, name)
	})
	if !started {
		cancel()
		_ = cg.Close()
		return nil, transports.ErrClosed
	}
	t := time.NewTimer(b.cfg.OperationTimeout)
	defer t.Stop()
	select {
	case <-h.assigned:
	case <-t.C:
		b.log.Warn("kafka group assignment still pending", "topic", kt, "group", name)
	case <-ctx.Done():
	case <-b.done:
	}
	return h.out, nil
}

// groupHandler is one SubscribeGroup: a sarama.ConsumerGroupHandler feeding one channel.
type groupHandler struct {
	b        *Broker
	ctx      context.Context
	out      chan *message.Message
	assigned chan struct{}
	once     sync.Once
	sessions atomic.Int64
	mu       sync.Mutex // one message out at a time, across partitions, until acked
}

// run calls Consume again after each rebalance, with backoff when a call failed or ended
// without reaching a session (no tight reconnect loop), until ctx ends or the broker closes.
func (h *groupHandler) run(cg sarama.ConsumerGroup, topic, name string) {
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		_ = cg.Close() // leaves the group; closes its client and its error channel
		wg.Wait()
		close(h.out) // Consume returned: no ConsumeClaim is left to send
	}()
	wg.Add(2)
	go func() { // errors of the group (offset commits, fetches)
		defer wg.Done()
		for err := range cg.Errors() {
			h.b.log.Debug("kafka group error", "topic", topic, "group", name, "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		select {
		case <-h.b.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for ctx.Err() == nil {
		before := h.sessions.Load()
		err := cg.Consume(ctx, []string{topic}, h)
		if ctx.Err() != nil {
			return
		}
		if h.sessions.Load() != before {
			bo.reset()
			if err == nil {
				continue // a rebalance: join again at once
			}
		}
		d := bo.next()
		if err != nil {
			h.b.log.Warn("kafka group consume failed", "topic", topic, "group", name, "error", err, "retry_in", d)
		}
		if !sleep(d, ctx.Done()) {
			return
		}
	}
}

// Setup is called once the member has its assignment.
func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error {
	h.sessions.Add(1)
	h.once.Do(func() { close(h.assigned) })
	return nil
}

func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim delivers the records of one partition; an acked record's offset is marked and
// committed by sarama's auto-commit (every second, and when the session ends).
func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case km, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !h.deliver(sess, toMessage(km, "", "")) {
				return nil
			}
			sess.MarkMessage(km, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

func (h *groupHandler) deliver(sess sarama.ConsumerGroupSession, m *message.Message) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return deliver(h.ctx, h.out, m, sess.Context().Done(), h.b.done)
}

// deliver hands copies of m to out until one is acked (a nack delivers it again after
// nackDelay); false when ctx or a stop channel ended first.
func deliver(ctx context.Context, out chan<- *message.Message, m *message.Message, stop1, stop2 <-chan struct{}) bool {
	for {
		select { // an ended session or subscription must not win the race with a ready reader
		case <-ctx.Done():
			return false
		case <-stop1:
			return false
		case <-stop2:
			return false
		default:
		}
		c := m.Copy()
		c.SetContext(ctx)
		select {
		case out <- c:
		case <-ctx.Done():
			return false
		case <-stop1:
			return false
		case <-stop2:
			return false
		}
		select {
		case <-c.Acked():
			return true
		case <-c.Nacked():
			if !sleep(nackDelay, ctx.Done(), stop1, stop2) {
				return false
			}
		case <-ctx.Done():
			return false
		case <-stop1:
			return false
		case <-stop2:
			return false
		}
	}
}
