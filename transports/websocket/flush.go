package websocket

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Coalescing writes.
//
// melody writes every queued message with its own gorilla WriteMessage, and gorilla hands every
// frame to the net.Conn with its own Write: one write(2) per delivery, which is most of the CPU a
// node spends fanning out (a write on this kind of virtual machine costs some 7 µs). The hub
// extends around that in two ways, both below melody's API:
//
//   - flushConn sits between gorilla and the socket: it keeps a frame in a buffer while more
//     frames are queued behind it, and writes everything in one call with the last one;
//   - a connection hands melody only the first frame of a burst; the frames queued behind it are
//     framed by the hub itself and appended to flushConn's buffer from melody's write goroutine,
//     in the hook melody calls once that first frame is written (Conn.sent), without a trip
//     through melody's queue, gorilla and the scheduler each.
//
// Nothing waits for frames that are not queued yet: when the queue is empty the frame goes out at
// once, so coalescing costs no latency and happens exactly when a connection falls behind
// (bursts, fan-out to many subscribers on few cores). The frames stay whole and in order: the
// client sees the same WebSocket frames, only fewer TCP writes.

// maxCoalesce bounds the bytes written in one call; a frame that would make the buffer larger
// flushes it first. The buffers are pooled: an idle connection holds none.
const maxCoalesce = 32 << 10

var coalescePool = sync.Pool{New: func() any { b := make([]byte, 0, maxCoalesce); return &b }}

// flushConn wraps the socket of one connection under gorilla. Its writers are gorilla (melody's
// write goroutine for messages and pings, the read goroutine for pongs and close replies; gorilla
// serialises them, one whole frame at a time) and the hub's own frames (writeFrame, from
// melody's write goroutine, between two of gorilla's frames); mu serialises them all. Close may
// be called at any time and does not touch the buffer.
type flushConn struct {
	net.Conn
	// conn is the connection this socket carries (connOf finds it from melody's session
	// through gorilla's NetConn). Set before the handshake, never changed.
	conn *Conn
	// more reports whether, besides the frame being written, another frame is queued for the
	// connection. nil until the connection is open: before that (the handshake) every write
	// goes straight through.
	more func() bool
	// negotiated is set during the handshake when gorilla's 101 answer accepted
	// permessage-deflate (read once the upgrade returned, on the same goroutine).
	negotiated bool
	// leadDeflated says the next text frame gorilla writes (the lead: Conn.giveLead) carries a
	// deflated payload: Write sets its RSV1 bit. Set before melody is handed the frame.
	leadDeflated atomic.Bool
	// guard bounds what the client's compressed frames inflate to (inflate.go); nil without
	// compression. Only gorilla's reader (one goroutine) reads.
	guard *inflateGuard

	mu       sync.Mutex
	buf      *[]byte       // pending bytes; nil when empty
	rem      int           // bytes of gorilla's current frame still to come (it may write one in two calls)
	deadline time.Time     // the write deadline set last, applied when bytes go out
	timeout  time.Duration // the write timeout of the hub's own writes (writeFrame, flushAll)
	writes   atomic.Int64
	hdr      [10]byte // writeFrame's frame header; f.mu is held
}

// Read reads from the socket, through the inflate guard once the connection negotiated
// compression (set before gorilla reads its first frame).
func (f *flushConn) Read(p []byte) (int, error) {
	if f.guard == nil {
		return f.Conn.Read(p)
	}
	return f.guard.read(f.Conn, p)
}

// socketWrites is how many write calls reached the socket once the connection was open.
func (f *flushConn) socketWrites() int64 { return f.writes.Load() }

// SetWriteDeadline records the deadline for the next write to the socket: a buffered frame goes
// out with a later frame, under that frame's deadline.
func (f *flushConn) SetWriteDeadline(t time.Time) error {
	if f.more == nil {
		return f.Conn.SetWriteDeadline(t)
	}
	f.mu.Lock()
	f.deadline = t
	f.mu.Unlock()
	return nil
}

// Write takes a frame, or the first or second part of one, from gorilla.
func (f *flushConn) Write(p []byte) (int, error) {
	if f.more == nil {
		if bytes.Contains(p, deflateAccepted) { // the handshake's answer (gorilla writes it whole)
			f.negotiated = true
		}
		return f.Conn.Write(p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rsv1 := false
	if f.rem == 0 {
		f.rem = frameLen(p)
		// A text message's first (and only) frame: gorilla writes melody's messages whole.
		rsv1 = len(p) > 0 && p[0] == 0x81 && f.leadDeflated.Swap(false)
	}
	f.rem -= len(p)
	if f.rem < 0 { // not a frame boundary we understand: never hold such bytes back
		f.rem = 0
	}
	if rsv1 { // the header is gorilla's buffer: set the bit in a copy
		if f.held()+len(p) > maxCoalesce {
			if err := f.flush(nil, nil); err != nil {
				return 0, err
			}
		}
		start := f.held()
		f.hold(p)
		(*f.buf)[start] |= rsv1Bit
		if f.rem > 0 || f.more() {
			return len(p), nil
		}
		if err := f.flush(nil, nil); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if (f.rem > 0 || f.more()) && f.held()+len(p) <= maxCoalesce {
		f.hold(p)
		return len(p), nil
	}
	if err := f.flush(p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// deflateAccepted is in gorilla's handshake answer when it negotiated permessage-deflate.
var deflateAccepted = []byte("\r\nSec-WebSocket-Extensions: permessage-deflate")

// rsv1Bit marks a frame of a compressed message (RFC 7692).
const rsv1Bit = 0x40

// writeFrame appends a text frame with payload to the buffer (writing out what the buffer holds
// first when the frame would not fit), to go out with the next flushAll or gorilla's next frame.
// deflated marks a deflated payload (RSV1).
func (f *flushConn) writeFrame(payload []byte, deflated bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rem != 0 {
		return errors.New("websocket: frame written inside another") // cannot happen: see the type's comment
	}
	hdr := appendHeader(f.hdr[:0], len(payload)) // in the struct: a local array would escape to the heap (flush)
	if deflated {
		hdr[0] |= rsv1Bit
	}
	if n := f.held() + len(hdr) + len(payload); n > maxCoalesce {
		f.deadline = time.Now().Add(f.timeout)
		if len(hdr)+len(payload) > maxCoalesce/2 {
			return f.flush(hdr, payload) // a large frame goes out with what is held, in one writev
		}
		if err := f.flush(nil, nil); err != nil {
			return err
		}
	}
	f.hold(hdr)
	f.hold(payload)
	return nil
}

// flushAll writes out what the buffer holds.
func (f *flushConn) flushAll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buf == nil {
		return nil
	}
	f.deadline = time.Now().Add(f.timeout)
	return f.flush(nil, nil)
}

func (f *flushConn) held() int {
	if f.buf == nil {
		return 0
	}
	return len(*f.buf)
}

func (f *flushConn) hold(p []byte) {
	if f.buf == nil {
		f.buf = coalescePool.Get().(*[]byte)
	}
	*f.buf = append(*f.buf, p...)
}

// flush writes what is buffered followed by p and q, in one call (one write, or one writev on a
// TCP socket); f.mu is held.
func (f *flushConn) flush(p, q []byte) error {
	if err := f.Conn.SetWriteDeadline(f.deadline); err != nil {
		return err
	}
	f.writes.Add(1)
	b := f.buf
	f.buf = nil
	var err error
	switch {
	case b == nil && len(q) == 0:
		_, err = f.Conn.Write(p)
	case b != nil && len(*b)+len(p)+len(q) <= cap(*b): // the usual case: one buffer, no allocation
		*b = append(append(*b, p...), q...)
		_, err = f.Conn.Write(*b)
	case b != nil:
		bufs := net.Buffers{*b, p, q}
		_, err = bufs.WriteTo(f.Conn)
	default:
		bufs := net.Buffers{p, q}
		_, err = bufs.WriteTo(f.Conn)
	}
	if b != nil {
		*b = (*b)[:0]
		coalescePool.Put(b)
	}
	return err
}

// appendHeader appends the header of a final, unmasked text frame of n payload bytes.
func appendHeader(b []byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x81, byte(n))
	case n < 1<<16:
		return append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		return append(b, 0x81, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// frameLen is the length, header included, of the server (unmasked) WebSocket frame that starts
// p; 0 when p does not hold a whole header.
func frameLen(p []byte) int {
	if len(p) < 2 {
		return 0
	}
	switch n := int(p[1] & 0x7f); n {
	case 126:
		if len(p) < 4 {
			return 0
		}
		return 4 + (int(p[2])<<8 | int(p[3]))
	case 127:
		if len(p) < 10 {
			return 0
		}
		var v uint64
		for _, b := range p[2:10] {
			v = v<<8 | uint64(b)
		}
		if v > 1<<40 {
			return 0
		}
		return 10 + int(v)
	default:
		return 2 + n
	}
}

// hijacker hands gorilla the connection's flushConn instead of the bare socket, and takes
// gorilla's refusal of a request it will not upgrade (refuseUpgrade).
type hijacker struct {
	http.ResponseWriter
	fc      *flushConn
	refused *UpgradeError
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.fc.Conn = conn
	// The server's ResponseWriter holds its connection's 4 KiB read and write buffers (and
	// gorilla keeps neither: it has its own small reader and a pooled writer). The hijacker
	// lives as long as the connection, so it lets go of them: ~8 KiB per idle connection.
	h.ResponseWriter = nil
	return h.fc, brw, nil
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
