package nats

import "sync"

// confirmer shares the server's confirmation among concurrent publishes (group commit). A
// publish whose PUBs are written to the connection needs a PING written after them and its
// PONG: the server answers in order, so the PONG says it has read everything written before
// the PING. Every publish that asks while no flush is running starts one; one that asks while a
// flush is running cannot use it (its PING may have gone out before the publish's PUBs), so it
// joins the next round, which one of its members runs as soon as the running flush is over, for
// all of them. A busy node then sends one PING per round trip instead of one per publish, and
// nats.go's read loop wakes one waiter per round instead of one per publish.
//
// A member of a round learns its round's result: nil only when the round's flush confirmed, an
// error (connection lost, timeout) otherwise. It waits at most for the flush under way and its
// own round's, each bounded by the flush's timeout.
type confirmer struct {
	mu   sync.Mutex
	cur  *round // the flush under way, nil when none
	next *round // the round that starts when cur is over, nil when nobody waits for one
}

// round is one flush and the publishes it confirms.
type round struct {
	done chan struct{} // closed once err is set
	err  error
}

// confirm returns once a flush (a call of flush) that started after confirm was called has
// returned, with that flush's error.
func (c *confirmer) confirm(flush func() error) error {
	c.mu.Lock()
	if r := c.next; r != nil { // its flush has not started: it will confirm this publish too
		c.mu.Unlock()
		<-r.done
		return r.err
	}
	if c.cur == nil {
		r := &round{done: make(chan struct{})}
		c.cur = r
		c.mu.Unlock()
		return c.run(r, flush)
	}
	r := &round{done: make(chan struct{})}
	c.next = r
	prev := c.cur
	c.mu.Unlock()
	<-prev.done // run cleared cur before closing done
	c.mu.Lock()
	c.cur, c.next = r, nil // later publishes join a round after r
	c.mu.Unlock()
	return c.run(r, flush)
}

// run flushes for round r, which is c.cur, and hands the result to its members.
func (c *confirmer) run(r *round, flush func() error) error {
	r.err = flush()
	c.mu.Lock()
	c.cur = nil
	c.mu.Unlock()
	close(r.done)
	return r.err
}
