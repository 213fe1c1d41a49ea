// Package stream is the one-way transports of a node: Server-Sent Events (GET /sse) and HTTP
// streaming of NDJSON (GET /stream). Each is a websocket.Stream, a connection of the same hub
// as the WebSocket ones (websocket.Hub.Serve): the same frames, fan-out, slow-consumer rule and
// drain; what this package adds is how frames are written into an HTTP response, and the event
// id, the positions of every channel of a stream in one string, so that a client resumes the
// whole stream on any node with the last id it got (docs/protocol.md, Server-Sent Events).
package stream

import (
	"bytes"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Format is how frames are written into the response.
type Format uint8

const (
	// SSE is Server-Sent Events (text/event-stream): each frame an event whose data is the
	// frame; a frame with a position carries the stream's event id in `id:`.
	SSE Format = iota
	// NDJSON is one frame per line (application/x-ndjson); a frame with a position carries the
	// stream's event id in an "event_id" field.
	NDJSON
)

// ContentType is the response's content type in format f.
func (f Format) ContentType() string {
	if f == NDJSON {
		return "application/x-ndjson"
	}
	return "text/event-stream"
}

// Retry is the reconnection time an SSE stream tells the browser (`retry:`) at its start.
const Retry = time.Second

// Writer writes frames into one HTTP response; it is a websocket.Stream. Not safe for
// concurrent use: the hub calls it from one goroutine, but Abort.
type Writer struct {
	out     sink
	f       Format
	cur     *Cursor
	timeout time.Duration // of each batch of writes, up to its Flush
	armed   bool          // the write deadline of the current batch is set
	aborted atomic.Bool   // Abort was called: no deadline is set again
}

var _ websocket.Stream = (*Writer)(nil)

// sink is where a Writer's bytes go: the server's ResponseWriter, or a hijacked connection.
type sink interface {
	start(contentType string) error // the status line and headers, written on the next flush
	write(p []byte) error
	flush() error
	setWriteDeadline(t time.Time) error
}

// NewWriter writes frames in format f into w, keeping the positions of channels (the names the
// client asked for, in its order) from cur; each batch of writes must be flushed within timeout
// (0: no bound) or the connection ends.
func NewWriter(w http.ResponseWriter, f Format, cur *Cursor, timeout time.Duration) *Writer {
	return &Writer{out: &response{w: w, rc: http.NewResponseController(w)}, f: f, cur: cur, timeout: timeout}
}

// Start answers 200 with the stream's headers (and, for SSE, its retry time) and flushes them.
// The request's read deadline (http.Server.ReadTimeout) is lifted: a stream outlives it.
func (w *Writer) Start() error {
	if err := w.out.start(w.f.ContentType()); err != nil {
		return err
	}
	if w.f == SSE {
		if err := w.write("retry: " + itoa(int(Retry/time.Millisecond)) + "\n\n"); err != nil {
			return err
		}
	}
	return w.Flush()
}

// Write writes one frame.
func (w *Writer) Write(frame []byte) error {
	if bytes.IndexByte(frame, '\n') >= 0 || bytes.IndexByte(frame, '\r') >= 0 {
		frame = oneLine(frame)
	}
	id := ""
	if ch, pos, ok := protocol.FramePosition(frame); ok && w.cur.Update(ch, pos) {
		id = w.cur.ID()
	}
	w.arm()
	var err error
	if w.f == SSE {
		if id != "" {
			err = w.write("id: " + id + "\n")
		}
		if err == nil {
			err = w.write("data: ")
		}
		if err == nil {
			err = w.out.write(frame)
		}
		if err == nil {
			err = w.write("\n\n")
		}
		return err
	}
	if id != "" && len(frame) > 2 && frame[0] == '{' {
		err = w.write(`{"event_id":"` + id + `",`)
		frame = frame[1:]
	}
	if err == nil {
		err = w.out.write(frame)
	}
	if err == nil {
		err = w.write("\n")
	}
	return err
}

// oneLine is frame with its line breaks made spaces. A frame is JSON, where a line break can
// only be whitespace between tokens (inside strings they are escaped): a payload a service
// published pretty-printed. An event's data and an NDJSON line must be one line.
func oneLine(frame []byte) []byte {
	out := make([]byte, len(frame))
	for i, c := range frame {
		if c == '\n' || c == '\r' {
			c = ' '
		}
		out[i] = c
	}
	return out
}

// heartbeatLine is the NDJSON stream's keep-alive line.
const heartbeatLine = `{"type":"heartbeat"}` + "\n"

// Heartbeat writes a keep-alive: an SSE comment, or a heartbeat frame on its own line.
func (w *Writer) Heartbeat() error {
	if w.f == SSE {
		return w.write(": heartbeat\n\n")
	}
	return w.write(heartbeatLine)
}

// Flush sends what was written.
func (w *Writer) Flush() error {
	w.arm()
	w.armed = false
	return w.out.flush()
}

// Abort makes the write under way, and every later one, fail at once: their deadline passed.
// Safe to call from any goroutine.
func (w *Writer) Abort() {
	_ = w.out.setWriteDeadline(time.Unix(1, 0))
	w.aborted.Store(true)
}

func (w *Writer) write(s string) error {
	w.arm()
	return w.out.write([]byte(s))
}

// arm sets the write deadline of a batch once, at its first write.
func (w *Writer) arm() {
	if !w.armed && w.timeout > 0 && !w.aborted.Load() {
		_ = w.out.setWriteDeadline(time.Now().Add(w.timeout))
		w.armed = true
	}
}

// response is the sink of a stream served through the server's ResponseWriter.
type response struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (r *response) start(contentType string) error {
	h := r.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	_ = r.rc.SetReadDeadline(time.Time{})
	r.w.WriteHeader(http.StatusOK)
	return nil
}

func (r *response) write(p []byte) error {
	_, err := r.w.Write(p)
	return err
}

func (r *response) flush() error                       { return r.rc.Flush() }
func (r *response) setWriteDeadline(t time.Time) error { return r.rc.SetWriteDeadline(t) }

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// Cursor is the last position of each channel of a stream, in the order the client named them;
// its ID, the event id, is what the client sends back to resume (Resume reads it). Not safe for
// concurrent use.
type Cursor struct {
	channels []string // as the client names them ($user included)
	pos      []string // their positions as frames carry them; "" until the first
	id       string
	dirty    bool
}

// idSep separates the positions in an event id; positions never hold it ([A-Za-z0-9_:-]).
const idSep = "."

// idVersion starts every event id, so that the form can change.
const idVersion = "1"

// NewCursor keeps the positions of channels, none known yet.
func NewCursor(channels []string) *Cursor {
	return &Cursor{channels: channels, pos: make([]string, len(channels)), dirty: true}
}

// Update records position for channel; false when it is not a channel of the stream or the
// position is the one recorded already.
func (c *Cursor) Update(channel, position string) bool {
	for i, ch := range c.channels {
		if ch == channel {
			if c.pos[i] == position {
				return false
			}
			c.pos[i] = position
			c.dirty = true
			return true
		}
	}
	return false
}

// ID is the event id: the positions of every channel, in the stream's order. It is at most
// MaxIDLen(len(channels)) bytes.
func (c *Cursor) ID() string {
	if c.dirty {
		c.id = idVersion + idSep + strings.Join(c.pos, idSep)
		c.dirty = false
	}
	return c.id
}

// MaxIDLen bounds the length of the event id of a stream of n channels.
func MaxIDLen(n int) int { return len(idVersion) + n*(protocol.MaxPositionLen+len(idSep)) }

// Resume reads an event id (Cursor.ID) for a stream of channels: the position to resume each
// from, "" where the id holds none. An id that is not one (malformed, too long, or made for a
// stream of another number of channels) gives none at all.
func Resume(id string, channels []string) []string {
	out := make([]string, len(channels))
	if id == "" || len(id) > MaxIDLen(len(channels)) {
		return out
	}
	parts := strings.Split(id, idSep)
	if parts[0] != idVersion || len(parts) != len(channels)+1 {
		return out
	}
	copy(out, parts[1:])
	return out
}
