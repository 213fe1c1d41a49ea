package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// epollReaders read every connection's socket from a few goroutines, one epoll set each,
// instead of one goroutine per connection: a ready socket costs one read(2) and no goroutine
// switch, and one epoll_wait reports many of them. Each socket is a dup of the one the
// connection was opened on (that net.Conn is closed), so Go's own poller does not watch it too.
type epollReaders struct {
	b       *bench
	sets    []int                  // epoll fds
	conns   []atomic.Pointer[conn] // by connection index
	stopped atomic.Bool
	wg      sync.WaitGroup
}

const epollAvailable = true

func newEpollReaders(b *bench, n int) (*epollReaders, error) {
	e := &epollReaders{b: b, conns: make([]atomic.Pointer[conn], b.o.Conns)}
	for range n {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			e.closeSets()
			return nil, err
		}
		e.sets = append(e.sets, fd)
	}
	for _, fd := range e.sets {
		e.wg.Add(1)
		go e.run(fd)
	}
	return e, nil
}

// add moves connection c, subscribed and idle, to a worker.
func (e *epollReaders) add(c *conn) error {
	sc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return errors.New("not a TCP connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) }); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	syscall.CloseOnExec(fd)
	_ = c.nc.Close() // the dup keeps the socket open, non-blocking
	c.nc, c.fd = nil, fd
	e.conns[c.i].Store(c)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd), Pad: int32(c.i)}
	if err := syscall.EpollCtl(e.sets[c.i%len(e.sets)], syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		closeFD(fd)
		c.dead = true
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// run serves one epoll set until stop, waking at least every 100 ms to check.
func (e *epollReaders) run(set int) {
	defer e.wg.Done()
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for !e.stopped.Load() {
		n, err := syscall.EpollWait(set, events, 100)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			e.b.countErr(e.b.connErrors, "epoll_wait: "+err.Error())
			time.Sleep(10 * time.Millisecond) // bounded by stop; should not happen
			continue
		}
		for _, ev := range events[:n] {
			c := e.conns[ev.Pad].Load()
			if c == nil || c.dead {
				continue
			}
			e.drain(set, c, buf)
		}
	}
}

// drain reads what c's socket holds (the set is level-triggered: what is left is reported again).
func (e *epollReaders) drain(set int, c *conn, buf []byte) {
	fn := func(op byte, p []byte) error { return e.b.frame(c, op, p) }
	for range 4 {
		n, err := syscall.Read(c.fd, buf)
		if n > 0 {
			if ferr := c.feed(buf[:n], fn); ferr != nil {
				e.end(set, c, ferr)
				return
			}
		}
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
			return
		case err != nil:
			e.end(set, c, err)
			return
		case n == 0:
			e.end(set, c, errServerClosed)
			return
		case n < len(buf):
			return
		}
	}
}

func (e *epollReaders) end(set int, c *conn, err error) {
	_ = syscall.EpollCtl(set, syscall.EPOLL_CTL_DEL, c.fd, nil)
	closeFD(c.fd)
	c.dead = true
	e.b.ended(c, err)
}

// stop ends the workers and waits for them; the sockets they did not close are the caller's.
func (e *epollReaders) stop() {
	if e.stopped.Swap(true) {
		return
	}
	e.wg.Wait()
	e.closeSets()
}

func (e *epollReaders) closeSets() {
	for _, fd := range e.sets {
		closeFD(fd)
	}
	e.sets = nil
}

func closeFD(fd int) { _ = syscall.Close(fd) }

// writeFD writes a small frame to a non-blocking socket, retrying briefly while it is full.
func writeFD(fd int, p []byte) error {
	for tries := 0; len(p) > 0; {
		n, err := syscall.Write(fd, p)
		if n > 0 {
			p = p[n:]
		}
		switch {
		case err == syscall.EAGAIN:
			if tries++; tries > 100 {
				return errors.New("socket full")
			}
			time.Sleep(time.Millisecond)
		case err == syscall.EINTR:
		case err != nil:
			return err
		}
	}
	return nil
}
