package memory

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Background expiry: the janitor drops the history older than its TTL at most expireEvery after
// it expired, looking at no more than expireBudget messages per pass (the rest waits for the
// next pass, expireEvery later). It sleeps until the oldest kept message expires, or with no
// deadline while no message is kept with a TTL, rather than ticking every expireEvery: a node
// whose history is younger than its TTL (the first TTL of a node's life, 10 minutes by default,
// or one that stopped publishing) is not woken 4 times a second for nothing.
const (
	expireEvery  = 250 * time.Millisecond
	expireBudget = 20000
)

// sizeOf is what a kept message counts towards Config.MaxBytes: its payload, id and metadata.
func sizeOf(m *message.Message) int64 {
	n := len(m.Payload) + len(m.UUID)
	for k, v := range m.Metadata {
		n += len(k) + len(v)
	}
	return int64(n)
}

// ledger is the broker's account of every kept message: their total size, and their order of
// arrival per TTL (one queue per distinct TTL, so each queue is also in order of expiry), which
// expiry and eviction (oldest first, across channels) walk from the front.
//
// Lock order: a topic's mu, then ledger.mu. Messages dropped by their topic stay in their queue,
// marked gone, until they reach its front or the queue is compacted.
type ledger struct {
	mu     sync.Mutex
	bytes  atomic.Int64
	queues map[time.Duration]*ageQueue

	// until is when the janitor's next pass is planned, the zero time while it sleeps with no
	// deadline; wake (one slot) wakes it sooner, when add keeps a message that expires more
	// than expireEvery before until. until is under mu, set by expired and by add; wake is made
	// once, by init.
	until time.Time
	wake  chan struct{}
}

// ageQueue is the kept messages of one TTL, oldest first from head.
type ageQueue struct {
	items []*stored
	head  int
	live  int // items not gone
}

func (l *ledger) init() {
	l.queues = map[time.Duration]*ageQueue{}
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
}

func (l *ledger) total() int64 { return l.bytes.Load() }

// reset forgets everything (the broker closed).
func (l *ledger) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.init()
	l.bytes.Store(0)
}

// add accounts for messages just kept by their topic (whose mu is held), all of one TTL.
func (l *ledger) add(kept []*stored) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ttl := kept[0].t.ttl
	q := l.queues[ttl]
	if q == nil {
		q = &ageQueue{}
		l.queues[ttl] = q
	}
	q.items = append(q.items, kept...)
	q.live += len(kept)
	for _, s := range kept {
		l.bytes.Add(s.size)
	}
	// The first of kept expires first. A message kept after one of the same TTL expires after
	// it, so once the janitor planned its pass, only a message of a shorter TTL, or the first
	// one kept while it sleeps with no deadline, wakes it.
	if ttl > 0 {
		if due := kept[0].at.Add(ttl).Add(expireEvery); l.until.IsZero() || due.Before(l.until) {
			l.until = due // woken: add signals no more until the janitor plans again
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	}
}

// remove accounts for messages their topic (whose mu is held) just dropped, all of one TTL.
func (l *ledger) remove(gone []*stored) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[gone[0].t.ttl]
	for _, s := range gone {
		s.gone.Store(true)
		l.bytes.Add(-s.size)
	}
	if q == nil { // reset meanwhile
		return
	}
	q.live -= len(gone)
	if n := len(q.items) - q.head; n > 1024 && n > 2*q.live {
		q.compact()
	}
}

// compact keeps only the items not gone, in a new array.
func (q *ageQueue) compact() {
	kept := make([]*stored, 0, 2*q.live)
	for _, s := range q.items[q.head:] {
		if !s.gone.Load() {
			kept = append(kept, s)
		}
	}
	q.items, q.head = kept, 0
}

// front returns the oldest item not gone, discarding the gone ones before it, or nil.
func (q *ageQueue) front() *stored {
	for q.head < len(q.items) {
		s := q.items[q.head]
		if !s.gone.Load() {
			return s
		}
		q.pop()
	}
	return nil
}

// pop takes the front item off the queue.
func (q *ageQueue) pop() {
	q.items[q.head] = nil
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = nil, 0
	case q.head > 1024 && 2*q.head > len(q.items):
		q.items, q.head = append([]*stored(nil), q.items[q.head:]...), 0
	}
}

// oldest takes the oldest kept message of any TTL off its queue, or returns nil. It stays kept
// until its topic drops it.
func (l *ledger) oldest() *stored {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		best  *stored
		bestQ *ageQueue
	)
	for _, q := range l.queues {
		if s := q.front(); s != nil && (best == nil || s.at.Before(best.at)) {
			best, bestQ = s, q
		}
	}
	if best != nil {
		bestQ.pop()
	}
	return best
}

// expired takes off their queues the messages older than their TTL at now, looking at budget
// items at most, and returns them: their topics still have to drop them. It also plans the
// janitor's next pass and returns it (l.until): when the oldest message left expires, but not
// sooner than expireEvery after now (expireEvery after now when the budget ran out first), or
// the zero time when no message is kept with a TTL.
func (l *ledger) expired(now time.Time, budget int) ([]*stored, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		out  []*stored
		next time.Time
	)
	for ttl, q := range l.queues {
		for ttl > 0 && q.head < len(q.items) {
			if budget == 0 {
				next = now
				break
			}
			s := q.items[q.head]
			if !s.gone.Load() {
				if at := s.at.Add(ttl); now.Sub(s.at) <= ttl {
					if next.IsZero() || at.Before(next) {
						next = at
					}
					break
				}
				out = append(out, s)
			}
			q.pop()
			budget--
		}
	}
	if !next.IsZero() {
		next = later(next, now.Add(expireEvery))
	}
	l.until = next
	return out, next
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// evict drops the oldest history, across topics, while the broker keeps more than MaxBytes.
func (b *Broker) evict() {
	limit := b.cfg.MaxBytes
	for limit > 0 && b.ledger.total() > limit {
		s := b.ledger.oldest()
		if s == nil {
			return
		}
		t := s.t
		t.mu.Lock()
		t.dropThrough(s, &b.ledger)
		idle := t.idle()
		t.mu.Unlock()
		if idle {
			b.release(t)
		}
	}
}

// expire drops the history older than its TTL (budget messages at most) and frees the topics
// left with nothing to keep. It returns when the janitor's next pass is due (ledger.expired).
func (b *Broker) expire(budget int) time.Time {
	now := b.now()
	gone, next := b.ledger.expired(now, budget)
	for _, s := range gone {
		t := s.t
		t.mu.Lock()
		t.trim(now, &b.ledger)
		t.dropThrough(s, &b.ledger) // in case trim stopped before it (it is off its queue now)
		idle := t.idle()
		t.mu.Unlock()
		if idle {
			b.release(t)
		}
	}
	return next
}

// janitor is the goroutine that expires history in the background. The broker owns it: it
// starts with the first message kept with a TTL and stops with Broker.Close.
type janitor struct {
	done    chan struct{}
	stopped chan struct{}
	sleep   atomic.Int64 // the time.Duration it last set its timer to, -1 for none (tests read it)
}

// startJanitor starts the janitor unless it runs or the broker is closed.
func (b *Broker) startJanitor() {
	if b.janitorOn.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.janitor != nil {
		return
	}
	j := &janitor{done: make(chan struct{}), stopped: make(chan struct{})}
	b.janitor = j
	b.janitorOn.Store(true)
	go b.runJanitor(j)
}

// runJanitor makes a pass at once, then one whenever the pass before planned it (expire) or
// the ledger wakes it, until j is stopped. While it sleeps with no deadline its timer is off.
func (b *Broker) runJanitor(j *janitor) {
	defer close(j.stopped)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-j.done:
			return
		case <-t.C:
		case <-b.ledger.wake:
		}
		next := b.expire(expireBudget)
		t.Stop() // since Go 1.23 Stop and Reset leave no stale tick in t.C
		sleep := time.Duration(-1)
		if !next.IsZero() {
			sleep = next.Sub(b.now())
			t.Reset(sleep)
		}
		j.sleep.Store(int64(sleep))
	}
}

// stop ends the janitor and waits for it. Called once, by Broker.Close.
func (j *janitor) stop() {
	close(j.done)
	<-j.stopped
}
