// Package memory is the embedded default broker: everything lives in the process.
//
// A Broker holds topics, their subscribers and a bounded history of every channel topic. Nodes
// that share one Broker (tests, or several gateways in one process) form a cluster; separate
// processes each have their own Broker, so positions from another process belong to another
// epoch and resume answers recovered:false.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/transports"
)

// Config sets the history the broker keeps per channel topic.
type Config struct {
	HistorySize int           // messages kept per channel; 0 keeps none
	HistoryTTL  time.Duration // how long a message is kept; 0 keeps it until pushed out by size

	// Bounds, when set, gives the size and TTL of one channel topic's history (a size of 0 or less
	// and a TTL of 0 fall back to HistorySize and HistoryTTL). It is called once per topic, with the
	// logical topic name, when the topic is first used.
	Bounds func(topic string) (size int, ttl time.Duration)
}

// Broker is an in-process broker. Safe for concurrent use.
type Broker struct {
	cfg   Config
	epoch string
	now   func() time.Time

	mu     sync.Mutex
	topics map[string]*topic
	closed bool
}

// NewBroker returns an empty broker.
func NewBroker(cfg Config) *Broker {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Broker{cfg: cfg, epoch: "m" + hex.EncodeToString(b[:]), now: time.Now, topics: map[string]*topic{}}
}

// Close closes every subscription of every node.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	topics := b.topics
	b.topics = map[string]*topic{}
	b.mu.Unlock()
	for _, t := range topics {
		t.close()
	}
}

// topic returns the topic of this name (prefixed), of logical topic logical, creating it.
func (b *Broker) topic(name, logical string) (*topic, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false
	}
	t := b.topics[name]
	if t == nil {
		t = &topic{groups: map[string]*queue{}, history: transports.IsChannelTopic(logical),
			size: b.cfg.HistorySize, ttl: b.cfg.HistoryTTL}
		if t.history && b.cfg.Bounds != nil {
			if size, ttl := b.cfg.Bounds(logical); size > 0 || ttl > 0 {
				if size > 0 {
					t.size = size
				}
				if ttl > 0 {
					t.ttl = ttl
				}
			}
		}
		b.topics[name] = t
	}
	return t, true
}

// Node returns a Backend for one node of this broker. Closing it ends its own subscriptions
// only. prefix namespaces topics, like a topic prefix on a real broker.
func (b *Broker) Node(prefix string) *Backend {
	n := &Backend{broker: b, prefix: prefix, done: make(chan struct{})}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n
}

type stored struct {
	msg *message.Message
	seq uint64
	at  time.Time
}

type topic struct {
	mu      sync.Mutex
	seq     uint64
	history bool
	size    int           // history bounds of this topic
	ttl     time.Duration // 0: no age limit
	log     []stored      // oldest first
	subs    []sink
	groups  map[string]*queue
}

// sink is what a publish hands a topic's messages to: a group's queue, or a SubscribeFunc
// subscription.
type sink interface {
	push(*message.Message)
	close() // the broker closed
}

func (t *topic) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, q := range t.subs {
		q.close()
	}
	for _, q := range t.groups {
		q.close()
	}
	t.subs = nil
}

// trim drops what is over the size or older than the TTL. t.mu is held.
func (t *topic) trim(now time.Time) {
	drop := 0
	if over := len(t.log) - t.size; over > 0 {
		drop = over
	}
	if t.ttl > 0 {
		for drop < len(t.log) && now.Sub(t.log[drop].at) > t.ttl {
			drop++
		}
	}
	if drop > 0 {
		clear(t.log[:drop])
		t.log = t.log[drop:]
	}
}

// Backend is one node's view of a Broker.
type Backend struct {
	broker *Broker
	prefix string

	closeOnce sync.Once
	done      chan struct{}
	ctx       context.Context // cancelled with done: ends the SubscribeFunc subscriptions
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var (
	_ transports.Backend = (*Backend)(nil)
	_ transports.History = (*Backend)(nil)
	_ transports.Handoff = (*Backend)(nil)
)

func (n *Backend) name(topic string) string { return n.prefix + "/" + topic }

func (n *Backend) closed() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Publish implements transports.Backend.
func (n *Backend) Publish(topicName string, msgs ...*message.Message) error {
	if n.closed() {
		return transports.ErrClosed
	}
	t, ok := n.broker.topic(n.name(topicName), topicName)
	if !ok {
		return transports.ErrClosed
	}
	now := n.broker.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		t.seq++
		c := m.Copy()
		if t.history {
			c.Metadata.Set(transports.MetaPosition, transports.Position{Epoch: n.broker.epoch, Lo: t.seq}.String())
			if t.size > 0 {
				t.log = append(t.log, stored{msg: c, seq: t.seq, at: now})
				t.trim(now)
			}
		}
		for _, q := range t.subs {
			q.push(c)
		}
		for _, q := range t.groups {
			q.push(c)
		}
	}
	return nil
}

// Subscribe implements transports.Backend.
func (n *Backend) Subscribe(ctx context.Context, topicName string) (<-chan *message.Message, error) {
	return transports.SubscribeChan(ctx, n, topicName)
}

// SubscribeFunc implements transports.Handoff. The subscription holds no goroutine while it has
// nothing to deliver: a publish starts one, which calls deliver until the queue is empty.
func (n *Backend) SubscribeFunc(ctx context.Context, topicName string, deliver func(*message.Message) bool, ended func()) error {
	if n.closed() {
		return transports.ErrClosed
	}
	t, ok := n.broker.topic(n.name(topicName), topicName)
	if !ok {
		return transports.ErrClosed
	}
	h := &handoff{n: n, t: t, ended: ended}
	h.ctx, h.cancel = context.WithCancel(ctx)
	// Unbounded, as the broker's queues are: a publish never waits for a subscriber.
	h.relay = transports.NewRelay(h.ctx, h.cancel, deliver, math.MaxInt, &n.wg)
	n.wg.Add(1) // done when the subscription ends
	t.mu.Lock()
	t.subs = append(t.subs, h)
	t.mu.Unlock()
	h.stopNode = context.AfterFunc(n.ctx, h.cancel) // the node closed
	context.AfterFunc(h.ctx, h.end)
	return nil
}

// handoff is a subscription of SubscribeFunc: what is published is queued on its relay, whose
// goroutine runs only while messages wait.
type handoff struct {
	n        *Backend
	t        *topic
	relay    *transports.Relay
	ctx      context.Context
	cancel   context.CancelFunc
	stopNode func() bool
	ended    func()
}

func (h *handoff) push(m *message.Message) { h.relay.Offer(m, 0) } // never full
func (h *handoff) close()                  { h.cancel() }

// end ends the subscription once its context is done: ended comes after every delivery.
func (h *handoff) end() {
	h.relay.Close()
	h.stopNode()
	h.t.mu.Lock()
	for i, s := range h.t.subs {
		if s == sink(h) {
			h.t.subs = append(h.t.subs[:i], h.t.subs[i+1:]...)
			break
		}
	}
	h.t.mu.Unlock()
	h.ended()
	h.n.wg.Done()
}

// SubscribeGroup implements transports.Backend. Members of a group share one queue.
func (n *Backend) SubscribeGroup(ctx context.Context, topicName, group string) (<-chan *message.Message, error) {
	if n.closed() {
		return nil, transports.ErrClosed
	}
	t, ok := n.broker.topic(n.name(topicName), topicName)
	if !ok {
		return nil, transports.ErrClosed
	}
	t.mu.Lock()
	q := t.groups[group]
	if q == nil {
		q = newQueue()
		t.groups[group] = q
	}
	t.mu.Unlock()
	out := make(chan *message.Message)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(out)
		q.run(ctx, n.done, func(m *message.Message) bool {
			select {
			case out <- m:
				return true
			case <-ctx.Done():
				return false
			case <-n.done:
				return false
			}
		})
	}()
	return out, nil
}

// Replay implements transports.History.
func (n *Backend) Replay(_ context.Context, topicName string, since transports.Position, limit int) ([]*message.Message, bool, error) {
	if n.closed() {
		return nil, false, transports.ErrClosed
	}
	t, ok := n.broker.topic(n.name(topicName), topicName)
	if !ok {
		return nil, false, transports.ErrClosed
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trim(n.broker.now())
	if since.Epoch != n.broker.epoch || since.Hi != 0 || since.Lo > t.seq {
		return nil, false, nil
	}
	first := t.seq + 1 // oldest seq still retained
	if len(t.log) > 0 {
		first = t.log[0].seq
	}
	if since.Lo+1 < first {
		return nil, false, nil // trimmed past since
	}
	start := len(t.log) - int(t.seq-since.Lo)
	rest := t.log[start:]
	complete := true
	if len(rest) > limit {
		rest, complete = rest[:limit], false
	}
	msgs := make([]*message.Message, len(rest))
	for i, s := range rest {
		msgs[i] = s.msg.Copy()
		msgs[i].Metadata.Set(transports.MetaStoredAt, strconv.FormatInt(s.at.UnixMilli(), 10))
	}
	return msgs, complete, nil
}

// Last implements transports.History.
func (n *Backend) Last(_ context.Context, topicName string) (transports.Position, error) {
	t, ok := n.broker.topic(n.name(topicName), topicName)
	if !ok || n.closed() {
		return transports.Position{}, transports.ErrClosed
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return transports.Position{Epoch: n.broker.epoch, Lo: t.seq}, nil
}

// Ping implements transports.Backend: the embedded broker is always reachable while open.
func (n *Backend) Ping(context.Context) error {
	if n.closed() {
		return transports.ErrClosed
	}
	return nil
}

// Close ends this node's subscriptions. Safe to call twice.
func (n *Backend) Close() error {
	n.closeOnce.Do(func() {
		close(n.done)
		n.cancel()
	})
	n.wg.Wait()
	return nil
}

// queue is a group's unbounded FIFO, drained by one run loop per member.
type queue struct {
	mu     sync.Mutex
	items  []*message.Message
	signal chan struct{} // closed and replaced whenever items are added or the queue closes
	closed bool
}

func newQueue() *queue { return &queue{signal: make(chan struct{})} }

func (q *queue) push(m *message.Message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.items = append(q.items, m)
	close(q.signal)
	q.signal = make(chan struct{})
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.signal)
	}
}

// pop returns the next item, or a channel that is closed when there may be one.
func (q *queue) pop() (*message.Message, <-chan struct{}, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 {
		m := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		return m, nil, true
	}
	return nil, q.signal, !q.closed
}

func (q *queue) unpop(m *message.Message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append([]*message.Message{m}, q.items...)
}

// run hands items to deliver one at a time, each only after the previous was acked; a nacked
// item goes back to the front of the queue. It returns when ctx ends, done closes, the queue
// closes, or deliver refuses an item.
func (q *queue) run(ctx context.Context, done <-chan struct{}, deliver func(*message.Message) bool) {
	for {
		m, wait, open := q.pop()
		if m == nil {
			if !open {
				return
			}
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
		c := m.Copy()
		c.SetContext(ctx)
		if !deliver(c) {
			q.unpop(m)
			return
		}
		select {
		case <-c.Acked():
		case <-c.Nacked():
			q.unpop(m)
		case <-ctx.Done():
			q.unpop(m)
			return
		case <-done:
			q.unpop(m)
			return
		}
	}
}
