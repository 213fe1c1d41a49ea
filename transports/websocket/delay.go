package websocket

import (
	"sync"
	"sync/atomic"
	"time"
)

// delayClock hands over the frames held back by a write delay. It ticks every sixteenth of the
// delay (at most every millisecond), so that the connections that wrote at about the same time
// do not all come due on the same tick; a connection that wrote less than a delay ago when a frame
// arrives is put on the list, and the tick that comes a delay after its last write hands its
// first queued frame to melody, whose write goroutine then writes everything queued (Conn.sent).
// Connections pay one atomic load per frame for this, and one list entry while they wait.
type delayClock struct {
	every time.Duration
	ticks int64 // ticks in a delay
	tick  atomic.Int64

	mu      sync.Mutex
	waiting []*Conn // connections waiting for their next write
	spare   []*Conn // spare slice, swapped with waiting on each tick

	runMu   sync.Mutex
	running bool // start started run
	stopped bool // stop was called: start starts nothing
	quit    chan struct{}
	done    chan struct{}
}

// newDelayClock makes the clock of delay; start starts it.
func newDelayClock(delay time.Duration) *delayClock {
	every := max(delay/16, time.Millisecond)
	return &delayClock{every: every, ticks: int64((delay + every - 1) / every), quit: make(chan struct{}), done: make(chan struct{})}
}

// start starts the goroutine that ticks, until stop. Calls after the first, and after stop, do
// nothing.
func (d *delayClock) start() {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	if d.running || d.stopped {
		return
	}
	d.running = true
	go d.run()
}

// now is the current tick.
func (d *delayClock) now() int64 { return d.tick.Load() }

// due reports whether a connection whose last lead was handed over at tick last may write now.
func (d *delayClock) due(last int64) bool { return d.now()-last >= d.ticks }

// schedule puts c on the list; c.qmu is held (the list's lock is taken inside it, never the
// other way round).
func (d *delayClock) schedule(c *Conn) {
	d.mu.Lock()
	d.waiting = append(d.waiting, c)
	d.mu.Unlock()
}

func (d *delayClock) run() {
	defer close(d.done)
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-d.quit:
			return
		}
		now := d.tick.Add(1)
		d.mu.Lock()
		list := d.waiting
		d.waiting, d.spare = d.spare[:0], nil
		d.mu.Unlock()
		var later []*Conn
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
	}
}

// stop stops the clock and waits for its goroutine to end. Safe to call twice, concurrently, and
// on a clock that never started.
func (d *delayClock) stop() {
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
