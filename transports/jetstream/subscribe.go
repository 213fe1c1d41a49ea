package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Subscribe implements transports.Broker.
//
// A channel topic goes through SubscribeFunc (live.go). On TopicInbound and TopicEvents it
// creates, before returning, an ordered consumer filtered on the topic's subject that starts
// after the stream's last message; it is deleted when ctx ends and expires by itself
// (InactiveThreshold) if the node dies. On TopicDirect it is a core NATS subscription, flushed
// before returning.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if protocol.IsChannelTopic(topic) {
		return transports.SubscribeChan(ctx, b, topic)
	}
	return b.subscribe(ctx, topic, "")
}

var _ transports.FuncSubscriber = (*Broker)(nil)

// SubscribeFunc implements transports.FuncSubscriber. A channel topic is read through the
// stream's republication (live.go): an idle subscription holds no goroutine and no consumer.
// Other topics go through Subscribe, with a goroutine that hands its messages to deliver.
func (b *Broker) SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error {
	if ch, ok := protocol.ChannelOf(topic); ok {
		return b.subscribeLive(ctx, topic, ch, deliver, ended)
	}
	sctx, cancel := context.WithCancel(ctx)
	in, err := b.subscribe(sctx, topic, "")
	if err != nil {
		cancel()
		return err
	}
	b.subMu.Lock()
	if b.closed() {
		b.subMu.Unlock()
		cancel()
		for range in {
		}
		return transports.ErrClosed
	}
	b.wg.Add(1)
	b.subMu.Unlock()
	go func() {
		defer b.wg.Done()
		defer ended()
		defer cancel()
		for m := range in {
			switch transports.DeliverUntilAcked(sctx, m, deliver) {
			case transports.Acked:
				m.Ack()
			case transports.Refused:
				m.Nack()
				cancel()
			default:
				m.Nack()
			}
		}
	}()
	return nil
}

// SubscribeGroup implements transports.Broker. On a stream, members of a group share a durable
// push consumer named SafeName(group)__SafeName(topic) with a deliver group: it starts with the
// messages published after it was first created and keeps its place while no member is
// subscribed, until the stream drops the messages. It is never deleted by the gateway. A message
// stays with the member it was pushed to until that member's subscriber acks or nacks it, or the
// member ends (group.go). On TopicDirect it is a core NATS queue group (nothing is kept).
func (b *Broker) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	if group == "" {
		return nil, errors.New("jetstream: empty group")
	}
	return b.subscribe(ctx, topic, group)
}

// sub is one Subscribe or SubscribeGroup call. It hands out what an upstream (the broker-side
// subscription) delivers, and replaces the upstream when the stream it reads is recreated.
type sub struct {
	b                      *Broker
	topic, subject, stream string
	group                  string
	ctx                    context.Context // the caller's, also cancelled by Close
	out                    chan *message.Message
	log                    *slog.Logger
}

// upstream is a running broker-side subscription of a sub.
type upstream interface {
	// stop ends it; once it returns nothing more is sent to the sub's channel.
	stop()
	// lost is closed when it cannot go on without a gap (nil: never).
	lost() <-chan struct{}
}

func (b *Broker) subscribe(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	if b.closed() {
		return nil, transports.ErrClosed
	}
	subject, stream, err := b.route(topic)
	if err != nil {
		return nil, err
	}
	if err := b.checkUp(); err != nil {
		return nil, err
	}
	if stream != "" && !b.ready.Load() {
		b.signal()
		return nil, fmt.Errorf("jetstream: %w: streams not provisioned yet", transports.ErrUnavailable)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &sub{
		b: b, topic: topic, subject: subject, stream: stream, group: group, ctx: sctx,
		out: make(chan *message.Message),
		log: b.log.With("topic", topic, "group", group),
	}
	lineage := b.lineageChanged(stream)
	up, err := s.open(false)
	if err != nil {
		cancel()
		return nil, err
	}
	b.subMu.Lock()
	if b.closed() {
		b.subMu.Unlock()
		up.stop()
		cancel()
		return nil, transports.ErrClosed
	}
	b.wg.Add(1)
	b.subMu.Unlock()
	stopOnClose := context.AfterFunc(b.ctx, cancel)
	go func() {
		defer b.wg.Done()
		defer close(s.out)
		defer cancel()
		defer stopOnClose()
		s.run(up, lineage)
	}()
	return s.out, nil
}

// open starts an upstream. After the stream was recreated (again), it reads the new stream from its
// start: all of it was published after the subscriber's last message from the old one.
func (s *sub) open(again bool) (upstream, error) {
	switch {
	case s.stream == "":
		return s.openAdapter()
	case s.group == "":
		return s.openOrdered(again)
	default:
		return s.openGroup(again)
	}
}

// run keeps the sub going until its context ends, or until its upstream is lost: the sub's
// channel is then closed, so the Feed reports the subscription lost and its clients resume.
func (s *sub) run(up upstream, lineage <-chan struct{}) {
	for {
		select {
		case <-s.ctx.Done():
			up.stop()
			return
		case <-up.lost():
			up.stop()
			return
		case <-lineage:
		}
		// The stream was recreated: the consumer went with it, and an ordered consumer would go on
		// from a sequence of the old stream.
		up.stop()
		delay := 250 * time.Millisecond
		for {
			lineage = s.b.lineageChanged(s.stream)
			var err error
			if up, err = s.open(true); err == nil {
				break
			}
			s.log.Warn("jetstream: cannot resubscribe after the stream was recreated, retrying", "error", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 5*time.Second)
		}
	}
}

// deliver hands m to the subscriber, one copy at a time, until one is acked (true) or ctx ends
// (false). A nack hands it again when local, else it returns false so the caller nacks it to
// the broker.
func (s *sub) deliver(ctx context.Context, m *message.Message, local bool) bool {
	for {
		c := m.Copy()
		c.SetContext(ctx)
		select {
		case s.out <- c:
		case <-ctx.Done():
			return false
		}
		select {
		case <-c.Acked():
			return true
		case <-c.Nacked():
			if !local {
				return false
			}
		case <-ctx.Done():
			return false
		}
	}
}

// Fan-out on TopicInbound and TopicEvents: an ordered consumer of the nats.go jetstream package,
// not the watermill adapter. The adapter's JetStream subscriber is nats.go's older push API, whose
// ordered consumer, when it is recreated (broker restart, missed heartbeats) before it delivered a
// first message, starts again at stream sequence 1 and so replays the topic's whole history to a
// live subscriber; a plain ephemeral push consumer does not come back after a broker restart.

type orderedUp struct {
	ctx    context.Context // ends with stop
	cancel context.CancelFunc
	cc     jetstream.ConsumeContext
	cons   jetstream.Consumer
	s      *sub
	gap    chan struct{} // closed when the stream dropped messages before they were delivered

	mu      sync.Mutex // held while a message is being delivered
	stopped bool
	// What was delivered last (at open: the start, as if delivered at once): its stream
	// sequence, the broker's timestamp of it, and when the sub took it.
	last           uint64
	lastTS, lastAt time.Time
}

// overtakeMargin bounds, with how late the previous message was taken, the time in which the
// stream could have dropped messages this consumer had not been sent yet (a pull request on its
// way, a full client buffer being worked through).
const overtakeMargin = time.Second

// consumerTimes are the pull expiry and inactive threshold of ordered consumers.
func (b *Broker) consumerTimes() (expiry, inactive time.Duration) {
	expiry = max(30*time.Second, 3*b.cfg.Heartbeat)
	return expiry, 2 * expiry
}

func (s *sub) openOrdered(again bool) (upstream, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.b.cfg.PublishTimeout)
	defer cancel()
	info, _, err := s.b.streamInfo(ctx, s.stream)
	if err != nil {
		return nil, err
	}
	// After the stream's last message, rather than DeliverNew: when the consumer is recreated
	// before it delivered anything it starts here again, not at the broker's "new".
	start := info.State.LastSeq + 1
	if again {
		start = max(info.State.FirstSeq, 1)
	}
	expiry, inactive := s.b.consumerTimes()
	cons, err := s.b.js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{s.subject},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		InactiveThreshold: inactive,
	})
	if err != nil {
		return nil, unavailable("subscribe", err)
	}
	dctx, dcancel := context.WithCancel(s.ctx)
	now := time.Now()
	u := &orderedUp{ctx: dctx, cancel: dcancel, cons: cons, s: s, gap: make(chan struct{}),
		last: start - 1, lastTS: now, lastAt: now}
	u.cc, err = cons.Consume(func(m jetstream.Msg) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.stopped {
			return
		}
		if !u.continuous(m) {
			u.stopped = true
			if dctx.Err() == nil { // not stopping already
				close(u.gap)
			}
			return
		}
		s.deliver(dctx, s.b.codec.fromJetStream(m), true)
		u.lastAt = time.Now()
	},
		jetstream.PullMaxMessages(64),
		jetstream.PullExpiry(expiry),
		jetstream.PullHeartbeat(s.b.cfg.Heartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if s.ctx.Err() == nil {
				s.log.Debug("jetstream: channel consumer", "error", err)
			}
		}))
	if err != nil {
		dcancel()
		u.deleteConsumer()
		return nil, unavailable("subscribe", err)
	}
	return u, nil
}

// continuous reports whether m can be delivered after what was delivered before: false when the
// stream's retention may have dropped messages of the channel in between before this consumer was
// sent them. JetStream moves a consumer past dropped messages without a word, so a jump in stream
// sequence is checked against the stream's first sequence, when it could matter: when the time
// in which the consumer could not have been sent a message (how late the previous one was taken,
// plus overtakeMargin) is a quarter or more of the span of the stream's messages. A healthy node
// on a stream that keeps minutes or more never asks; a quiet channel's last message being old
// does not make it ask. A message is never delivered past a gap that was found.
func (u *orderedUp) continuous(m jetstream.Msg) bool {
	md, err := m.Metadata()
	if err != nil {
		return true // not a JetStream message: the codec says so
	}
	prev, risk := u.last, overtakeMargin+max(0, u.lastAt.Sub(u.lastTS))
	u.last, u.lastTS = md.Sequence.Stream, md.Timestamp
	if md.Sequence.Stream <= prev+1 {
		return true
	}
	if span, ok := u.s.b.streamSpan(u.s.stream); ok && 4*risk < span {
		return true
	}
	ctx, cancel := context.WithTimeout(u.ctx, u.s.b.cfg.PublishTimeout)
	defer cancel()
	info, _, err := u.s.b.streamInfo(ctx, u.s.stream)
	if u.ctx.Err() != nil {
		return false // stopping: nothing is delivered anymore
	}
	if err != nil {
		u.s.log.Warn("jetstream: cannot check the stream for dropped messages, closing the channel subscription; its clients resume",
			"after", prev, "next", md.Sequence.Stream, "error", err)
		return false
	}
	if info.State.FirstSeq <= prev+1 {
		return true
	}
	u.s.log.Warn("jetstream: the stream dropped messages this node had not read yet, closing the channel subscription; its clients resume",
		"after", prev, "next", md.Sequence.Stream, "first", info.State.FirstSeq)
	return false
}

func (u *orderedUp) lost() <-chan struct{} { return u.gap }

func (u *orderedUp) stop() {
	u.cancel()
	u.cc.Stop()
	u.mu.Lock()
	u.stopped = true
	u.mu.Unlock()
	u.deleteConsumer()
}

func (u *orderedUp) deleteConsumer() {
	if !u.s.b.nc.IsConnected() {
		return // it expires by itself
	}
	info := u.cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.s.b.cfg.PublishTimeout)
	defer cancel()
	_ = u.s.b.js.DeleteConsumer(ctx, u.s.stream, info.Name)
}

// TopicDirect (fan-out and groups): the watermill-nats subscriber.

type adapterUp struct {
	nc     *nats.Conn
	gate   *gate
	cancel context.CancelFunc // the adapter's context
	dstop  context.CancelFunc // deliveries in progress
	done   chan struct{}
	wait   time.Duration
}

func (s *sub) durableName() string {
	return transports.SafeName(s.group) + "__" + transports.SafeName(s.topic)
}

// ensureDurable creates the group's consumer unless it exists. Creating it here, rather than
// letting nats.go do it on subscribe, keeps nats.go from deleting it when the subscription ends.
// It returns the consumer's deliver subject and group.
func (s *sub) ensureDurable(ctx context.Context, durable string, again bool) (subject, group string, err error) {
	policy := jetstream.DeliverNewPolicy
	if again {
		policy = jetstream.DeliverAllPolicy
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "wsgateway group " + s.group,
		DeliverSubject: s.b.cfg.Prefix + ".grp." + durable,
		DeliverGroup:   durable,
		FilterSubject:  s.subject,
		DeliverPolicy:  policy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.b.cfg.AckWait,
		MaxDeliver:     -1,
	}
	c, err := s.b.js.CreateOrUpdatePushConsumer(ctx, s.stream, cfg)
	var apiErr *jetstream.APIError
	if err != nil && errors.As(err, &apiErr) {
		// An older server, or settings that cannot change: use the consumer as it is.
		var err2 error
		if c, err2 = s.b.js.PushConsumer(ctx, s.stream, durable); err2 == nil {
			s.log.Warn("jetstream: group consumer exists with other settings, using it as it is", "consumer", durable, "error", err)
			err = nil
		}
	}
	if err != nil {
		return "", "", err
	}
	info := c.CachedInfo()
	return info.Config.DeliverSubject, info.Config.DeliverGroup, nil
}

func (s *sub) openAdapter() (upstream, error) {
	g := newGate()
	cfg := wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:       &codec{b: s.b, gate: g},
		SubscribersCount:  1,
		AckWaitTimeout:    s.b.cfg.AckWait,
		CloseTimeout:      s.b.cfg.PublishTimeout,
		SubscribeTimeout:  s.b.cfg.PublishTimeout,
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
	}
	cfg.JetStream.Disabled = true
	if s.group != "" {
		cfg.QueueGroupPrefix = s.durableName()
	}
	wsub, err := wmnats.NewSubscriberWithNatsConn(s.b.nc, cfg, quietLogger{s.b.wmLog})
	if err != nil {
		return nil, fmt.Errorf("jetstream: subscriber: %w", err)
	}
	actx, acancel := context.WithCancel(context.Background())
	ch, err := wsub.Subscribe(actx, s.subject)
	if err != nil {
		acancel()
		return nil, unavailable("subscribe", err)
	}
	dctx, dcancel := context.WithCancel(s.ctx)
	u := &adapterUp{nc: s.b.nc, gate: g, cancel: acancel, dstop: dcancel, done: make(chan struct{}), wait: s.b.cfg.PublishTimeout}
	go func() {
		defer close(u.done)
		for m := range ch {
			if !g.leave() {
				m.Nack()
				continue
			}
			// Core NATS has no redelivery: a nacked message is handed again here.
			if s.deliver(dctx, m, true) {
				m.Ack()
			} else {
				m.Nack()
			}
		}
	}()
	// The SUB must have reached the server before Subscribe returns.
	if err := s.b.nc.FlushTimeout(s.b.cfg.PublishTimeout); err != nil {
		u.stop()
		return nil, unavailable("subscribe", err)
	}
	return u, nil
}

func (u *adapterUp) lost() <-chan struct{} { return nil }

func (u *adapterUp) stop() {
	u.dstop()
	u.gate.closeAndWait()
	u.cancel()
	<-u.done
	if u.nc.IsConnected() {
		_ = u.nc.FlushTimeout(u.wait)
	}
}
