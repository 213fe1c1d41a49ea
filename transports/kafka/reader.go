package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/transports"
)

// nackDelay is how long a nacked message waits before it is delivered again.
const nackDelay = 100 * time.Millisecond

// reader reads every partition of one Kafka topic, without a consumer group, from the newest
// offsets at its start, and hands each record to the local subscriptions of its key: the channel
// for <prefix>.channels, "" for the other topics.
//
// It uses sarama's consumer rather than watermill-kafka's Subscriber because it must know the
// offset it starts from and resume from the next offset after an error: the Subscriber restarts
// from Offsets.Initial (a gap) and leaves a partition stopped by an out-of-range offset dead.
//
// Why a Subscribe is established when it returns: the partition consumers start (at the newest
// offset of each partition, asked of the broker) before the first Subscribe returns, so every
// record produced later is read. A record is handed out only after looking up the map under
// r.mu, and a record produced after Subscribe returned was fetched after the subscription was
// put in that map, so it finds it. Each Subscribe also asks the broker for the high watermark
// of the partitions it reads (the channel's partition: one round trip) before it registers, and
// skips older records: the reader may still be behind, and what was published before Subscribe
// was called must not reach the new subscription.
type reader struct {
	b       *Broker
	topic   string
	demux   bool // key records by channel
	history bool // records carry positions

	startMu sync.Mutex
	started bool
	parts   []int32         // partitions read, set at start
	stopped context.Context // done once the broker closed; set at start
	closed  bool

	mu      sync.Mutex
	subs    map[string]map[*subscription]struct{}
	peak    int                 // most keys subs held since it was made (transports.Shrink)
	changed chan struct{}       // closed (and replaced) when the topic's id changed
	strays  map[string]struct{} // channels seen on a partition not theirs (logged once)
}

// lineageChanged makes every partition consumer check the topic id and start over on a new
// topic.
func (r *reader) lineageChanged() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *reader) changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// subscription is one Subscribe or SubscribeFunc: the reader offers it the records of its key,
// queued on a transports.Relay (at most SubscriptionBuffer; no goroutine or buffer while idle).
type subscription struct {
	r                 *reader
	key               string
	from              map[int32]int64 // per partition, the first offset this subscription takes...
	fromID            string          // ...in the topic of this id (a re-created topic is read whole)
	transports.Ending                 // Cancel ends the subscription (end runs then)
	relay             *transports.Relay
	ended             func()
	stopReader        func() bool
}

// subscribe registers a subscription of key that hands its records to deliver (see
// transports.FuncSubscriber); ended is called once it ended.
func (r *reader) subscribe(ctx context.Context, key string, deliver func(*message.Message) bool, ended func()) error {
	parts, stopped, err := r.start(ctx)
	if err != nil {
		return err
	}
	c := r.b.current()
	if r.demux {
		parts = []int32{partitionFor(key, len(parts))}
	}
	fromID := r.b.topicID(r.topic)
	from := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if from[p], err = c.client.GetOffset(r.topic, p, sarama.OffsetNewest); err != nil {
			return fmt.Errorf("%w: kafka subscribe to %s: %w", transports.ErrUnavailable, r.topic, err)
		}
	}
	if !r.b.track() { // done when the subscription ends
		return transports.ErrClosed
	}
	s := &subscription{r: r, key: key, from: from, fromID: fromID, ended: ended}
	s.Init(ctx)
	// A closed broker delivers nothing more, even before its close reached the subscription.
	s.relay = transports.NewRelay(s.Context(), s.Cancel, transports.RelayConfig{
		Deliver: func(m *message.Message) bool {
			return !r.b.isClosed() && deliver(m)
		},
		Limit:     r.b.cfg.SubscriptionBuffer,
		NackDelay: nackDelay,
		WG:        &r.b.wg,
	})
	r.mu.Lock()
	set := r.subs[key]
	if set == nil {
		set = map[*subscription]struct{}{}
		r.subs[key] = set
		r.subs = transports.Shrink(r.subs, &r.peak)
	}
	set[s] = struct{}{}
	r.mu.Unlock()
	s.stopReader = context.AfterFunc(stopped, s.Cancel) // the broker closed
	s.Start(ctx, s.end)
	return nil
}

// track counts a subscription in b.wg, which Close waits for; false when the broker is closed.
func (b *Broker) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

// start starts a partition consumer on every partition at its newest offset, once, and returns
// the partitions and a context that is done once the broker closed.
func (r *reader) start(ctx context.Context) ([]int32, context.Context, error) {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	if r.closed {
		return nil, nil, transports.ErrClosed
	}
	if r.started {
		return r.parts, r.stopped, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.b.cfg.OperationTimeout)
	defer cancel()
	c, err := r.b.ready(ctx, r.b.cfg.OperationTimeout)
	if err != nil {
		return nil, nil, err
	}
	unavailable := func(err error) error {
		return fmt.Errorf("%w: kafka subscribe to %s: %w", transports.ErrUnavailable, r.topic, err)
	}
	changed := r.changes() // before the id is read: a change after it is seen
	parts, err := c.client.Partitions(r.topic)
	if err == nil && len(parts) == 0 {
		err = errors.New("no partitions")
	}
	if err != nil {
		r.b.kickTopics()
		return nil, nil, unavailable(err)
	}
	consumer := c.consumer
	type started struct {
		p    int32
		pc   sarama.PartitionConsumer
		next int64
	}
	all := make([]started, 0, len(parts))
	for _, p := range parts {
		next, err := c.client.GetOffset(r.topic, p, sarama.OffsetNewest) // (control client)
		var pc sarama.PartitionConsumer
		if err == nil {
			pc, err = consumer.ConsumePartition(r.topic, p, next)
		}
		if err != nil {
			for _, s := range all {
				_ = s.pc.Close()
			}
			return nil, nil, unavailable(err)
		}
		all = append(all, started{p, pc, next})
	}
	id := r.b.topicID(r.topic)
	r.parts = parts // before the goroutines that read it
	for _, s := range all {
		if !r.b.goTrack(func() { r.consume(consumer, s.p, s.pc, s.next, id, changed) }) {
			_ = s.pc.Close() // the goroutines already started close their own
		}
	}
	// The subscriptions end when the broker closes: one goroutine per reader tells them.
	stopped, stop := context.WithCancel(context.Background())
	if !r.b.goTrack(func() { <-r.b.done; stop() }) {
		stop()
	}
	r.stopped = stopped
	r.started = true
	if r.b.isClosed() {
		return nil, nil, transports.ErrClosed
	}
	return parts, stopped, nil
}

// close keeps a start that comes after Close from starting anything.
func (r *reader) close() {
	r.startMu.Lock()
	defer r.startMu.Unlock()
	r.closed = true
}

// consume reads one partition until the broker closes, starting over after the partition
// consumer stopped by itself or the topic was re-created.
func (r *reader) consume(consumer sarama.Consumer, p int32, pc sarama.PartitionConsumer, next int64, id string, changed <-chan struct{}) {
	log := r.b.log.With("topic", r.topic, "partition", p)
	for pc != nil {
		epoch := ""
		if r.history {
			epoch = epochOf(r.topic, p, id)
		}
		if r.b.topicID(r.topic) != id {
			changed = closedChan // the id changed while this consumer started
		}
		msgs, errs := pc.Messages(), pc.Errors()
		for msgs != nil {
			select {
			case <-r.b.done:
				_ = pc.Close()
				return
			case <-changed:
				msgs = nil
			case err, ok := <-errs:
				if !ok {
					errs = nil
					continue
				}
				log.Debug("kafka fetch error", "error", err)
				if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
					r.b.kickTopics()
				}
			case km, ok := <-msgs:
				if !ok {
					msgs = nil
					continue
				}
				next = km.Offset + 1
				r.dispatch(km, id, epoch)
			}
		}
		// sarama stops a partition consumer by itself only when its offset is out of range:
		// retention deleted what was not read yet, or the topic was re-created or truncated.
		_ = pc.Close()
		changed = r.changes()
		pc, next, id = r.resume(consumer, p, next, id, log)
	}
}

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// resume starts the partition again, with backoff until it works or the broker closes.
func (r *reader) resume(consumer sarama.Consumer, p int32, next int64, id string, log *slog.Logger) (sarama.PartitionConsumer, int64, string) {
	bo := backoff{min: 200 * time.Millisecond, max: 5 * time.Second}
	for {
		pc, start, newID, err := r.restartAt(consumer, p, next, id, log)
		if err == nil {
			log.Info("kafka partition consumer resumed", "offset", start)
			return pc, start, newID
		}
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			r.b.kickTopics()
		}
		d := bo.next()
		log.Warn("kafka partition consumer not resumed", "error", err, "retry_in", d)
		if !sleep(d, r.b.done) {
			return nil, 0, id
		}
	}
}

// restartAt starts a partition consumer where reading should go on after next.
func (r *reader) restartAt(consumer sarama.Consumer, p int32, next int64, id string, log *slog.Logger) (sarama.PartitionConsumer, int64, string, error) {
	c := r.b.current()
	newID, err := r.b.refreshTopicID(c, r.topic)
	if err != nil {
		return nil, 0, "", err
	}
	oldest, err := c.client.GetOffset(r.topic, p, sarama.OffsetOldest)
	if err != nil {
		return nil, 0, "", err
	}
	newest, err := c.client.GetOffset(r.topic, p, sarama.OffsetNewest)
	if err != nil {
		return nil, 0, "", err
	}
	start := next
	switch {
	case newID != id:
		start = oldest // a new topic: all of it was written after this reader started
	case next > newest:
		start = newest // truncated: what is left was read already
	case next < oldest:
		start = oldest
		log.Warn("kafka retention deleted records this node had not read yet; closing the partition's subscriptions, their consumers resume",
			"from", next, "to", oldest)
		r.lost(p)
	}
	pc, err := consumer.ConsumePartition(r.topic, p, start)
	if err != nil {
		return nil, 0, "", err
	}
	return pc, start, newID, nil
}

// dispatch queues a record on the subscriptions of its key. A subscription whose queue is full
// holds up this partition for at most SlowTimeout; then it is closed (after delivering what it
// holds) and the partition goes on: a stuck subscriber never blocks the others for long, and a
// fast one that is only behind for a moment loses nothing.
func (r *reader) dispatch(km *sarama.ConsumerMessage, id, epoch string) {
	key := ""
	if r.demux {
		key = channelOf(km)
	}
	r.mu.Lock()
	if r.demux && partitionFor(key, len(r.parts)) != km.Partition {
		// Replay looks for a channel on its own partition only: delivering this live would
		// hand out positions that no replay can resume from.
		if _, seen := r.strays[key]; !seen && len(r.strays) < 1000 {
			r.strays[key] = struct{}{}
			r.b.log.Warn("kafka record of a channel on another partition dropped: produce with key = channel and the FNV-1a partitioner",
				"topic", r.topic, "channel", key, "partition", km.Partition, "want_partition", partitionFor(key, len(r.parts)))
		}
		r.mu.Unlock()
		return
	}
	set := r.subs[key]
	var targets []*subscription
	for s := range set {
		if from, ok := s.from[km.Partition]; ok && km.Offset < from && s.fromID == id {
			continue // published before this subscription
		}
		targets = append(targets, s)
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	msg := toMessage(km, epoch, key)
	for _, s := range targets {
		if !s.relay.Offer(msg, r.b.cfg.SlowTimeout) {
			r.remove(s)
			s.relay.Finish()
			r.b.log.Warn("kafka subscription too slow, closed", "topic", r.topic, "channel", key,
				"buffer", r.b.cfg.SubscriptionBuffer, "waited", r.b.cfg.SlowTimeout)
		}
	}
}

// lost closes the subscriptions fed by partition p after retention deleted records of it that
// the node had not read: each delivers what it holds, then its channel closes and its consumer
// resumes from its position (Replay reports complete=false), instead of going on past the gap.
func (r *reader) lost(p int32) {
	r.mu.Lock()
	var victims []*subscription
	for key, set := range r.subs {
		if r.demux && partitionFor(key, len(r.parts)) != p {
			continue
		}
		for s := range set {
			victims = append(victims, s)
		}
	}
	r.mu.Unlock()
	for _, s := range victims {
		r.remove(s)
		s.relay.Finish()
	}
}

func (r *reader) remove(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if set := r.subs[s.key]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(r.subs, s.key)
			r.subs = transports.Shrink(r.subs, &r.peak)
		}
	}
}

// end runs once the subscription's context is done: nothing is queued or delivered after it
// starts, and ended comes after the last delivery.
func (s *subscription) end() {
	s.relay.Close()
	s.r.remove(s)
	s.stopReader()
	s.ended()
	s.r.b.wg.Done()
}
