package stream

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Hijacked is a stream that owns its connection: the server's request, response and buffers
// are let go once the handler returns, and the connection holds no buffer between batches (one
// from a pool while a batch is written). A stream of an HTTP/1.x GET takes its connection so;
// HTTP/2 cannot (NewWriter then). What it writes is what the server would have: a 200 with the
// response's headers, a chunked body (HTTP/1.1; an HTTP/1.0 client reads to the close).
type Hijacked struct {
	*Writer
	c      *conned       // the Writer's sink
	done   chan struct{} // the reader ended
	cancel context.CancelFunc
}

// ErrNotHijackable is Hijack's answer for a request whose connection a stream does not take:
// not HTTP/1.x, not a GET, or a ResponseWriter that cannot be hijacked.
var ErrNotHijackable = errors.New("stream: the connection cannot be taken over")

// Hijack takes r's connection over for a stream in format f: the headers set on w so far are
// sent with the stream's own. The returned context, with ctx's values, ends once the client
// closes the connection (or Close is called); the caller serves the stream with it, on a
// goroutine of its own so that the handler returns, then calls Close.
func Hijack(ctx context.Context, w http.ResponseWriter, r *http.Request, f Format, cur *Cursor, timeout time.Duration) (*Hijacked, context.Context, error) {
	if r.ProtoMajor != 1 || r.Method != http.MethodGet {
		return nil, nil, ErrNotHijackable
	}
	header := w.Header().Clone()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, errors.Join(ErrNotHijackable, err)
	}
	_ = conn.SetDeadline(time.Time{}) // the server's read and write timeouts: a stream outlives them
	if brw.Reader.Buffered() > 0 {
		// The client sent more after its GET (a pipelined request): nothing will answer it.
		conn.Close()
		return nil, nil, errors.New("stream: the client sent more after its request")
	}
	out := &conned{conn: conn, chunked: r.ProtoAtLeast(1, 1), header: header}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Hijacked{Writer: &Writer{out: out, f: f, cur: cur, timeout: timeout}, c: out, done: make(chan struct{}), cancel: cancel}
	go h.read()
	return h, sctx, nil
}

// read waits for the client to close the connection, then ends the stream's context. A
// stream's client sends nothing after its request: one that does (another request, or anything)
// ends the stream too.
func (h *Hijacked) read() {
	defer close(h.done)
	var b [1]byte
	_, _ = h.c.conn.Read(b[:])
	h.cancel()
}

// Close ends the body (the last chunk, within the write timeout) and the connection, and waits
// for the reader. Call it once, after the stream was served.
func (h *Hijacked) Close() {
	h.cancel()
	if h.c.started && h.c.chunked && !h.aborted.Load() {
		h.arm()
		h.c.last = true
		_ = h.c.flush()
	}
	h.c.conn.Close()
	<-h.done
}

// bufs are the batches' buffers.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// chunkRoom is the room kept before a batch for its chunk's size line: 8 hex digits and CRLF.
const chunkRoom = 10

// conned is the sink of a hijacked stream.
type conned struct {
	conn    net.Conn
	chunked bool
	header  http.Header // the response's, until start
	head    []byte      // the status line and the headers, written before the first chunk
	started bool
	last    bool    // the next flush ends the body
	buf     *[]byte // the batch, after chunkRoom bytes; nil between batches
}

func (c *conned) start(contentType string) error {
	h := c.header
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Del("Content-Length")
	if c.chunked {
		h.Set("Transfer-Encoding", "chunked")
	} else {
		h.Set("Connection", "close")
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head) // sorted by key, line breaks in values made spaces, as the server writes them
	head.WriteString("\r\n")
	c.head = head.Bytes()
	c.header = nil
	c.started = true
	return nil
}

func (c *conned) write(p []byte) error {
	if c.buf == nil {
		c.buf = bufs.Get().(*[]byte)
		*c.buf = append((*c.buf)[:0], make([]byte, chunkRoom)...)
	}
	*c.buf = append(*c.buf, p...)
	return nil
}

// flush writes the head (the first time) and the batch as one chunk, in one write.
func (c *conned) flush() error {
	if c.buf == nil && c.head == nil && !c.last {
		return nil
	}
	if c.buf == nil {
		_ = c.write(nil)
	}
	b := *c.buf
	body := len(b) - chunkRoom
	from := chunkRoom
	if c.chunked && (body > 0 || c.last) {
		size := strconv.AppendInt(make([]byte, 0, 8), int64(body), 16)
		from = chunkRoom - len(size) - 2
		copy(b[from:], size)
		copy(b[from+len(size):], "\r\n")
		b = append(b, "\r\n"...)
		if c.last && body > 0 {
			b = append(b, "0\r\n\r\n"...)
		}
	}
	out := b[from:]
	if c.head != nil {
		out = append(c.head, out...)
		c.head = nil
	}
	_, err := c.conn.Write(out)
	if cap(b) <= 64<<10 {
		*c.buf = b[:0]
		bufs.Put(c.buf)
	}
	c.buf = nil
	return err
}

func (c *conned) setWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
