package redis

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/transports"
)

// overflowWait is how long the reader waits for a subscription whose buffer is full before it
// closes that subscription; every other subscription of the node waits meanwhile.
const overflowWait = 250 * time.Millisecond

// Backoff of a reader whose XREAD fails (broker down): 100 ms doubling up to 5 s.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// reader reads a fixed set of streams with one XREAD loop and hands each entry to the local
// subscriptions it concerns. A node has one reader over all its channel shard streams
// (entries routed by their channel field), started by the first channel Subscribe, and one
// reader per other topic subscribed in fan-out mode (direct, ...). Readers stop on Close.
//
// On a Redis Cluster each shard stream has an XREAD loop of its own (see parts): one XREAD may
// name keys of one hash slot only, and every shard stream is in a slot of its own. The cluster
// client sends each to the primary of its slot, so a node holds Shards blocked connections
// spread over the primaries, and a moved slot or a failover is followed by the client (MOVED,
// then a reload of the slot map) without anything to re-plan here.
//
// The reader uses go-redis directly rather than redisstream's fan-out subscriber: that one reads
// one stream per goroutine with COUNT 1 (a round trip per message and per subscription) and does
// not expose the entry id, which is the message's position. One XREAD over every shard stream,
// COUNT ReadCount, costs a node one round trip per batch for all its channels.
type reader struct {
	b        *Broker
	keys     []string       // streams read
	epochs   []string       // Epoch of the positions of each stream
	index    map[string]int // key -> position in keys
	channels bool           // route by the channel field; else every entry to every subscription
	ids      []string       // id after which the next XREAD reads each stream; ids[i] owned by the run of i

	warnMu sync.Mutex
	warned map[string]bool // channels of misplaced entries already logged

	mu   sync.Mutex
	subs map[string][]*subscription // channel (or "") -> subscriptions; slices are copy-on-write
	peak int                        // most keys subs held since it was made (transports.Shrink)
}

func newReader(b *Broker, keys, epochs, ids []string, channels bool) *reader {
	r := &reader{b: b, keys: keys, epochs: epochs, ids: ids, channels: channels,
		index: make(map[string]int, len(keys)), subs: map[string][]*subscription{}}
	for i, k := range keys {
		r.index[k] = i
	}
	return r
}

func (r *reader) add(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs[s.key] = append(r.subs[s.key][:len(r.subs[s.key]):len(r.subs[s.key])], s)
	r.subs = transports.Shrink(r.subs, &r.peak)
}

func (r *reader) remove(s *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.subs[s.key]
	kept := make([]*subscription, 0, len(old))
	for _, o := range old {
		if o != s {
			kept = append(kept, o)
		}
	}
	if len(kept) == 0 {
		delete(r.subs, s.key)
		r.subs = transports.Shrink(r.subs, &r.peak)
	} else {
		r.subs[s.key] = kept
	}
}

func (r *reader) lookup(key string) []*subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.subs[key]
}

// parts are the sets of streams read by one XREAD loop each: all of them, or on a Redis
// Cluster one stream per loop.
func (r *reader) parts() [][]int {
	all := make([]int, len(r.keys))
	for i := range all {
		all[i] = i
	}
	if r.b.cfg.Mode != ModeCluster {
		return [][]int{all}
	}
	out := make([][]int, len(all))
	for i := range all {
		out[i] = all[i : i+1]
	}
	return out
}

// run is the XREAD loop of the streams part. Errors (broker down, restarting, a slot moving)
// back off exponentially; go-redis reconnects by itself on the next call.
func (r *reader) run(part []int) {
	defer r.b.wg.Done()
	n := len(part)
	args := &goredis.XReadArgs{Streams: make([]string, 2*n), Count: r.b.cfg.ReadCount, Block: r.b.cfg.BlockTimeout}
	for j, i := range part {
		args.Streams[j] = r.keys[i]
	}
	first := r.keys[part[0]]
	fails := 0
	for {
		for j, i := range part {
			args.Streams[n+j] = r.ids[i]
		}
		res, err := r.b.client.XRead(r.b.ctx, args).Result()
		if r.b.ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, goredis.Nil) {
			fails++
			delay := min(backoffMin<<min(fails-1, 10), backoffMax)
			level := slog.LevelDebug
			if fails == 1 {
				level = slog.LevelWarn
			}
			r.b.logger.Log(r.b.ctx, level, "redis: reading streams failed, retrying",
				"stream", first, "streams", n, "error", err, "retry_in", delay, "failures", fails)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.b.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		var check []goredis.XStream // streams that may have lost entries: see checkTrimmed
		for _, xs := range res {
			if fails > 0 || int64(len(xs.Messages)) >= args.Count {
				check = append(check, xs)
			}
		}
		if fails > 0 {
			r.b.logger.Info("redis: reading streams again", "stream", first, "streams", n, "failures", fails)
			fails = 0
		}
		if len(check) > 0 {
			r.checkTrimmed(check)
		}
		for _, xs := range res {
			r.dispatch(xs)
		}
	}
}

// checkTrimmed runs before the dispatch of a full batch (the reader is behind) or of the first
// batch after a failure (it may have been away long). When the stream is at its MaxLen and its
// first entry is past the one the reader read last, MAXLEN trimming overtook the reader: the
// entries in between may be gone. The subscriptions of that stream are then closed, as a slow one
// is, instead of going on past a gap; their consumers resume from their positions and Replay
// reports complete=false. (It may also fire when trimming stopped exactly at the reader's entry:
// the reader is MaxLen entries behind then.) A gap leaves at least MaxLen entries after the
// reader's id, so the next batch is full (ReadCount <= MaxLen) and checked. A stream recreated by
// a restart without persistence holds fewer than MaxLen entries and is read on.
func (r *reader) checkTrimmed(streams []goredis.XStream) {
	ctx, cancel := context.WithTimeout(r.b.ctx, r.b.cfg.Timeout)
	defer cancel()
	cmds := make([]*goredis.XInfoStreamCmd, len(streams))
	_, _ = r.b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, xs := range streams {
			cmds[i] = p.XInfoStream(ctx, xs.Stream)
		}
		return nil
	})
	for i, c := range cmds {
		idx, ok := r.index[streams[i].Stream]
		if !ok || c.Err() != nil || c.Val().Length < r.b.cfg.MaxLen {
			continue
		}
		first, err1 := parseID(c.Val().FirstEntry.ID)
		at, err2 := parseID(r.ids[idx])
		if err1 == nil && err2 == nil && at.less(first) {
			r.lost(idx)
		}
	}
}

// lost closes every subscription fed by stream i.
func (r *reader) lost(i int) {
	r.mu.Lock()
	var victims []*subscription
	for key, subs := range r.subs {
		if !r.channels || Shard(key, r.b.cfg.Shards) == i {
			victims = append(victims, subs...)
		}
	}
	r.mu.Unlock()
	level := slog.LevelDebug
	if len(victims) > 0 {
		level = slog.LevelError
	}
	r.b.logger.Log(r.b.ctx, level, "redis: entries were trimmed before this node read them, closing the subscriptions of the stream",
		"stream", r.keys[i], "subscriptions", len(victims))
	for _, s := range victims {
		s.close()
	}
}

func (r *reader) dispatch(xs goredis.XStream) {
	i, ok := r.index[xs.Stream]
	if !ok {
		return
	}
	for _, xm := range xs.Messages {
		r.ids[i] = xm.ID
		id, err := parseID(xm.ID)
		if err != nil {
			continue
		}
		key := ""
		if r.channels {
			ch, ok := xm.Values[fieldChannel]
			if !ok {
				continue // a lineage marker (see Last) or an entry that names no channel
			}
			key = str(ch)
		}
		subs := r.lookup(key)
		if len(subs) > 0 && r.channels && Shard(key, len(r.keys)) != i {
			r.misplaced(key, i)
			continue
		}
		var m *message.Message
		for _, s := range subs {
			// Registered subscriptions see only what was added after their Subscribe
			// looked up the stream's last id: no stale entry reaches a new subscription.
			if !s.after.less(id) {
				continue
			}
			if m == nil {
				m = decodeAt(xm.Values, r.epochs[i], id, r.channels)
			}
			s.offer(m)
		}
	}
}

// misplaced warns, once per channel, of entries written to a shard their channel does not hash
// to: Replay looks for a channel's messages on its own shard only, so they are not delivered
// either (a service computed the shard wrongly, or runs with another Shards setting).
func (r *reader) misplaced(channel string, shard int) {
	r.warnMu.Lock()
	defer r.warnMu.Unlock()
	if r.warned == nil {
		r.warned = map[string]bool{}
	}
	if r.warned[channel] || len(r.warned) >= 1000 {
		return
	}
	r.warned[channel] = true
	r.b.logger.Warn("redis: entry on the wrong shard stream dropped; check the shard count of its publisher",
		"channel", channel, "stream", r.keys[shard], "want_stream", r.keys[Shard(channel, len(r.keys))])
}

// subscription is one Subscribe or SubscribeFunc of a reader's topic: the reader offers it the
// entries of its key, queued on a transports.Relay (no goroutine or buffer while idle).
type subscription struct {
	transports.Ending // Cancel ends the subscription (end runs then)
	r                 *reader
	key               string   // channel, or "" for a whole stream
	after             streamID // entries up to this id were added before Subscribe
	relay             *transports.Relay
	ended             func()
	stopNode          func() bool
}

// offer queues m. When the consumer is so far behind that the queue is full and stays full for
// overflowWait, the subscription is closed (its channel closes, a warning is logged): blocking
// the reader for longer would stall every channel of the node, and skipping the message would be
// a silent loss. The consumer resumes from the last position it handled.
func (s *subscription) offer(m *message.Message) {
	if !s.relay.Offer(m, overflowWait) {
		s.close()
		s.r.b.logger.Warn("redis: subscription closed, its consumer is too slow",
			"stream", s.r.keys[0], "channel", s.key, "buffer", s.r.b.cfg.SubscriptionBuffer)
	}
}

// close ends the subscription from the reader's side: its channel closes.
func (s *subscription) close() { s.Cancel() }

// end runs once the subscription's context is done: nothing is queued or delivered after it
// starts, and ended comes after the last delivery.
func (s *subscription) end() {
	s.relay.Close()
	s.r.remove(s)
	s.stopNode()
	s.ended()
	s.r.b.wg.Done()
}
