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
// The group rebalances cooperatively (the cooperative-sticky assignor, Kafka 2.4 and later): a
// member joining or leaving takes no partition from a member that keeps it, so a message held
// there (handed out, not acked yet) stays held, however long. A partition that does move is
// given up only once the message it has out, and those sarama had fetched for it, are acked
// (within the group's rebalance timeout, sarama's 60 s), their offsets committed first. See
// groupHandler.
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
	if b.groupAutoCommit > 0 {
		cfg.Consumer.Offsets.AutoCommit.Interval = b.groupAutoCommit
	}
	if cfg.Version.IsAtLeast(sarama.V2_4_0_0) { // KIP-429's owned partitions; older: range, eager
		cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	}
	name := b.names.prefix + "." + group
	cg, err := sarama.NewConsumerGroup(b.cfg.Brokers, name, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka group %s: %w", transports.ErrUnavailable, name, err)
	}
	gctx, cancel := context.WithCancel(ctx)
	h := &groupHandler{b: b, ctx: gctx, out: make(chan *message.Message), assigned: make(chan struct{}), marked: make(chan struct{}, 1)}
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

// groupHandler is one SubscribeGroup: a sarama.ConsumerGroupHandler feeding one channel, one
// message at a time across its partitions. A record's offset is marked once its message is
// acked and committed at once by the session's committer (one commit in flight, covering every
// mark made before it began); sarama also commits what is marked every second, and
// synchronously before this member gives up a partition (a cooperative revoke, after
// ConsumeClaim returned) or its session (an eager rebalance, Close, the end of the
// subscription). So what was acked is never delivered again, but by a member that dies: then
// the message it had out comes again, and the ones acked while its last commit was under way.
type groupHandler struct {
	b        *Broker
	ctx      context.Context
	out      chan *message.Message
	assigned chan struct{}
	once     sync.Once
	sessions atomic.Int64
	mu       sync.Mutex    // one message out at a time, across partitions, until acked
	marked   chan struct{} // buffered 1: an offset was marked that no commit under way covers

	// The committer of the current session: started by Setup, stopped by Cleanup. sarama calls
	// both from the goroutine of Consume, which run calls one at a time.
	stopCommits, commitsDone chan struct{}
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

// Setup is called once the member has its assignment: it starts the session's committer.
func (h *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	h.sessions.Add(1)
	h.stopCommits, h.commitsDone = make(chan struct{}), make(chan struct{})
	go h.commits(sess, h.stopCommits, h.commitsDone)
	h.once.Do(func() { close(h.assigned) })
	return nil
}

// Cleanup is called once every ConsumeClaim of the session returned, before sarama's last
// commit of the session: it stops the committer.
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error {
	close(h.stopCommits)
	<-h.commitsDone
	return nil
}

// commits commits what was marked, one commit at a time (a synchronous round trip to the
// group's coordinator; a failure is reported on the group's errors and the next commit, or
// sarama's every second, covers the offset again), until stop.
func (h *groupHandler) commits(sess sarama.ConsumerGroupSession, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-h.marked:
			sess.Commit()
		case <-stop:
			return
		}
	}
}

// ConsumeClaim delivers the records of one partition; an acked record's offset is marked. It
// returns when sarama closes the claim (the partition is revoked: it may have delivered records
// sarama had already fetched, each acked and marked before the partition goes) or the session
// ends, after the message it had out was acked (see deliver).
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
			select {
			case h.marked <- struct{}{}:
			default: // a commit is already due: it will cover this mark
			}
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

// holdGrace is how long a member that must stop (its session ended, its subscription ended, the
// broker is closing) waits for the ack of the message its consumer holds, so that an ack given
// meanwhile is committed rather than the message delivered again.
const holdGrace = 5 * time.Second

// deliver hands copies of m to out until one is acked (a nack delivers it again after
// nackDelay); false when ctx or a stop channel ended first. When one ends while the consumer
// holds a copy, deliver waits holdGrace for its ack: true when it came.
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
			return awaitAck(c, holdGrace)
		case <-stop1:
			return awaitAck(c, holdGrace)
		case <-stop2:
			return awaitAck(c, holdGrace)
		}
	}
}

// awaitAck waits at most grace for c's ack (true) or nack.
func awaitAck(c *message.Message, grace time.Duration) bool {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.Acked():
		return true
	case <-c.Nacked():
		return false
	case <-t.C:
		return false
	}
}
