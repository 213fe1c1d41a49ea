package jetstream

// Combining a channel's count changes. Every Join and Leave changes the channel's counts (c.C)
// by compare-and-set; thousands at once on one channel (a join storm) would retry against each
// other, O(N²) attempts in all, each a round trip, until they time out. So a node applies the
// changes of one channel one compare-and-set at a time: while one is in flight, later changes
// queue, and the next compare-and-set applies their sum. Joins and leaves go in separate
// batches (a batch is a run of one kind, in the order they came), so that a batch moves the
// count one way only: of a batch that moved the count from 0, the first join hears occupied; of
// one that moved it to 0, the last leave hears vacated. The compare-and-set itself is what makes
// these once in the cluster, as for a single change.

import (
	"context"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// countChange is one caller's change of a channel's counts, and its result.
type countChange struct {
	dc, du int
	ready  chan struct{} // closed when the change was applied (or failed), or when it leads
	lead   bool          // it was handed the queue: its caller applies the next batch
	first  bool          // the channel had no connection before (a join's batch: its first join)
	last   bool          // the channel has none after (a leave's batch: its last leave)
	err    error
}

// leaves reports whether the change belongs in a batch of leaves (it removes a connection).
func (c *countChange) leaves() bool { return c.dc < 0 }

// countQueue is a channel's changes waiting for their compare-and-set; it exists while one is in
// flight.
type countQueue struct {
	pending []*countChange
	// The count key as the last batch left it (nil: unknown), which the next batch's
	// compare-and-set starts from: one round trip, not two, while no other node changed it.
	// Only the caller applying a batch uses it.
	last *kvState
}

// addCounts changes the channel's counts by dc connections and du users; first reports that the
// channel had no connection before (to one join of those applied together), last that it has
// none after (to one leave). The change waits for the one in flight on the channel, if any; the
// caller at the head of the queue when that is done applies the next batch, bounded by its ctx.
// A change that was not applied when ctx ends is withdrawn.
func (b *Broker) addCounts(ctx context.Context, kv jetstream.KeyValue, channel string, dc, du int) (first, last bool, err error) {
	p := &b.pr
	c := &countChange{dc: dc, du: du, ready: make(chan struct{})}
	p.countMu.Lock()
	q := p.counts[channel]
	if q == nil {
		if p.counts == nil {
			p.counts = map[string]*countQueue{}
		}
		q = &countQueue{}
		p.counts[channel] = q
		c.lead = true // nothing in flight: apply it at once
	}
	q.pending = append(q.pending, c)
	lead := c.lead // read under countMu: handOn sets it
	p.countMu.Unlock()
	if !lead {
		select {
		case <-c.ready:
		case <-ctx.Done():
			p.countMu.Lock()
			if i := slices.Index(q.pending, c); i >= 0 {
				// Not applied: withdraw it, handing the queue on if it was just handed it.
				q.pending = slices.Delete(q.pending, i, i+1)
				if c.lead {
					p.handOn(channel, q)
				}
				p.countMu.Unlock()
				return false, false, ctx.Err()
			}
			p.countMu.Unlock()
			<-c.ready // in a batch in flight: its result comes within the leader's ctx
		}
		if !c.lead {
			return c.first, c.last, c.err
		}
	}
	// c leads: it is the head of the queue. Its batch is the run of changes of its kind.
	p.countMu.Lock()
	if err := ctx.Err(); err != nil {
		q.pending = slices.Delete(q.pending, 0, 1)
		p.handOn(channel, q)
		p.countMu.Unlock()
		return false, false, err
	}
	n := 1
	for n < len(q.pending) && q.pending[n].leaves() == c.leaves() {
		n++
	}
	batch := slices.Clone(q.pending[:n])
	q.pending = slices.Delete(q.pending, 0, n)
	p.countMu.Unlock()
	first, last, err = applyCounts(ctx, kv, channel, q, batch)
	// occupied goes to the batch's first join, vacated to its last leave.
	var firstJoin, lastLeave *countChange
	for _, o := range batch {
		if o.dc > 0 && firstJoin == nil {
			firstJoin = o
		}
		if o.dc < 0 {
			lastLeave = o
		}
	}
	p.countMu.Lock()
	for _, o := range batch {
		o.lead = false
		o.err = err
		o.first = err == nil && first && o == firstJoin
		o.last = err == nil && last && o == lastLeave
		if o != c {
			close(o.ready)
		}
	}
	p.handOn(channel, q)
	p.countMu.Unlock()
	return c.first, c.last, c.err
}

// handOn makes the head of channel's queue apply the next batch, or drops the queue when it is
// empty; p.countMu is held.
func (p *presence) handOn(channel string, q *countQueue) {
	if len(q.pending) == 0 {
		delete(p.counts, channel)
		return
	}
	h := q.pending[0]
	h.lead = true
	close(h.ready)
}

// applyCounts applies the sum of batch's changes to the channel's counts in one compare-and-set
// (retried on a conflict) and reports whether the count was 0 before and whether it is 0 after.
func applyCounts(ctx context.Context, kv jetstream.KeyValue, channel string, q *countQueue, batch []*countChange) (first, last bool, err error) {
	var dc, du int
	for _, c := range batch {
		dc += c.dc
		du += c.du
	}
	guess := q.last
	q.last = nil
	st, err := updateFrom(ctx, kv, chanKey(channel), guess, func(old []byte) []byte {
		c, u := parseCounts(old)
		first = c <= 0
		c, u = max(c+dc, 0), max(u+du, 0)
		last = c == 0
		if c == 0 {
			return nil
		}
		return []byte(strconv.Itoa(c) + " " + strconv.Itoa(u))
	})
	if err == nil {
		q.last = &st
	}
	return first, last, err
}
