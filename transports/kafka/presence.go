package kafka

// Presence on Kafka: the compacted topic <prefix>.presence, of one partition so that every node
// reads the same total order, is a replicated log. Every node that uses presence reads it whole,
// from its start, into a view of its own (a roster.Roster) and applies each record the same way:
// the views agree, and what applying a record changed (the channel occupied, vacated, the members
// a reap removed) is the same on every node, so exactly one writer hears it. Keys ("\x00"
// separates) and values:
//
//	m <channel> <session>  a member: JSON {"m": member, "i": owner incarnation}; null (a tombstone): it left
//	h <node id>            a heartbeat: JSON {"i": incarnation, "r": the node reaps (OnReap set)}
//	r <incarnation>        that incarnation is reaped: JSON {"by": the reaper's process id, "n": the reaped node}
//
// An incarnation is a random id a Broker takes at New and again when it finds itself reaped
// (its lease ran out while it lived); a member is owned by the incarnation that put it. A put by
// an incarnation that was reaped before it is applied as a leave (its writer records it again
// under its new incarnation), and a reap removes what its incarnation owns when it is applied:
// both are decided by the log's order, so compaction (the newest record of each key kept, in
// order) leaves the same view to a node that reads the topic later.
//
// Leases: an active node (one that joined, or set OnReap) heartbeats twice per Heartbeat. Each
// node counts, per other incarnation, its own heartbeats applied since that incarnation's last
// one, and notes when (on its own clock) it applied that last one. An incarnation is silent once
// reapAfter of those heartbeats were applied (the log shows it silent for that span, whatever the
// lag of the node's reader: its own heartbeats come through the same log) and leaseTTL (1.5)
// heartbeats have passed since its last one was seen, so that a heartbeat may be a whole
// Heartbeat late. At its next reaping pass (every quarter Heartbeat, and after each of its
// heartbeats), the live node first by (reaps, node id, incarnation) then
// writes "r <incarnation>"; the first such record applied removes the members on every node, and
// its writer alone calls OnReap. After each of its heartbeats a node also compares its own record
// of what it joined and left (the node's truth) with the view and writes what differs: a node that
// was reaped, or whose records a broker lost, records its members again by itself, silently.
// docs/brokers/kafka.md describes the costs.

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/internal/roster"
)

const (
	// reapAfter is how many of its own heartbeats (two per Heartbeat) a node applies after an
	// incarnation's last heartbeat before it reaps that incarnation, once leaseTTL heartbeats
	// have also passed on its clock since it saw that last heartbeat (peer.seen): 3 span about 1
	// to 1.5 heartbeats, so the clock decides, and the reap comes at the node's first reaping
	// pass (every quarter heartbeat) after those 1.5, within 1.75 heartbeats of the last one
	// seen; the count keeps a node whose reader lags (which sees its own heartbeats late too)
	// from reaping a live one.
	reapAfter = 3
	// leaseTTL is how long, in heartbeats, an incarnation's heartbeat keeps it alive on the
	// reader's clock.
	leaseTTL = 1.5
	// opHeader names the operation a record answers (process id "." sequence), so that its
	// writer learns what applying it changed.
	opHeader = "op"
)

// presence is the Broker's presence state: the view read from the topic, and this process's own
// record of its members. Its lock, mu, is never held during I/O.
type presence struct {
	node string // Config.NodeID, or a random id
	proc string // this process's id: the reaps it wrote, the operations it waits for

	// stripes order a member's writes by this node: Join, Leave, reconcile. They are held across
	// network writes (a Join's produce, the reconcile's batch), so they are taken within a ctx.
	stripes [64]stripe
	paused  atomic.Bool // set by tests: the node stops heartbeating (it hangs)

	mu          sync.Mutex
	inc         string                                // this process's current incarnation
	view        roster.Roster[string]                 // every member, with its owner incarnation
	owned       map[string]map[memberKey]struct{}     // owner incarnation -> its members
	dead        map[string]struct{}                   // reaped incarnations
	peers       map[string]*peer                      // other incarnations, live or with members
	next        int64                                 // the next offset to apply; -1 before the first read
	topicID     string                                // of the topic the view was read from
	progress    chan struct{}                         // closed and replaced when next moves or the view is reset
	changed     chan struct{}                         // closed and replaced when the topic was re-created
	local       map[string]map[string]protocol.Member // what this node joined: channel -> session -> member
	pending     map[memberKey]int                     // this node's writes not applied yet, per member
	ops         map[string]*op                        // by id
	opSeq       uint64
	beats       int            // this incarnation's heartbeats applied
	asked       map[string]int // incarnations this node wrote a reap for: beats then
	onReap      func(channel string, m protocol.Member, vacated bool)
	want        bool // OnReap was set: start with the connection
	started     bool
	active      bool          // the node heartbeats and reaps: it joined or set OnReap
	activated   chan struct{} // closed when active is set
	wake        chan struct{} // wakes the heartbeat loop (a new incarnation)
	reaps       []reapCall    // members this process reaped, for OnReap and their tombstones
	reapedNodes []string      // nodes this process reaped, for the tombstones of their heartbeats
	reapWake    chan struct{}
}

type memberKey struct{ channel, session string }

func (k memberKey) record() string { return "m\x00" + k.channel + "\x00" + k.session }

// peer is another incarnation as this node sees it.
type peer struct {
	node  string
	reaps bool
	beat  bool      // it heartbeated (since this view began)
	since int       // this node's heartbeats applied since its last one (or since it was first seen)
	seen  time.Time // when this node applied its last heartbeat (or first saw it), on its clock
}

// silent reports whether the incarnation of pe is to be reaped at now (hb: Heartbeat).
func (pe *peer) silent(now time.Time, hb time.Duration) bool {
	return pe.since >= reapAfter && now.Sub(pe.seen) >= time.Duration(leaseTTL*float64(hb))
}

// op is a record this node wrote and waits to see applied.
type op struct {
	id     string
	key    memberKey
	keyed  bool         // a member's record: counted in pending
	offset int64        // its offset once the write was acknowledged, else -1
	done   chan outcome // nil when nobody waits
}

// outcome is what applying a record changed.
type outcome struct {
	occupied, vacated bool
	dead              bool // a put by a reaped incarnation: applied as a leave
}

type reapCall struct {
	fn      func(string, protocol.Member, bool)
	channel string
	m       protocol.Member
	vacated bool
}

type memberValue struct {
	M protocol.Member `json:"m"`
	I string          `json:"i"`
}

type beatValue struct {
	I string `json:"i"`
	R bool   `json:"r,omitempty"`
}

type reapValue struct {
	By string `json:"by"` // the reaper's process id
	N  string `json:"n"`  // the reaped node's id
}

func randomID() string {
	var p [8]byte
	_, _ = rand.Read(p[:])
	return hex.EncodeToString(p[:])
}

func (p *presence) init(node string) {
	if node == "" {
		node = randomID()
	}
	p.node, p.proc, p.inc = node, randomID(), randomID()
	p.next = -1
	p.progress, p.changed = make(chan struct{}), make(chan struct{})
	p.activated, p.wake, p.reapWake = make(chan struct{}), make(chan struct{}, 1), make(chan struct{}, 1)
	p.local, p.pending, p.ops, p.asked = map[string]map[string]protocol.Member{}, map[memberKey]int{}, map[string]*op{}, map[string]int{}
	p.owned, p.dead, p.peers = map[string]map[memberKey]struct{}{}, map[string]struct{}{}, map[string]*peer{}
	for i := range p.stripes {
		p.stripes[i] = newStripe()
	}
}

func (p *presence) stripe(k memberKey) stripe {
	h := fnv.New32a()
	_, _ = h.Write([]byte(k.channel))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(k.session))
	return p.stripes[h.Sum32()%uint32(len(p.stripes))]
}

// stripe is a lock that is taken within a ctx: a Join or Leave does not wait past its deadline
// for a write of another (a slow Kafka), it fails with the ctx's error.
type stripe chan struct{}

func newStripe() stripe { return make(stripe, 1) }

func (s stripe) lock(ctx context.Context) error {
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s stripe) unlock() { <-s }

func (p *presence) wanted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want
}

// activate makes the node heartbeat and reap; p.mu is held.
func (p *presence) activate() {
	if !p.active {
		p.active = true
		close(p.activated)
	}
}

func (p *presence) lineageChanged() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *presence) changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// newOp registers an operation; p.mu is held.
func (p *presence) newOp(k *memberKey, wait bool) *op {
	p.opSeq++
	o := &op{id: p.proc + "." + strconv.FormatUint(p.opSeq, 10), offset: -1}
	if k != nil {
		o.key, o.keyed = *k, true
		p.pending[*k]++
	}
	if wait {
		o.done = make(chan outcome, 1)
	}
	p.ops[o.id] = o
	return o
}

// settle ends an operation: removed from ops, its member no longer pending, its waiter told.
// p.mu is held.
func (p *presence) settle(o *op, out outcome) {
	if _, ok := p.ops[o.id]; !ok {
		return
	}
	delete(p.ops, o.id)
	if o.keyed {
		if p.pending[o.key]--; p.pending[o.key] <= 0 {
			delete(p.pending, o.key)
		}
	}
	if o.done != nil {
		o.done <- out
	}
}

func (p *presence) drop(o *op) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settle(o, outcome{})
}

// hold and unhold change the node's own record; p.mu is held.
func (p *presence) hold(channel string, m protocol.Member) {
	if p.local[channel] == nil {
		p.local[channel] = map[string]protocol.Member{}
	}
	p.local[channel][m.Session] = m
}

func (p *presence) unhold(channel, session string) {
	delete(p.local[channel], session)
	if len(p.local[channel]) == 0 {
		delete(p.local, channel)
	}
}

func sameMember(a, b protocol.Member) bool {
	return a.User == b.User && a.Session == b.Session && a.Node == b.Node && string(a.Info) == string(b.Info)
}

// reset empties the view before it is read from start of the topic of id. A write that someone
// waits for stays registered (its record may be in the new topic, or lost with the old one: its
// waiter then gives up at its deadline); the reconcile's writes are forgotten (it writes again
// what is still missing). p.mu is held.
func (p *presence) reset(start int64, id string) {
	p.view = roster.Roster[string]{}
	clear(p.owned)
	clear(p.dead)
	clear(p.peers)
	clear(p.asked)
	for _, o := range p.ops {
		if o.done == nil {
			p.settle(o, outcome{})
		}
	}
	p.next, p.topicID = start, id
	close(p.progress)
	p.progress = make(chan struct{})
}

// apply applies one record of the topic to the view.
func (p *presence) apply(km *sarama.ConsumerMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if km.Offset < p.next {
		return
	}
	if km.Offset > p.next {
		// Records were compacted away: an operation whose record was among them is over.
		for _, o := range p.ops {
			if o.offset >= 0 && o.offset < km.Offset {
				p.settle(o, outcome{})
			}
		}
	}
	p.next = km.Offset + 1
	var out outcome
	key := string(km.Key)
	switch {
	case strings.HasPrefix(key, "m\x00"):
		channel, session, ok := strings.Cut(key[2:], "\x00")
		if !ok {
			break
		}
		if km.Value == nil {
			_, _, out.vacated = p.remove(channel, session)
			break
		}
		var v memberValue
		if json.Unmarshal(km.Value, &v) != nil || v.M.Session != session {
			break
		}
		if _, dead := p.dead[v.I]; dead {
			_, _, out.vacated = p.remove(channel, session)
			out.dead = true
			break
		}
		out.occupied = p.put(channel, v.M, v.I)
	case strings.HasPrefix(key, "h\x00"):
		var v beatValue
		if km.Value == nil {
			p.forget(key[2:])
		} else if json.Unmarshal(km.Value, &v) == nil {
			p.beat(key[2:], v)
		}
	case strings.HasPrefix(key, "r\x00"):
		var v reapValue
		if km.Value != nil && json.Unmarshal(km.Value, &v) == nil {
			p.reap(key[2:], v)
		}
	}
	for _, h := range km.Headers {
		if h != nil && string(h.Key) == opHeader {
			if o := p.ops[string(h.Value)]; o != nil {
				p.settle(o, out)
			}
		}
	}
	close(p.progress)
	p.progress = make(chan struct{})
}

// put records m in channel for inc and reports whether the channel was empty; p.mu is held.
func (p *presence) put(channel string, m protocol.Member, inc string) bool {
	occupied, old, had := p.view.Put(channel, roster.Entry[string]{M: m, X: inc})
	k := memberKey{channel, m.Session}
	if had && old.X != inc {
		p.disown(old.X, k)
		if old.X == p.inc && p.pending[k] == 0 {
			p.unhold(channel, m.Session) // the session moved to another node: one owner only
		}
	}
	set := p.owned[inc]
	if set == nil {
		set = map[memberKey]struct{}{}
		p.owned[inc] = set
	}
	set[k] = struct{}{}
	if _, known := p.peers[inc]; !known && inc != p.inc {
		p.peers[inc] = &peer{node: m.Node, seen: time.Now()}
	}
	return occupied
}

// remove takes session out of channel; p.mu is held.
func (p *presence) remove(channel, session string) (roster.Entry[string], bool, bool) {
	e, ok, vacated := p.view.Remove(channel, session)
	if ok {
		p.disown(e.X, memberKey{channel, session})
	}
	return e, ok, vacated
}

func (p *presence) disown(inc string, k memberKey) {
	if set := p.owned[inc]; set != nil {
		delete(set, k)
		if len(set) == 0 {
			delete(p.owned, inc)
		}
	}
}

// beat applies a heartbeat of node; p.mu is held.
func (p *presence) beat(node string, v beatValue) {
	if _, dead := p.dead[v.I]; dead {
		return
	}
	if v.I == p.inc {
		p.beats++
		for _, pe := range p.peers {
			pe.since++
		}
		return
	}
	pe := p.peers[v.I]
	if pe == nil {
		pe = &peer{}
		p.peers[v.I] = pe
	}
	pe.node, pe.reaps, pe.beat, pe.since, pe.seen = node, v.R, true, 0, time.Now()
}

// forget applies the tombstone of node's heartbeat: its incarnations that own nothing are
// forgotten (a live one is seen again at its next heartbeat); p.mu is held.
func (p *presence) forget(node string) {
	for inc, pe := range p.peers {
		if pe.node == node && len(p.owned[inc]) == 0 {
			delete(p.peers, inc)
		}
	}
}

// reap applies the reap of inc: the first one removes what inc owns, and its writer (if it is
// this process) reports each member to OnReap; p.mu is held.
func (p *presence) reap(inc string, v reapValue) {
	if _, dead := p.dead[inc]; dead {
		return
	}
	p.dead[inc] = struct{}{}
	delete(p.peers, inc)
	delete(p.asked, inc)
	keys := make([]memberKey, 0, len(p.owned[inc]))
	for k := range p.owned[inc] {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b memberKey) int {
		return cmp.Or(strings.Compare(a.channel, b.channel), strings.Compare(a.session, b.session))
	})
	mine := v.By == p.proc
	for _, k := range keys {
		e, _, vacated := p.remove(k.channel, k.session)
		if mine {
			p.reaps = append(p.reaps, reapCall{fn: p.onReap, channel: k.channel, m: e.M, vacated: vacated})
		}
	}
	if mine {
		p.reapedNodes = append(p.reapedNodes, v.N)
		signal(p.reapWake)
	}
	if inc == p.inc {
		// This node's lease ran out while it lived: a new incarnation, under which the next
		// heartbeat's reconcile records its members again.
		p.inc = randomID()
		signal(p.wake)
	}
}

// startPresence starts reading the presence topic, heartbeating (once active) and telling
// OnReap, once, when the broker is connected.
func (b *Broker) startPresence() {
	if b.current() == nil {
		return // connectLoop starts it
	}
	p := &b.pr
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return
	}
	p.started = true
	p.mu.Unlock()
	b.goTrack(b.presenceReader)
	b.goTrack(b.presenceBeats)
	b.goTrack(b.presenceNotifier)
}

// presenceReady fails as the broker's other methods do before Start, after Close and while
// unreachable; else it starts presence.
func (b *Broker) presenceReady(ctx context.Context) error {
	if _, err := b.ready(ctx, b.cfg.PublishTimeout); err != nil {
		return err
	}
	b.startPresence()
	return nil
}

func unavailable(what string, err error) error {
	if errors.Is(err, transports.ErrClosed) || errors.Is(err, transports.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: kafka %s: %w", transports.ErrUnavailable, what, err)
}

// presenceReader reads the presence topic into the view until the broker closes, from where it
// stopped, or from the start of a re-created topic.
func (b *Broker) presenceReader() {
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for !b.isClosed() {
		pc, changed, err := b.presenceConsumer()
		if err != nil {
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				b.kickTopics()
			}
			d := bo.next()
			b.log.Debug("kafka presence reader not started, retrying", "error", err, "retry_in", d)
			if !sleep(d, b.done) {
				return
			}
			continue
		}
		bo.reset()
		b.readPresence(pc, changed)
		_ = pc.Close()
	}
}

// presenceConsumer starts a partition consumer where the view stopped, or (the first time, on
// a re-created topic, or when records the view has not read are gone) resets the view and
// starts at the topic's first offset.
func (b *Broker) presenceConsumer() (sarama.PartitionConsumer, <-chan struct{}, error) {
	c := b.current()
	topic := b.names.presence
	changed := b.pr.changes()
	id, err := b.refreshTopicID(c, topic)
	if err != nil {
		return nil, nil, err
	}
	oldest, err := c.client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, nil, err
	}
	newest, err := c.client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return nil, nil, err
	}
	p := &b.pr
	p.mu.Lock()
	start := p.next
	if start < 0 || id != p.topicID || start < oldest || start > newest {
		if start >= 0 {
			b.log.Warn("kafka presence topic changed under the node: reading it again from its start", "topic", topic)
		}
		p.reset(oldest, id)
		start = oldest
	}
	p.mu.Unlock()
	pc, err := c.consumer.ConsumePartition(topic, 0, start)
	if err != nil {
		return nil, nil, err
	}
	return pc, changed, nil
}

func (b *Broker) readPresence(pc sarama.PartitionConsumer, changed <-chan struct{}) {
	msgs, errs := pc.Messages(), pc.Errors()
	for {
		select {
		case <-b.done:
			return
		case <-changed:
			return
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			b.log.Debug("kafka presence fetch error", "error", err)
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				b.kickTopics()
			}
		case km, ok := <-msgs:
			if !ok {
				return // stopped by itself: offset out of range (the topic was re-created)
			}
			b.pr.apply(km)
		}
	}
}

// produce writes one record of the presence topic (value nil: a tombstone), bounded by ctx.
func (b *Broker) produce(ctx context.Context, key string, value []byte, o *op) error {
	c := b.current()
	if c == nil {
		return fmt.Errorf("%w: kafka: not connected", transports.ErrUnavailable)
	}
	msg := &sarama.ProducerMessage{Topic: b.names.presence, Key: sarama.StringEncoder(key)}
	if value != nil {
		msg.Value = sarama.ByteEncoder(value)
	}
	if o != nil {
		msg.Headers = []sarama.RecordHeader{{Key: []byte(opHeader), Value: []byte(o.id)}}
	}
	if err := b.sendRecord(ctx, c, msg, "presence write"); err != nil {
		return err
	}
	if o != nil {
		b.pr.mu.Lock()
		if _, waiting := b.pr.ops[o.id]; waiting {
			o.offset = msg.Offset
		}
		b.pr.mu.Unlock()
	}
	return nil
}

// await waits until the record of o was applied. A write not read back by ctx's end is
// forgotten (the member is no longer pending: the reconcile sees to it).
func (b *Broker) await(ctx context.Context, o *op) (outcome, error) {
	select {
	case out := <-o.done:
		return out, nil
	case <-ctx.Done():
		b.pr.drop(o)
		return outcome{}, unavailable("presence", fmt.Errorf("the write was not read back: %w", ctx.Err()))
	case <-b.done:
		return outcome{}, transports.ErrClosed
	}
}

// write writes the record of a member of this node (m nil: its leave) after running update on
// the node's own record, both under the member's stripe, and waits until it was applied. When
// the stripe is not free by ctx's end it fails with ctx's error, having run update all the same
// when always is set (a Leave: the node's truth is that the member left).
func (b *Broker) write(ctx context.Context, k memberKey, m *protocol.Member, update func(), always bool) (outcome, error) {
	p := &b.pr
	mu := p.stripe(k)
	if err := mu.lock(ctx); err != nil {
		if always && update != nil {
			p.mu.Lock()
			update()
			p.mu.Unlock()
		}
		return outcome{}, unavailable("presence", fmt.Errorf("a write of the member is under way: %w", err))
	}
	p.mu.Lock()
	if update != nil {
		update()
	}
	inc := p.inc
	o := p.newOp(&k, true)
	p.mu.Unlock()
	var val []byte
	if m != nil {
		var err error
		if val, err = json.Marshal(memberValue{M: *m, I: inc}); err != nil {
			mu.unlock()
			p.drop(o)
			return outcome{}, err
		}
	}
	err := b.produce(ctx, k.record(), val, o)
	mu.unlock()
	if err != nil {
		p.drop(o)
		return outcome{}, err
	}
	return b.await(ctx, o)
}

// presenceCtx bounds a presence call by PublishTimeout.
func (b *Broker) presenceCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.cfg.PublishTimeout)
}

// Join implements transports.Presence: one record written and read back (the node's own reader
// applies it; occupied is what applying it changed, the same on every node).
func (b *Broker) Join(ctx context.Context, channel string, m protocol.Member) (bool, error) {
	if err := b.presenceReady(ctx); err != nil {
		return false, err
	}
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	p := &b.pr
	k := memberKey{channel, m.Session}
	var prev protocol.Member
	var had, held bool
	update := func() {
		p.activate()
		prev, had = p.local[channel][m.Session]
		p.hold(channel, m)
		held = true
	}
	for try := 0; ; try++ {
		out, err := b.write(ctx, k, &m, update, false)
		update = nil
		if err == nil && out.dead && try < 3 {
			continue // written under an incarnation reaped meanwhile: again under the new one
		}
		if err != nil {
			// Not recorded, as far as the caller knows: the node's record says so too, and its
			// reconcile removes the record if it was written after all. Not under the stripe,
			// which a slow write may hold past ctx's end: should a write of the member be
			// under way, the next heartbeat's reconcile writes what the node's record says.
			p.mu.Lock()
			if cur, ok := p.local[channel][m.Session]; held && ok && sameMember(cur, m) {
				if had {
					p.hold(channel, prev)
				} else {
					p.unhold(channel, m.Session)
				}
			}
			p.mu.Unlock()
			return false, err
		}
		return out.occupied, nil
	}
}

// Leave implements transports.Presence: one tombstone written and read back. When it fails (but
// for ErrNotStarted and ErrClosed), the member is out of the node's record all the same (the
// node's truth), and a reconcile after a heartbeat writes the tombstone, silently.
func (b *Broker) Leave(ctx context.Context, channel, session string) (bool, error) {
	p := &b.pr
	if err := b.presenceReady(ctx); err != nil {
		if !errors.Is(err, transports.ErrClosed) && !errors.Is(err, transports.ErrNotStarted) {
			p.mu.Lock()
			p.unhold(channel, session)
			p.mu.Unlock()
		}
		return false, err
	}
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	out, err := b.write(ctx, memberKey{channel, session}, nil, func() { p.unhold(channel, session) }, true)
	return out.vacated, err
}

// catchUp waits until the view has applied every record the topic had when it was called, so
// that a query answers what every Join and Leave that returned before it wrote (on any node):
// one list-offsets round trip.
func (b *Broker) catchUp(ctx context.Context) error {
	c := b.current()
	if c == nil {
		return fmt.Errorf("%w: kafka: not connected", transports.ErrUnavailable)
	}
	end, err := c.client.GetOffset(b.names.presence, 0, sarama.OffsetNewest)
	if err != nil {
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			b.kickTopics()
		}
		return unavailable("presence", err)
	}
	p := &b.pr
	for {
		p.mu.Lock()
		next, progress := p.next, p.progress
		p.mu.Unlock()
		if next >= end {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return unavailable("presence", fmt.Errorf("the node's view did not catch up: %w", ctx.Err()))
		case <-b.done:
			return transports.ErrClosed
		}
	}
}

// presenceRead prepares a query: started, and caught up.
func (b *Broker) presenceRead(ctx context.Context) (context.CancelFunc, error) {
	if err := b.presenceReady(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := b.presenceCtx(ctx)
	if err := b.catchUp(ctx); err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

// Members implements transports.Presence: a list-offsets round trip, then O(log n + limit)
// in the node's view.
func (b *Broker) Members(ctx context.Context, channel, after string, limit int) ([]protocol.Member, bool, error) {
	done, err := b.presenceRead(ctx)
	if err != nil {
		return nil, false, err
	}
	defer done()
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	ms, more := b.pr.view.Members(channel, after, limit)
	return ms, more, nil
}

// Stats implements transports.Presence: a list-offsets round trip, then the view's counts.
func (b *Broker) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	done, err := b.presenceRead(ctx)
	if err != nil {
		return protocol.PresenceStats{}, err
	}
	defer done()
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	return b.pr.view.Stats(channel), nil
}

// Channels implements transports.Presence: a list-offsets round trip, then O(log channels +
// limit) in the view.
func (b *Broker) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, bool, error) {
	done, err := b.presenceRead(ctx)
	if err != nil {
		return nil, false, err
	}
	defer done()
	if limit <= 0 {
		return nil, false, nil
	}
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	cs, more := b.pr.view.Channels(prefix, after, limit)
	return cs, more, nil
}

// OnReap implements transports.Presence. Setting it makes the node take part in presence from
// its connection on: it heartbeats, and may be the one that reaps.
func (b *Broker) OnReap(fn func(channel string, m protocol.Member, vacated bool)) {
	p := &b.pr
	p.mu.Lock()
	p.onReap, p.want = fn, true
	p.activate()
	p.mu.Unlock()
	b.mu.Lock()
	started := b.started && !b.closed
	b.mu.Unlock()
	if started {
		b.startPresence()
	}
}

// presenceNotifier calls OnReap for the members this node reaped, off the reader's goroutine,
// then writes their tombstones (and the reaped node's heartbeat's), so that compaction drops
// their records: the reap record removed them from the views already, the tombstones only keep
// the topic small. A member its node recorded again meanwhile (it lived) is left as it is; should
// a tombstone land after such a record all the same, that node's reconcile writes it again.
func (b *Broker) presenceNotifier() {
	p := &b.pr
	for {
		select {
		case <-b.done:
			return
		case <-p.reapWake:
		}
		p.mu.Lock()
		calls, nodes := p.reaps, p.reapedNodes
		p.reaps, p.reapedNodes = nil, nil
		p.mu.Unlock()
		for _, c := range calls {
			if b.isClosed() {
				return
			}
			if c.fn != nil {
				c.fn(c.channel, c.m, c.vacated)
			}
		}
		b.tombstones(calls, nodes)
	}
}

// tombstones writes the tombstones of reaped members still absent from the view, and of the
// heartbeats of reaped nodes that have no live incarnation.
func (b *Broker) tombstones(calls []reapCall, nodes []string) {
	p := &b.pr
	var msgs []*sarama.ProducerMessage
	p.mu.Lock()
	for _, c := range calls {
		if _, back := p.view.Get(c.channel, c.m.Session); !back {
			k := memberKey{c.channel, c.m.Session}
			msgs = append(msgs, &sarama.ProducerMessage{Topic: b.names.presence, Key: sarama.StringEncoder(k.record())})
		}
	}
	now := time.Now()
	for _, node := range nodes {
		live := node == p.node
		for _, pe := range p.peers {
			live = live || pe.node == node && pe.beat && !pe.silent(now, b.cfg.Presence.Heartbeat)
		}
		if !live {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: b.names.presence, Key: sarama.StringEncoder("h\x00" + node)})
		}
	}
	p.mu.Unlock()
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := b.presenceCtx(context.Background())
	defer cancel()
	if err := b.produceBatch(ctx, msgs); err != nil {
		b.log.Debug("kafka presence: tombstones of reaped members not written (their records stay in the topic, without effect)", "error", err)
	}
}

// presenceBeats heartbeats twice per Heartbeat once the node is active; after each heartbeat it
// reads back, it reaps what it must and reconciles the view with the node's own record. Between
// heartbeats it makes a reaping pass every quarter Heartbeat, so that a silent incarnation is
// reaped within a quarter heartbeat of its turning silent.
func (b *Broker) presenceBeats() {
	p := &b.pr
	select {
	case <-b.done:
		return
	case <-p.activated:
	}
	hb := b.cfg.Presence.Heartbeat
	beats := time.NewTicker(hb / 2)
	defer beats.Stop()
	passes := time.NewTicker(hb / 4)
	defer passes.Stop()
	beat := true
	for {
		if !p.paused.Load() {
			if beat {
				b.heartbeat()
			} else {
				ctx, cancel := b.presenceCtx(context.Background())
				b.reapPass(ctx)
				cancel()
			}
		}
		select {
		case <-b.done:
			return
		case <-beats.C:
			beat = true
		case <-p.wake:
			beat = true
		case <-passes.C:
			beat = false
		}
	}
}

func (b *Broker) heartbeat() {
	ctx, cancel := b.presenceCtx(context.Background())
	defer cancel()
	p := &b.pr
	p.mu.Lock()
	o := p.newOp(nil, true)
	val, _ := json.Marshal(beatValue{I: p.inc, R: p.onReap != nil})
	p.mu.Unlock()
	if err := b.produce(ctx, "h\x00"+p.node, val, o); err != nil {
		p.drop(o)
		b.log.Debug("kafka presence heartbeat not written", "error", err)
		return
	}
	if _, err := b.await(ctx, o); err != nil {
		return
	}
	b.reapPass(ctx)
	b.reconcile(ctx)
}

// reapPass writes a reap for each incarnation that owns members and is silent (peer.silent:
// reapAfter of this node's heartbeats and leaseTTL heartbeats on its clock), when this node is the live
// node first by (reaps, node id, incarnation). A reap written and not applied after reapAfter more heartbeats is written
// again. A silent incarnation that owns nothing is forgotten, and (by that node) the tombstone
// of its heartbeat written unless its node id lives on in another incarnation.
func (b *Broker) reapPass(ctx context.Context) {
	p := &b.pr
	type who struct {
		reaps     bool
		node, inc string
	}
	first := func(a, c who) bool {
		if a.reaps != c.reaps {
			return a.reaps
		}
		return a.node < c.node || a.node == c.node && a.inc < c.inc
	}
	p.mu.Lock()
	me := who{p.onReap != nil, p.node, p.inc}
	best := me
	var victims []who
	var silent []string // nodes of forgotten incarnations
	live := map[string]bool{p.node: true}
	now := time.Now()
	for inc, pe := range p.peers {
		if !pe.silent(now, b.cfg.Presence.Heartbeat) {
			if c := (who{pe.reaps, pe.node, inc}); pe.beat && first(c, best) {
				best = c
			}
			live[pe.node] = live[pe.node] || pe.beat
			continue
		}
		if len(p.owned[inc]) == 0 {
			delete(p.peers, inc)
			if pe.beat {
				silent = append(silent, pe.node)
			}
			continue
		}
		if at, ok := p.asked[inc]; ok && p.beats-at < reapAfter {
			continue
		}
		victims = append(victims, who{node: pe.node, inc: inc})
	}
	if best != me {
		victims, silent = nil, nil
	}
	for _, v := range victims {
		p.asked[v.inc] = p.beats
	}
	var beats []*sarama.ProducerMessage
	for _, node := range silent {
		if !live[node] {
			beats = append(beats, &sarama.ProducerMessage{Topic: b.names.presence, Key: sarama.StringEncoder("h\x00" + node)})
		}
	}
	p.mu.Unlock()
	if len(beats) > 0 {
		if err := b.produceBatch(ctx, beats); err != nil {
			b.log.Debug("kafka presence: tombstones of silent nodes' heartbeats not written", "error", err)
		}
	}
	for _, v := range victims {
		b.log.Info("kafka presence lease expired, reaping the node's members", "node", v.node, "incarnation", v.inc)
		val, _ := json.Marshal(reapValue{By: p.proc, N: v.node})
		if err := b.produce(ctx, "r\x00"+v.inc, val, nil); err != nil {
			b.log.Warn("kafka presence reap not written; the next heartbeat tries again", "node", v.node, "error", err)
			p.mu.Lock()
			delete(p.asked, v.inc)
			p.mu.Unlock()
		}
	}
}

// reconcile writes what differs between the node's own record and the view (what it holds that
// the view lacks, or has otherwise, and what the view has of its incarnation that it left), but
// for members with a write of this node in flight. It is what records the members again after
// the lease was lost or the topic re-created.
func (b *Broker) reconcile(ctx context.Context) {
	if len(b.differences()) == 0 {
		return
	}
	// Under every stripe (Joins and Leaves wait, within their ctx), the differences are taken
	// again and written in one batch.
	p := &b.pr
	for i := range p.stripes {
		if err := p.stripes[i].lock(ctx); err != nil {
			for j := range i {
				p.stripes[j].unlock()
			}
			return // the next heartbeat tries again
		}
	}
	defer func() {
		for i := range p.stripes {
			p.stripes[i].unlock()
		}
	}()
	diffs := b.differences()
	if len(diffs) == 0 {
		return
	}
	p.mu.Lock()
	inc := p.inc
	ops := make([]*op, len(diffs))
	msgs := make([]*sarama.ProducerMessage, len(diffs))
	for i, d := range diffs {
		ops[i] = p.newOp(&d.key, false)
		msgs[i] = &sarama.ProducerMessage{Topic: b.names.presence, Key: sarama.StringEncoder(d.key.record()),
			Headers: []sarama.RecordHeader{{Key: []byte(opHeader), Value: []byte(ops[i].id)}}}
		if d.held {
			val, err := json.Marshal(memberValue{M: d.m, I: inc})
			if err != nil {
				continue
			}
			msgs[i].Value = sarama.ByteEncoder(val)
		}
	}
	p.mu.Unlock()
	b.log.Info("kafka presence: recording the node's members again", "writes", len(msgs))
	err := b.produceBatch(ctx, msgs)
	if err != nil {
		b.log.Warn("kafka presence: recording the node's members again failed; the next heartbeat tries again", "error", err)
		p.mu.Lock()
		for _, o := range ops {
			p.settle(o, outcome{})
		}
		p.mu.Unlock()
	}
}

type difference struct {
	key  memberKey
	held bool // the node holds it (write m), else it left (write a tombstone)
	m    protocol.Member
}

func (b *Broker) differences() []difference {
	p := &b.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []difference
	for channel, ms := range p.local {
		for session, m := range ms {
			k := memberKey{channel, session}
			if p.pending[k] > 0 {
				continue
			}
			if e, ok := p.view.Get(channel, session); ok && e.X == p.inc && sameMember(e.M, m) {
				continue
			}
			out = append(out, difference{key: k, held: true, m: m})
		}
	}
	for k := range p.owned[p.inc] {
		if _, held := p.local[k.channel][k.session]; !held && p.pending[k] == 0 {
			out = append(out, difference{key: k})
		}
	}
	return out
}

// produceBatch writes records in one batch (sarama groups them), bounded by ctx.
func (b *Broker) produceBatch(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	c := b.current()
	if c == nil {
		return fmt.Errorf("%w: kafka: not connected", transports.ErrUnavailable)
	}
	b.pubMu.RLock()
	if b.isClosed() {
		b.pubMu.RUnlock()
		return transports.ErrClosed
	}
	errc := make(chan error, 1)
	go func() {
		defer b.pubMu.RUnlock()
		errc <- c.records.SendMessages(msgs)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return transports.ErrClosed
	}
}

// sendRecord writes msg with c's synchronous producer, bounded by ctx (what names the write in
// errors): the writes of the presence and control-state topics. The publish read lock goes with
// the send, so that Close waits for it (sarama bounds it); msg.Offset is set once it returns nil.
func (b *Broker) sendRecord(ctx context.Context, c *conn, msg *sarama.ProducerMessage, what string) error {
	b.pubMu.RLock()
	if b.isClosed() {
		b.pubMu.RUnlock()
		return transports.ErrClosed
	}
	errc := make(chan error, 1)
	go func() {
		defer b.pubMu.RUnlock()
		_, _, err := c.records.SendMessage(msg)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				b.kickTopics()
			}
			return unavailable(what, err)
		}
		return nil
	case <-ctx.Done():
		return unavailable(what, ctx.Err())
	case <-b.done:
		return transports.ErrClosed
	}
}
