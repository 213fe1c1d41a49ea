package websocket

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// Compression (permessage-deflate, RFC 7692).
//
// gorilla negotiates the extension (Upgrader.EnableCompression) with a client that offers it,
// always without context takeover: every message is compressed on its own. That is what lets a
// node compress a channel message once and send the same bytes to every connection that
// negotiated it, as it sends one encoded frame to all. gorilla's own write compression is turned
// off on every connection (it would compress each frame again, per connection); the hub
// compresses instead:
//
//   - Deliver and Broadcast compress a frame once, on the first subscriber that negotiated
//     compression, and queue the compressed payload (a frame with RSV1 set) to every such
//     subscriber; the others get the plain frame, as before.
//   - Send (replies, replays: frames for one connection) compresses per connection.
//   - Frames shorter than minDeflate bytes, and frames that deflate does not make shorter, go out
//     plain: RSV1 is per message, so a connection may get both.
//   - Deliver compresses under the channel's shard read lock, as it encodes the other formats: a
//     very large message (hundreds of KiB) holds Join and Leave on that shard for the time of
//     one compression (1.3 ms for 300 KiB of text at level 1 on the 2-vCPU test machine).
//
// On the wire such a frame is written the way every frame is (flush.go): the lead through melody
// and gorilla, which frame the compressed payload as a plain text frame and flushConn sets its
// RSV1 bit as it passes (flushConn.leadDeflated); the frames behind it framed by the hub itself
// with RSV1 set. Coalescing joins whole frames into one socket write, so it is unchanged: each
// compressed frame stays a message of its own that the client inflates on its own.
//
// Reading: a client that negotiated compression may send compressed frames; gorilla inflates
// them. Its read limit (max_frame_size) applies to the bytes on the wire, so the hub checks the
// inflated size before gorilla reads the frame (inflate.go).

// minDeflate is the least frame size compressed: below it deflate saves a few bytes at best
// and costs a compression per message.
const minDeflate = 128

// deflateTail ends a flushed deflate stream (an empty stored block); RFC 7692 7.2.1 has the
// sender drop it and the receiver add it back.
var deflateTail = []byte{0, 0, 0xff, 0xff}

// deflater compresses frames at one flate level. Safe for concurrent use: its writers are pooled.
type deflater struct {
	level int
	pool  sync.Pool    // *flate.Writer
	count atomic.Int64 // frames compressed (the tests count them)
}

func newDeflater(level int) *deflater { return &deflater{level: level} }

// frame is f for a connection that negotiated compression: the deflated payload with z set, or
// f itself when it is short or deflate does not shorten it.
func (d *deflater) frame(b []byte) qframe {
	if len(b) < minDeflate {
		return qframe{b: b}
	}
	var buf bytes.Buffer
	buf.Grow(len(b)/2 + 64)
	w, _ := d.pool.Get().(*flate.Writer)
	if w == nil {
		var err error
		if w, err = flate.NewWriter(&buf, d.level); err != nil {
			return qframe{b: b} // a level the settings let through by mistake: send plain
		}
	} else {
		w.Reset(&buf)
	}
	d.count.Add(1)
	_, _ = w.Write(b) // a bytes.Buffer does not fail
	_ = w.Flush()
	d.pool.Put(w)
	z := bytes.TrimSuffix(buf.Bytes(), deflateTail)
	if len(z) >= len(b) {
		return qframe{b: b}
	}
	return qframe{b: z, z: true}
}

// qframe is a frame queued for a connection: its payload, and whether that payload is deflated
// (sent with RSV1; only to a connection that negotiated compression).
type qframe struct {
	b []byte
	z bool
}

// lazyFrame compresses one frame at most once for the connections that negotiated compression
// (Deliver's and Broadcast's loops, on one goroutine).
type lazyFrame struct {
	plain []byte
	z     qframe
	done  bool
}

// to is the frame to queue to c.
func (l *lazyFrame) to(c *Conn) qframe {
	if !c.deflate || len(l.plain) < minDeflate {
		return qframe{b: l.plain}
	}
	if !l.done {
		l.z, l.done = c.hub.deflate.frame(l.plain), true
	}
	return l.z
}
