package websocket

import (
	"sync"
	"sync/atomic"
	"time"
)

// The adaptive write policy (websocket.latency_budget).
//
// A write(2) per delivery is most of what a node spends fanning out. While the node keeps up,
// every frame goes out at once: holding it back would buy little and cost latency. Once the
// node is busy, a connection that wrote less than a budget ago has its frames held until a
// budget after that write, and they go out together, in one write: the node then writes to each
// connection at most once per budget, whatever the message rate, and gets out of saturation.
//
// Busy is decided by the budget clock, from two figures it samples on each tick: the leads in
// flight (frames handed to melody and not yet written, node-wide: how far the write goroutines
// are behind) and the frames delivered. Over each window of busyWindow ticks:
//
//   - an idle node becomes busy when the write goroutines were behind on at least half of the
//     window's ticks: more than busyLeads leads in flight at that tick and at the one before, a
//     backlog that lasted a tick or more (the burst of a fan-out that the writers drain within a
//     tick does not count): the node cannot write what it is given as it comes;
//   - a busy node becomes idle again once it delivers less than half the frames per window it
//     delivered when it became busy (holding frames takes the backlog away, so the backlog cannot
//     say when to stop; the load that caused it can).
//
// A connection that wrote nothing for a budget still gets its next frame at once, busy or not.
//
// The clock sleeps while it has nothing to do: at the end of a window in which the node stayed
// idle, with no connection waiting and the writers not behind, it stops ticking until more than
// busyLeads leads are in flight (the first sign of a backlog, seen by the connection that hands
// one over) or a connection is put on the list. A ticking clock woke a thread of the process
// every sixteenth of the budget, whatever the load: on the channels row (500 messages a second,
// one delivery each) that was 213 wake-ups a second, and 12–14 context switches of the node per
// message where a sleeping clock makes 8–10 (docs/performance.md, "The publish path's floor").
// The window after a wake starts afresh, and the tick counter moves on by the ticks slept, so
// that a connection's last write is as old in ticks as it is in time.

// busyLeads is how many leads in flight count as the write goroutines being behind: more than a
// few hundred microseconds of writes on this kind of machine.
const busyLeads = 64

// busyWindow is the number of ticks (a sixteenth of the budget, at least a millisecond, each)
// over which the clock decides whether the node is busy.
const busyWindow = 16

// budgetClock hands over the frames held back by the latency budget, and decides whether the
// node is busy. It ticks every sixteenth of the budget (at most every millisecond), so that the
// connections that wrote at about the same time do not all come due on the same tick; a
// connection that wrote less than a budget ago when a frame arrives while the node is busy is put
// on the list, and the tick that comes a budget after its last write hands its first queued frame
// to melody, whose write goroutine then writes everything queued (Conn.sent). Connections pay
// one atomic load per frame for this, one atomic add per burst, and one list entry while they
// wait.
type budgetClock struct {
	every time.Duration
	ticks int64 // ticks in a budget
	tick  atomic.Int64

	busy    atomic.Bool   // frames of connections that wrote less than a budget ago are held
	leads   atomic.Int64  // leads in flight, node-wide (Conn.giveLead to Conn.endLead)
	frames  atomic.Int64  // frames delivered (Hub.Deliver, Hub.Broadcast)
	load    busyState     // the clock goroutine's
	onBusy  func(bool)    // told each change of busy (the hub's metric); called by the clock goroutine
	forced  atomic.Bool   // tests: busy for good (force)
	parked  atomic.Bool   // the clock sleeps until wake (set by the run goroutine only)
	wakeup  chan struct{} // buffered 1: the token of the one wake that took parked back
	waiting []*Conn       // connections waiting for their next write, under mu
	spare   []*Conn       // spare slice, swapped with waiting on each tick
	later   []*Conn       // the run goroutine's: connections of a tick to kick again, kept for the next tick
	mu      sync.Mutex

	runMu   sync.Mutex
	running bool // start started run
	stopped bool // stop was called: start starts nothing
	quit    chan struct{}
	done    chan struct{}
}

// newBudgetClock makes the clock of budget; start starts it.
func newBudgetClock(budget time.Duration) *budgetClock {
	every := max(budget/16, time.Millisecond)
	return &budgetClock{every: every, ticks: int64((budget + every - 1) / every),
		wakeup: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// start starts the goroutine that ticks, until stop. Calls after the first, and after stop, do
// nothing.
func (d *budgetClock) start() {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	if d.running || d.stopped {
		return
	}
	d.running = true
	go d.run()
}

// now is the current tick.
func (d *budgetClock) now() int64 { return d.tick.Load() }

// due reports whether a connection whose last lead was handed over at tick last may write now:
// the node is not busy, or the connection wrote a budget ago or longer.
func (d *budgetClock) due(last int64) bool { return !d.busy.Load() || d.now()-last >= d.ticks }

// schedule puts c on the list; c.qmu is held (the list's lock is taken inside it, never the
// other way round).
func (d *budgetClock) schedule(c *Conn) {
	d.mu.Lock()
	d.waiting = append(d.waiting, c)
	d.mu.Unlock()
	if d.parked.Load() {
		d.wake()
	}
}

// addLead counts a lead handed to melody, and wakes a sleeping clock once the writers may be
// falling behind (more than busyLeads leads in flight).
func (d *budgetClock) addLead() {
	if d.leads.Add(1) > busyLeads && d.parked.Load() {
		d.wake()
	}
}

// force makes the node count as busy for good, or not (tests).
func (d *budgetClock) force(busy bool) {
	d.forced.Store(busy)
	if d.parked.Load() {
		d.wake()
	}
}

// wake ends the clock's sleep. Only the caller that takes parked back sends the token, so the
// buffer of one never fills.
func (d *budgetClock) wake() {
	if d.parked.CompareAndSwap(true, false) {
		d.wakeup <- struct{}{}
	}
}

// quiet reports whether the clock has nothing to do: the node is not busy, no connection waits
// and the writers are not behind.
func (d *budgetClock) quiet() bool {
	d.mu.Lock()
	waiting := len(d.waiting)
	d.mu.Unlock()
	return waiting == 0 && !d.busy.Load() && !d.forced.Load() && d.leads.Load() <= busyLeads
}

// sleep stops the ticker until wake, when the clock is quiet; it reports false once stop was
// called. It is called at the end of a window.
func (d *budgetClock) sleep(t *time.Ticker) bool {
	d.parked.Store(true)
	if !d.quiet() { // checked after parked is set: a wake from now on is not lost
		if !d.parked.CompareAndSwap(true, false) {
			<-d.wakeup // a wake took it first: its token
		}
		return true
	}
	t.Stop()
	at := time.Now()
	select {
	case <-d.wakeup:
	case <-d.quit:
		return false
	}
	d.tick.Add(int64(time.Since(at) / d.every))
	d.load.over = false // a fresh window (the last one ended before the sleep)
	d.frames.Store(0)
	t.Reset(d.every)
	return true
}

func (d *budgetClock) run() {
	defer close(d.done)
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-d.quit:
			return
		}
		ended := d.load.sample(d.leads.Load()) == busyWindow
		if ended {
			busy := d.load.observe(d.frames.Swap(0)) || d.forced.Load()
			if d.busy.Swap(busy) != busy && d.onBusy != nil {
				d.onBusy(busy)
			}
		}
		now := d.tick.Add(1)
		d.mu.Lock()
		list := d.waiting
		d.waiting, d.spare = d.spare[:0], nil
		d.mu.Unlock()
		later := d.later[:0]
		for i, c := range list {
			if c.kick(now) {
				later = append(later, c)
			}
			list[i] = nil
		}
		d.mu.Lock()
		d.waiting = append(d.waiting, later...)
		d.spare = list[:0]
		d.mu.Unlock()
		clear(later)
		d.later = later[:0]
		if ended && !d.sleep(t) {
			return
		}
	}
}

// busyState decides, window after window, whether the node is busy (see the top of the file).
type busyState struct {
	busy   bool
	entry  int64 // frames in the window that made the node busy
	over   bool  // more than busyLeads leads were in flight at the last tick
	behind int   // ticks of this window at which the writers were behind
	ticks  int   // ticks of this window so far
}

// sample takes the leads in flight at one tick and returns the ticks of the window so far.
func (s *busyState) sample(leads int64) int {
	over := leads > busyLeads
	if over && s.over {
		s.behind++
	}
	s.over = over
	s.ticks++
	return s.ticks
}

// observe ends the window, in which frames were delivered, and reports whether the node is
// busy from now on.
func (s *busyState) observe(frames int64) bool {
	switch {
	case !s.busy && 2*s.behind >= s.ticks:
		s.busy, s.entry = true, max(frames, 1)
	case s.busy && 2*frames < s.entry:
		s.busy = false
	}
	s.behind, s.ticks = 0, 0
	return s.busy
}

// stop stops the clock and waits for its goroutine to end. Safe to call twice, concurrently, and
// on a clock that never started.
func (d *budgetClock) stop() {
	d.runMu.Lock()
	if !d.stopped {
		d.stopped = true
		close(d.quit)
	}
	running := d.running
	d.runMu.Unlock()
	if running {
		<-d.done
	}
}
