package websocket

import (
	"bytes"
	"errors"
	"io"

	"github.com/klauspost/compress/flate"
)

// inflateGuard bounds what a client's compressed message inflates to, before gorilla reads it.
//
// gorilla inflates a compressed message while it reads it, into one buffer (ReadMessage), and
// its read limit counts the bytes on the wire: a 64 KiB frame of deflate can inflate to some
// 64 MiB. The guard sits under gorilla, in the socket's Read (flushConn): it follows the client's
// frames, lets plain ones through as they come, holds back the bytes of a compressed message
// until the message is whole, inflates it into nothing to count its size, and only then hands
// it to gorilla. In place of a message that inflates beyond the limit, gorilla is handed the
// header of a frame one byte over its read limit, which it answers as any frame too large:
// close 1009, and the read fails; the guard reads nothing more. Control frames are let through at once, even in the middle of a
// held message (RFC 6455 allows them between fragments). A compressed message larger than the
// limit on the wire is let through unchecked: gorilla refuses it with 1009.
//
// Used by one goroutine at a time (the connection's reader).
type inflateGuard struct {
	limit int64

	hdr  [14]byte // the frame header being read
	hn   int
	left int64   // payload bytes of the current frame still to come
	mask [4]byte // its masking key
	mpos int     // position in the mask of the next payload byte
	ctl  bool    // the current frame is a control frame (let through)

	holding bool   // inside a compressed message being held back
	fin     bool   // the current frame ends its message
	held    []byte // the held message's bytes as read (headers and masked payload)
	z       []byte // its payload unmasked: the deflate data
	out     []byte // bytes checked, for gorilla
	dead    bool   // a message inflated beyond the limit: nothing more is read
	in      []byte // read buffer
}

var errInflatedTooLarge = errors.New("websocket: a compressed client frame inflates beyond max_frame_size")

func newInflateGuard(limit int64) *inflateGuard { return &inflateGuard{limit: limit} }

// read fills p from what r sends, holding compressed messages back until they are checked.
func (g *inflateGuard) read(r io.Reader, p []byte) (int, error) {
	for len(g.out) == 0 {
		if g.dead {
			return 0, errInflatedTooLarge
		}
		if g.in == nil {
			g.in = make([]byte, 4096)
		}
		n, err := r.Read(g.in)
		if n > 0 {
			if ferr := g.feed(g.in[:n]); ferr != nil {
				return 0, ferr
			}
		}
		if len(g.out) > 0 {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	if len(g.out) == 0 {
		g.out = g.out[:0:0] // give the memory back
	}
	return n, nil
}

// feed follows the frames in b.
func (g *inflateGuard) feed(b []byte) error {
	for len(b) > 0 && !g.dead {
		if g.left == 0 && g.hn < clientHeaderLen(g.hdr[:g.hn]) {
			// Header bytes.
			g.hdr[g.hn] = b[0]
			g.hn++
			b = b[1:]
			if g.hn < clientHeaderLen(g.hdr[:g.hn]) {
				continue
			}
			if err := g.header(); err != nil {
				return err
			}
			if g.left == 0 {
				if err := g.frameEnd(); err != nil {
					return err
				}
			}
			continue
		}
		k := int(min(g.left, int64(len(b))))
		chunk := b[:k]
		b = b[k:]
		g.left -= int64(k)
		if g.ctl || !g.holding {
			g.out = append(g.out, chunk...)
		} else {
			g.held = append(g.held, chunk...)
			for _, c := range chunk {
				g.z = append(g.z, c^g.mask[g.mpos&3])
				g.mpos++
			}
		}
		if g.left == 0 {
			if err := g.frameEnd(); err != nil {
				return err
			}
		}
	}
	return nil
}

// header has read a whole frame header.
func (g *inflateGuard) header() error {
	h := g.hdr[:g.hn]
	g.hn = 0
	op := h[0] & 0x0f
	g.ctl = op >= 0x8
	g.fin = h[0]&0x80 != 0
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		n = int64(h[2])<<8 | int64(h[3])
	case 127:
		n = 0
		for _, c := range h[2:10] {
			n = n<<8 | int64(c)
		}
		if n < 0 {
			n = 1 << 62 // gorilla refuses it
		}
	}
	g.left = n
	g.mask, g.mpos = [4]byte{}, 0
	if h[1]&0x80 != 0 {
		copy(g.mask[:], h[len(h)-4:])
	}
	switch {
	case g.ctl:
		g.out = append(g.out, h...)
	case !g.holding && h[0]&rsv1Bit != 0 && op != 0: // the first frame of a compressed message
		g.holding = true
		g.held = append(g.held[:0], h...)
		g.z = g.z[:0]
	case g.holding:
		g.held = append(g.held, h...)
	default:
		g.out = append(g.out, h...)
	}
	if g.holding && !g.ctl && int64(len(g.z))+n > g.limit {
		// Over the limit on the wire: gorilla refuses it (1009). Pass it on unchecked.
		g.out = append(g.out, g.held...)
		g.held, g.z = g.held[:0:0], g.z[:0:0]
		g.holding = false
	}
	return nil
}

// frameEnd has read the whole payload of a frame.
func (g *inflateGuard) frameEnd() error {
	if g.ctl || !g.holding || !g.fin {
		return nil
	}
	// The last frame of a held compressed message: check it, then hand it over.
	g.holding = false
	if inflatedSize(g.z, g.limit) > g.limit {
		g.out = appendTooLarge(g.out, g.limit)
		g.held, g.z, g.dead = nil, nil, true
		return nil
	}
	g.out = append(g.out, g.held...)
	g.held, g.z = g.held[:0:0], g.z[:0:0]
	return nil
}

// inflatedSize is how many bytes z (a message's deflate data, RFC 7692) inflates to, counting
// no further than limit+1; a stream deflate cannot read counts as fitting (gorilla fails it).
func inflatedSize(z []byte, limit int64) int64 {
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	defer r.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(r, limit+1))
	return n
}

// appendTooLarge appends the header of a final, masked client text frame of limit+1 bytes.
func appendTooLarge(b []byte, limit int64) []byte {
	n := uint64(limit + 1)
	return append(b, 0x81, 0x80|127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16),
		byte(n>>8), byte(n), 0, 0, 0, 0)
}

// clientHeaderLen is the length of the client frame header starting with h, as far as h tells.
func clientHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}
