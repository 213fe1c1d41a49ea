package handlers

import (
	"sync"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Bounds of one coalesced message: a window that gathers more is published as several messages,
// the first as soon as it is full. 500 members of ~100 bytes make a frame of ~50 KB; 256 KiB
// stays well under the smallest broker message limit (NATS: 1 MB) however large the members'
// info.
const (
	coalesceMaxMembers = 500
	coalesceMaxBytes   = 256 << 10
)

// publishChanges publishes members (one or more, in order) joining or leaving (kind
// protocol.KindJoin or KindLeave) channel as one message of the channel's stream. It blocks
// until the broker took it or refused it.
type publishChanges func(channel, kind string, members []protocol.Member)

// coalescer gathers the joins and leaves a node announces, per channel, for a window
// (presence.coalesce), and publishes them as few messages: each run of changes of one kind, in
// the order they came, is one message (at most coalesceMaxMembers members, coalesceMaxBytes
// bytes). Of several changes of one session in a window only the last is sent, at its place in
// the order: a subscriber that applies them ends with the right members, whenever in the window
// it read `presence` (a join and a leave that cancelled instead would leave a ghost in the set
// of one that read it between them). A channel's messages are published one at a time, in
// order. It starts nothing until a change comes: a window's timer and the flush it runs are
// its only goroutines, and Close flushes what is pending and waits for them.
type coalescer struct {
	window  time.Duration
	publish publishChanges

	mu     sync.Mutex
	chans  map[string]*pendingChanges // the channels with changes pending or being published
	peak   int                        // transports.Shrink's
	closed bool
	wg     sync.WaitGroup // armed timers and running flushes
}

// pendingChanges are a channel's changes not yet taken by a flush.
type pendingChanges struct {
	changes  []change       // in the order they came; a cancelled one has kind ""
	live     int            // changes not cancelled
	bytes    int            // their size, about as encoded
	index    map[string]int // session -> its live change in changes
	first    time.Time      // when the oldest live change came
	timer    *time.Timer    // armed: a flush is due at the window's end
	flushing bool           // a flush is publishing; it takes what comes meanwhile after
}

// change is one join or leave (kind) of a member.
type change struct {
	kind   string
	member protocol.Member
}

func newCoalescer(window time.Duration, publish publishChanges) *coalescer {
	return &coalescer{window: window, publish: publish, chans: map[string]*pendingChanges{}}
}

// add gathers a join or leave (kind) of m in channel. It never blocks on the broker. After
// Close it drops the change and returns false.
func (c *coalescer) add(channel, kind string, m protocol.Member) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	pc := c.chans[channel]
	if pc == nil {
		pc = &pendingChanges{index: map[string]int{}}
		c.chans[channel] = pc
		c.chans = transports.Shrink(c.chans, &c.peak) // notes the peak
	}
	if i, ok := pc.index[m.Session]; ok {
		pc.cancel(i) // the session's last change stands, at its place in the order
	}
	if pc.live == 0 {
		pc.first = time.Now()
	}
	pc.index[m.Session] = len(pc.changes)
	pc.changes = append(pc.changes, change{kind: kind, member: m})
	pc.live++
	pc.bytes += memberSize(m)
	c.schedule(channel, pc)
	return true
}

// schedule makes sure pc's changes will be flushed: at once when they fill a message, else at
// the end of the window that began with the oldest. c.mu is held.
func (c *coalescer) schedule(channel string, pc *pendingChanges) {
	switch {
	case pc.flushing: // the running flush takes them, or schedules them, when it is done
	case pc.full() || c.closed:
		if pc.timer != nil {
			if !pc.timer.Stop() {
				return // it fired: its flush is about to run
			}
			pc.timer = nil
			c.wg.Done()
		}
		pc.flushing = true
		c.wg.Add(1)
		go c.flush(channel, pc)
	case pc.timer == nil:
		c.wg.Add(1)
		pc.timer = time.AfterFunc(max(0, c.window-time.Since(pc.first)), func() { c.fire(channel, pc) })
	}
}

// fire is the end of pc's window: it flushes pc.
func (c *coalescer) fire(channel string, pc *pendingChanges) {
	c.mu.Lock()
	pc.timer = nil
	pc.flushing = true
	c.mu.Unlock()
	c.flush(channel, pc) // counted in c.wg when the timer was armed
}

// flush publishes pc's changes, one message at a time, until none is left or the rest waits
// for its window; it ends what armed it in c.wg.
func (c *coalescer) flush(channel string, pc *pendingChanges) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		batch := pc.take()
		if len(batch) == 0 {
			pc.flushing = false
			if c.chans[channel] == pc {
				delete(c.chans, channel)
				c.chans = transports.Shrink(c.chans, &c.peak)
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		publishRuns(channel, batch, c.publish)
		c.mu.Lock()
		if pc.live > 0 && !pc.full() && !c.closed {
			pc.flushing = false
			c.schedule(channel, pc) // what came meanwhile waits for the rest of its window
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// publishRuns publishes batch as one message per run of changes of one kind, in order.
func publishRuns(channel string, batch []change, publish publishChanges) {
	for len(batch) > 0 {
		n := 1
		for n < len(batch) && batch[n].kind == batch[0].kind {
			n++
		}
		members := make([]protocol.Member, n)
		for i, ch := range batch[:n] {
			members[i] = ch.member
		}
		publish(channel, batch[0].kind, members)
		batch = batch[n:]
	}
}

// Close flushes every channel's pending changes at once and waits until they are published
// (each publish is bounded by the caller's timeout); changes added after it are dropped. Safe
// twice.
func (c *coalescer) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for channel, pc := range c.chans {
			c.schedule(channel, pc) // a timer armed for changes since cancelled is stopped too
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// cancel drops the live change at i.
func (pc *pendingChanges) cancel(i int) {
	ch := &pc.changes[i]
	delete(pc.index, ch.member.Session)
	pc.live--
	pc.bytes -= memberSize(ch.member)
	ch.kind, ch.member = "", protocol.Member{}
}

// full reports whether the live changes fill a message.
func (pc *pendingChanges) full() bool {
	return pc.live >= coalesceMaxMembers || pc.bytes >= coalesceMaxBytes
}

// take removes and returns the oldest live changes, as many as fit in a message (at least
// one when any is live).
func (pc *pendingChanges) take() []change {
	var out []change
	size, i := 0, 0
	for ; i < len(pc.changes) && len(out) < coalesceMaxMembers; i++ {
		ch := pc.changes[i]
		if ch.kind == "" {
			continue
		}
		s := memberSize(ch.member)
		if len(out) > 0 && size+s > coalesceMaxBytes {
			break
		}
		out = append(out, ch)
		size += s
	}
	rest := pc.changes[i:]
	pc.changes = nil
	pc.live, pc.bytes = 0, 0
	clear(pc.index)
	for _, ch := range rest {
		if ch.kind != "" {
			pc.index[ch.member.Session] = len(pc.changes)
			pc.changes = append(pc.changes, ch)
			pc.live++
			pc.bytes += memberSize(ch.member)
		}
	}
	return out // pc.first stays: what is left waited since then at least
}

// memberSize is about the size of m encoded in a message.
func memberSize(m protocol.Member) int {
	return len(`{"user":"","session":"","node":"","info":},`) + len(m.User) + len(m.Session) + len(m.Node) + len(m.Info)
}
