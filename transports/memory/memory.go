// Package memory is the embedded default broker: everything lives in the process.
//
// A Broker holds topics, their subscribers and a bounded history of every channel topic (per
// channel by count and age, for all channels together by bytes); a topic's state is freed once it
// has neither subscribers nor history left. Groups share an unbounded queue per (topic, group),
// kept while no member is subscribed; the queue of protocol.TopicHooks drops hook requests past
// their deadline (protocol.MetaDeadline), so it keeps only what somebody still waits for.
// protocol.TopicReplies is a fan-out topic like the others. Nodes that share one Broker (tests, or several
// gateways in one process) form a cluster; separate processes each have their own Broker, so
// positions from another process belong to another epoch and resume answers recovered:false.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash/maphash"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Config sets the history the broker keeps per channel topic.
type Config struct {
	HistorySize int           // messages kept per channel; 0 keeps none
	HistoryTTL  time.Duration // how long a message is kept; 0 keeps it until pushed out by size

	// MaxBytes bounds the history of the whole broker, in bytes of payload, id and metadata:
	// beyond it the oldest messages go first, whatever their channel. 0 or less: no bound.
	MaxBytes int64

	// Bounds, when set, gives the size and TTL of one channel topic's history (a size of 0 or less
	// and a TTL of 0 fall back to HistorySize and HistoryTTL). It is called with the logical topic
	// name whenever the topic's state is made (on first use, and again after it was freed).
	Bounds func(topic string) (size int, ttl time.Duration)

	// Presence sets how often a node renews its presence lease (see presence.go).
	Presence transports.PresenceConfig
}

// Broker is an in-process broker. Safe for concurrent use.
//
// A topic's state exists only while it has a subscriber, a group, or history to keep: when the
// last goes (unsubscribed, expired, evicted) the state is freed. Sequence numbers are taken from
// one counter for the whole broker, so a topic made again never reuses a position of its earlier
// life; forgotten remembers, per hash bucket of topic names, the newest message whose history went
// with a freed topic, so a resume from before it answers incomplete. Another topic of the same
// bucket answers so too: on a busy broker, whose buckets all hold recent marks, a resume of any
// channel whose state was freed answers recovered:false even when it missed nothing (the safe
// side: never true where a message was lost). A channel with a subscriber or history is exact.
type Broker struct {
	cfg   Config
	epoch string
	now   func() time.Time
	seq   atomic.Uint64 // the last sequence number given to a message, of any topic

	mu        sync.Mutex
	topics    map[string]*topic
	peak      int // most topics held since the map was made (transports.Shrink)
	closed    bool
	forgotten [forgetBuckets]uint64 // per hash of topic names: the newest message of a freed topic
	seed      maphash.Seed
	janitor   *janitor
	janitorOn atomic.Bool // janitor is set

	ledger ledger

	presence presence
	reaperOn bool // the presence reaper was started (b.mu)

	control control // the control store of every prefix (control.go)
}

// NewBroker returns an empty broker. It starts no goroutine: the one expiring history starts
// with the first message kept with an age limit, and Close stops it.
func NewBroker(cfg Config) *Broker {
	var b [6]byte
	_, _ = rand.Read(b[:])
	br := &Broker{cfg: cfg, epoch: "m" + hex.EncodeToString(b[:]), now: time.Now, topics: map[string]*topic{},
		seed: maphash.MakeSeed()}
	br.ledger.init()
	return br
}

// Close closes every subscription of every node and stops expiring history. Safe to call twice.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	topics := b.topics
	b.topics = map[string]*topic{}
	j := b.janitor
	b.mu.Unlock()
	if j != nil {
		j.stop()
	}
	for _, t := range topics {
		t.close()
	}
	b.ledger.reset()
	b.stopReaper()
}

// HistoryBytes is the size of the history the broker keeps now, as MaxBytes counts it.
func (b *Broker) HistoryBytes() int64 { return b.ledger.total() }

// Topics is the number of topics whose state the broker holds now.
func (b *Broker) Topics() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.topics)
}

// use calls fn with the topic of this name (prefixed), of logical topic logical, locked, making it
// when there is none. It reports false when the broker is closed.
func (b *Broker) use(name, logical string, fn func(t *topic)) bool {
	for {
		t, ok := b.topic(name, logical)
		if !ok {
			return false
		}
		t.mu.Lock()
		if t.freed { // freed between the lookup and the lock: take the new one
			t.mu.Unlock()
			continue
		}
		fn(t)
		t.mu.Unlock()
		return true
	}
}

// topic returns the topic of this name, making it.
func (b *Broker) topic(name, logical string) (*topic, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false
	}
	t := b.topics[name]
	if t == nil {
		t = b.newTopic(name, logical)
		b.topics[name] = t
		b.topics = transports.Shrink(b.topics, &b.peak)
	}
	return t, true
}

// newTopic makes the state of a topic. b.mu is held.
func (b *Broker) newTopic(name, logical string) *topic {
	t := &topic{name: name, history: protocol.IsChannelTopic(logical),
		size: b.cfg.HistorySize, ttl: b.cfg.HistoryTTL}
	// Every message of this topic comes after last; the ones of its earlier lives that are gone
	// are at most b.forgotten.
	t.last = b.seq.Load()
	t.dropped = b.forgotten[b.bucket(name)]
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
	return t
}

// forgetBuckets is the number of hash buckets of Broker.forgotten.
const forgetBuckets = 1024

func (b *Broker) bucket(name string) int { return int(maphash.String(b.seed, name) % forgetBuckets) }

// lookup returns the topic of this name if it has state, and else its forgotten mark.
func (b *Broker) lookup(name string) (*topic, uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.topics[name], b.forgotten[b.bucket(name)], !b.closed
}

// release frees t's state if it has no subscriber, no group and no history left.
func (b *Broker) release(t *topic) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.freed || !t.idle() || b.topics[t.name] != t {
		return
	}
	delete(b.topics, t.name)
	b.topics = transports.Shrink(b.topics, &b.peak)
	t.freed = true
	i := b.bucket(t.name)
	b.forgotten[i] = max(b.forgotten[i], t.dropped)
}

// Node returns a transports.Broker for one node of this broker. Closing it ends its own subscriptions
// only. prefix namespaces topics, like a topic prefix on a real broker.
func (b *Broker) Node(prefix string) *Node {
	return &Node{broker: b, prefix: prefix, done: make(chan struct{})}
}

// stored is one message of a topic's history.
type stored struct {
	msg  *message.Message
	seq  uint64
	at   time.Time
	size int64
	t    *topic
	gone atomic.Bool // dropped from t.log (set under t.mu; read by the ledger without it)
}

type topic struct {
	name    string
	mu      sync.Mutex
	freed   bool // no longer the broker's: look the name up again
	last    uint64
	dropped uint64 // the highest sequence number of a message of this channel no longer kept
	history bool
	size    int           // history bounds of this topic
	ttl     time.Duration // 0: no age limit
	log     []*stored     // oldest first
	subs    []sink
	groups  map[string]*queue
}

// sink is what a publish hands a topic's messages to: a group's queue, or a SubscribeFunc
// subscription.
type sink interface {
	push(*message.Message)
	close() // the broker closed
}

// idle reports whether the topic holds nothing worth keeping. t.mu is held.
func (t *topic) idle() bool { return len(t.subs) == 0 && len(t.groups) == 0 && len(t.log) == 0 }

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

// removeSub takes s out of t.subs, leaving no reference to it in the array. t.mu is held.
func (t *topic) removeSub(s sink) {
	for i, o := range t.subs {
		if o == s {
			last := len(t.subs) - 1
			t.subs[i] = t.subs[last]
			t.subs[last] = nil
			t.subs = t.subs[:last]
			if len(t.subs) == 0 {
				t.subs = nil
			}
			return
		}
	}
}

// trim drops what is over the size or older than the TTL. t.mu is held.
func (t *topic) trim(now time.Time, l *ledger) {
	drop := 0
	if over := len(t.log) - t.size; over > 0 {
		drop = over
	}
	if t.ttl > 0 {
		for drop < len(t.log) && now.Sub(t.log[drop].at) > t.ttl {
			drop++
		}
	}
	t.drop(drop, l)
}

// drop drops the n oldest messages of the history. t.mu is held.
func (t *topic) drop(n int, l *ledger) {
	if n <= 0 {
		return
	}
	gone := t.log[:n]
	t.dropped = max(t.dropped, gone[n-1].seq)
	l.remove(gone)
	for _, s := range gone {
		s.msg = nil // the ledger's age queue may point to s a while longer: not to its payload
	}
	clear(gone)
	t.log = t.log[n:]
	if len(t.log) == 0 {
		t.log = nil // an empty history keeps no array
	}
}

// dropThrough drops the messages of the history up to s, if s is still in it. t.mu is held.
func (t *topic) dropThrough(s *stored, l *ledger) {
	if s.gone.Load() {
		return
	}
	t.drop(t.after(s.seq), l)
}

// after returns the index in t.log of the first message after seq. t.mu is held.
func (t *topic) after(seq uint64) int {
	return sort.Search(len(t.log), func(i int) bool { return t.log[i].seq > seq })
}

// Node is one node's view of a Broker.
type Node struct {
	broker *Broker
	prefix string

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup // the open SubscribeFunc subscriptions and groups' goroutines

	// subs are the open SubscribeFunc subscriptions, which Close ends (subsMu). A set rather
	// than an AfterFunc of a node context per subscription: an entry here is a few bytes.
	subsMu   sync.Mutex
	subs     map[*funcSub]struct{}
	subsPeak int // transports.Shrink

	// Presence: what this node joined (its truth, by channel and session; the broker's
	// presence lock guards it), its lease renewal, and a test hook that pauses the renewal.
	local     map[string]map[string]protocol.Member
	renewOnce sync.Once
	paused    atomic.Bool
}

var (
	_ transports.Broker            = (*Node)(nil)
	_ transports.History           = (*Node)(nil)
	_ transports.FuncSubscriber    = (*Node)(nil)
	_ transports.Presence          = (*Node)(nil)
	_ transports.PositionPublisher = (*Node)(nil)
	_ transports.ReverseHistory    = (*Node)(nil)
)

func (n *Node) name(topic string) string { return n.prefix + "/" + topic }

func (n *Node) closed() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Publish implements transports.Broker.
func (n *Node) Publish(topicName string, msgs ...*message.Message) error {
	_, err := n.publish(topicName, msgs, false)
	return err
}

// PublishPositions implements transports.PositionPublisher: the broker's counter of each
// message, for topics with history (channel topics).
func (n *Node) PublishPositions(topicName string, msgs ...*message.Message) ([]protocol.Position, error) {
	return n.publish(topicName, msgs, true)
}

func (n *Node) publish(topicName string, msgs []*message.Message, positions bool) ([]protocol.Position, error) {
	if n.closed() {
		return nil, transports.ErrClosed
	}
	var pos []protocol.Position
	b := n.broker
	var (
		t          *topic
		kept, idle bool
	)
	ok := b.use(n.name(topicName), topicName, func(locked *topic) {
		t = locked
		if positions && t.history {
			pos = make([]protocol.Position, len(msgs))
		}
		kept = t.publish(b, msgs, pos)
		idle = t.idle()
	})
	if !ok {
		return nil, transports.ErrClosed
	}
	if kept {
		if t.ttl > 0 {
			b.startJanitor()
		}
		b.evict()
	}
	if idle {
		b.release(t)
	}
	return pos, nil
}

// publish numbers msgs, keeps them in the history and hands them to the subscribers, and
// writes each one's position into pos when pos is not nil. It reports whether any was kept.
// t.mu is held.
func (t *topic) publish(b *Broker, msgs []*message.Message, pos []protocol.Position) bool {
	now := b.now()
	first := len(t.log)
	for i, m := range msgs {
		seq := b.seq.Add(1)
		t.last = seq
		c := transports.CopyMessage(m, 1) // and its position
		if t.history {
			p := protocol.Position{Epoch: b.epoch, Lo: seq}
			if pos != nil {
				pos[i] = p
			}
			c.Metadata.Set(protocol.MetaPosition, p.String())
			if t.size > 0 {
				t.log = append(t.log, &stored{msg: c, seq: seq, at: now, size: sizeOf(c), t: t})
			} else {
				t.dropped = seq
			}
		}
		for _, q := range t.subs {
			q.push(c)
		}
		for _, q := range t.groups {
			q.push(c)
		}
	}
	added := t.log[first:]
	if len(added) > 0 {
		b.ledger.add(added)
	}
	if t.history {
		t.trim(now, &b.ledger)
	}
	return len(added) > 0
}

// Subscribe implements transports.Broker.
func (n *Node) Subscribe(ctx context.Context, topicName string) (<-chan *message.Message, error) {
	return transports.SubscribeChan(ctx, n, topicName)
}

// SubscribeFunc implements transports.FuncSubscriber. The subscription holds no goroutine while it has
// nothing to deliver: a publish starts one, which calls deliver until the queue is empty.
func (n *Node) SubscribeFunc(ctx context.Context, topicName string, deliver func(*message.Message) bool, ended func()) error {
	if n.closed() {
		return transports.ErrClosed
	}
	h := &funcSub{n: n, ended: ended}
	h.Init(ctx)
	cancel := h.Cancel
	// Unbounded, as the broker's queues are: a publish never waits for a subscriber.
	h.relay = transports.NewRelay(h.Context(), cancel, transports.RelayConfig{Deliver: deliver, Limit: math.MaxInt, WG: &n.wg})
	if !n.add(h) { // counts h in n.wg until it ended
		h.Cancel()
		return transports.ErrClosed
	}
	ok := n.broker.use(n.name(topicName), topicName, func(t *topic) {
		h.t = t
		t.subs = append(t.subs, h)
	})
	if !ok {
		h.Cancel()
		n.remove(h)
		n.wg.Done()
		return transports.ErrClosed
	}
	h.Start(ctx, h.end)
	return nil
}

// add counts h among the node's open subscriptions (and in n.wg); false once the node closed.
func (n *Node) add(h *funcSub) bool {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	if n.closed() { // Close closes done before it takes the subscriptions to end
		return false
	}
	if n.subs == nil {
		n.subs = map[*funcSub]struct{}{}
	}
	n.subs[h] = struct{}{}
	n.subs = transports.Shrink(n.subs, &n.subsPeak)
	n.wg.Add(1)
	return true
}

// remove forgets h (it ended); n.wg is the caller's.
func (n *Node) remove(h *funcSub) {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	delete(n.subs, h)
	n.subs = transports.Shrink(n.subs, &n.subsPeak)
}

// funcSub is a subscription of SubscribeFunc: what is published is queued on its relay, whose
// goroutine runs only while messages wait. It ends (Cancel) when the caller's context ends, the
// node or the broker closes, or the subscriber refuses a message (the relay).
type funcSub struct {
	transports.Ending
	n     *Node
	t     *topic
	relay *transports.Relay
	ended func()
}

func (h *funcSub) push(m *message.Message) { h.relay.Offer(m, 0) } // never full
func (h *funcSub) close()                  { h.Cancel() }

// end ends the subscription once its context is done: ended comes after every delivery. The
// topic's state goes with its last subscriber unless it has history to keep.
func (h *funcSub) end() {
	h.relay.Close()
	h.n.remove(h)
	h.t.mu.Lock()
	h.t.removeSub(h)
	idle := h.t.idle()
	h.t.mu.Unlock()
	if idle {
		h.n.broker.release(h.t)
	}
	h.ended()
	h.n.wg.Done()
}

// SubscribeGroup implements transports.Broker. Members of a group share one queue.
func (n *Node) SubscribeGroup(ctx context.Context, topicName, group string) (<-chan *message.Message, error) {
	if n.closed() {
		return nil, transports.ErrClosed
	}
	var q *queue
	ok := n.broker.use(n.name(topicName), topicName, func(t *topic) {
		if q = t.groups[group]; q == nil {
			q = newQueue()
			q.expiring = topicName == protocol.TopicHooks
			if t.groups == nil {
				t.groups = map[string]*queue{}
			}
			t.groups[group] = q
		}
	})
	if !ok {
		return nil, transports.ErrClosed
	}
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
func (n *Node) Replay(_ context.Context, topicName string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	if n.closed() {
		return nil, false, transports.ErrClosed
	}
	b := n.broker
	if since.Epoch != b.epoch || since.Hi != 0 || since.Lo > b.seq.Load() {
		return nil, false, nil
	}
	for {
		t, forgotten, ok := b.lookup(n.name(topicName))
		if !ok {
			return nil, false, transports.ErrClosed
		}
		if t == nil {
			// Nothing of the channel is kept; what it had is gone, all of it at most forgotten.
			return nil, since.Lo >= forgotten, nil
		}
		t.mu.Lock()
		if t.freed {
			t.mu.Unlock()
			continue
		}
		msgs, complete := t.replay(b, since, limit)
		idle := t.idle()
		t.mu.Unlock()
		if idle {
			b.release(t)
		}
		return msgs, complete, nil
	}
}

// replay returns copies of what the history has after since (at most limit) and whether that
// is everything after it. t.mu is held.
func (t *topic) replay(b *Broker, since protocol.Position, limit int) ([]*message.Message, bool) {
	t.trim(b.now(), &b.ledger)
	if since.Lo < t.dropped {
		return nil, false // trimmed past since
	}
	rest := t.log[t.after(since.Lo):]
	complete := true
	if len(rest) > limit {
		rest, complete = rest[:limit], false
	}
	msgs := make([]*message.Message, len(rest))
	for i, s := range rest {
		msgs[i] = s.msg.Copy()
		msgs[i].Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(s.at.UnixMilli(), 10))
	}
	return msgs, complete
}

// Before implements transports.ReverseHistory: the history kept for the channel, newest first,
// within its size and TTL.
func (n *Node) Before(_ context.Context, topicName string, before protocol.Position, limit int) ([]*message.Message, error) {
	if n.closed() {
		return nil, transports.ErrClosed
	}
	b := n.broker
	if !before.IsZero() && (before.Epoch != b.epoch || before.Hi != 0) {
		return nil, nil
	}
	for {
		t, _, ok := b.lookup(n.name(topicName))
		if !ok {
			return nil, transports.ErrClosed
		}
		if t == nil {
			return nil, nil
		}
		t.mu.Lock()
		if t.freed {
			t.mu.Unlock()
			continue
		}
		t.trim(b.now(), &b.ledger)
		end := len(t.log)
		if !before.IsZero() {
			end = t.after(before.Lo - min(before.Lo, 1)) // the first at or after before
		}
		var msgs []*message.Message
		for i := end - 1; i >= 0 && len(msgs) < limit; i-- {
			s := t.log[i]
			m := s.msg.Copy()
			m.Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(s.at.UnixMilli(), 10))
			msgs = append(msgs, m)
		}
		idle := t.idle()
		t.mu.Unlock()
		if idle {
			b.release(t)
		}
		return msgs, nil
	}
}

// Last implements transports.History. A channel without a message in its history gets the
// broker's latest sequence number: whatever it receives next comes after it.
func (n *Node) Last(_ context.Context, topicName string) (protocol.Position, error) {
	if n.closed() {
		return protocol.Position{}, transports.ErrClosed
	}
	b := n.broker
	for {
		t, _, ok := b.lookup(n.name(topicName))
		if !ok {
			return protocol.Position{}, transports.ErrClosed
		}
		if t == nil {
			return protocol.Position{Epoch: b.epoch, Lo: b.seq.Load()}, nil
		}
		t.mu.Lock()
		if t.freed {
			t.mu.Unlock()
			continue
		}
		last := t.last
		if len(t.log) == 0 {
			last = b.seq.Load() // read under t.mu: the topic's next message comes after it
		}
		t.mu.Unlock()
		return protocol.Position{Epoch: b.epoch, Lo: last}, nil
	}
}

// Start implements transports.Broker. It does nothing: a node of the in-process broker has
// nothing to connect to (the broker's goroutine that expires history starts with the first
// message kept with an age limit, its presence reaper with the first Join, and both stop with
// Broker.Close; a node's presence lease renewal starts with its first Join and stops with
// Node.Close). A node works before Start too, presence included. After Close it returns
// transports.ErrClosed.
func (n *Node) Start(context.Context) error {
	if n.closed() {
		return transports.ErrClosed
	}
	return nil
}

// Ping implements transports.Broker: the embedded broker is always reachable while open.
func (n *Node) Ping(context.Context) error {
	if n.closed() {
		return transports.ErrClosed
	}
	return nil
}

// Close ends this node's subscriptions and its presence lease renewal; it does not leave its
// members, which the broker reaps once the lease ran out (as for a node that died). Safe to call
// twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.done)
		n.subsMu.Lock() // no subscription is added now (add sees done closed)
		subs := n.subs
		n.subs, n.subsPeak = nil, 0
		n.subsMu.Unlock()
		for h := range subs {
			h.Cancel()
		}
		n.forget()
	})
	n.wg.Wait()
	return nil
}

// queue is a group's unbounded FIFO, drained by one run loop per member. The queue of a group on
// protocol.TopicHooks is expiring: requests past their deadline (protocol.MetaDeadline) are
// dropped from its front on every push and skipped by pop, so a group without members keeps only
// the requests somebody still waits for.
type queue struct {
	mu       sync.Mutex
	items    []*message.Message
	signal   chan struct{} // closed and replaced whenever items are added or the queue closes
	closed   bool
	expiring bool
}

// expired reports whether m is a request past its deadline.
func expired(m *message.Message, now time.Time) bool {
	ms, err := strconv.ParseInt(m.Metadata.Get(protocol.MetaDeadline), 10, 64)
	return err == nil && now.UnixMilli() >= ms
}

// dropExpired drops the expired requests at the front of an expiring queue. q.mu is held.
func (q *queue) dropExpired() {
	if !q.expiring {
		return
	}
	now := time.Now()
	for len(q.items) > 0 && expired(q.items[0], now) {
		q.items[0] = nil
		q.items = q.items[1:]
	}
}

func newQueue() *queue { return &queue{signal: make(chan struct{})} }

func (q *queue) push(m *message.Message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.dropExpired()
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
	q.dropExpired()
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
		c := transports.CopyMessage(m, 0)
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
