package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/protocol"
)

// conn is one WebSocket connection: a reader and a writer goroutine, and the requests waiting
// for their replies on it.
type conn struct {
	c       *Client
	ws      *websocket.Conn
	url     string
	welcome welcome
	started time.Time
	out     chan []byte   // frames for the writer
	done    chan struct{} // closed when the connection is over
	wg      sync.WaitGroup

	closeOnce sync.Once
	mu        sync.Mutex
	err       error            // why it ended
	disc      *DisconnectError // the server's disconnect frame, if any
	pending   map[string]func(*frame)
}

const outQueue = 64

var errQueueFull = errors.New("wsclient: send queue full")

var pingFrame = []byte(`{"type":"ping","id":"keepalive"}`)

func newConn(c *Client, ws *websocket.Conn, url string, w welcome) *conn {
	return &conn{c: c, ws: ws, url: url, welcome: w, started: time.Now(),
		out: make(chan []byte, outQueue), done: make(chan struct{}), pending: map[string]func(*frame){}}
}

func (cn *conn) start() {
	cn.wg.Add(2)
	go cn.read()
	go cn.write()
}

// close ends the connection (once) because of err.
func (cn *conn) close(err error) {
	cn.closeOnce.Do(func() {
		cn.mu.Lock()
		cn.err = err
		cn.pending = nil
		cn.mu.Unlock()
		close(cn.done)
		_ = cn.ws.Close()
	})
}

// shutdown closes the connection politely: a close frame, then the socket.
func (cn *conn) shutdown() {
	if !cn.isDone() {
		_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
			time.Now().Add(min(time.Second, cn.c.opts.WriteTimeout)))
	}
	cn.close(ErrClosed)
}

func (cn *conn) isDone() bool {
	select {
	case <-cn.done:
		return true
	default:
		return false
	}
}

// cause is why the connection ended: the server's disconnect frame when it sent one.
func (cn *conn) cause() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.disc != nil {
		return cn.disc
	}
	return cn.err
}

// expect registers a request id and returns the channel its reply will arrive on.
func (cn *conn) expect(id string) <-chan *frame {
	ch := make(chan *frame, 1)
	cn.expectFn(id, func(f *frame) { ch <- f })
	return ch
}

// expectFn registers fn to run on the reader goroutine with the reply to id.
func (cn *conn) expectFn(id string, fn func(*frame)) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.pending != nil {
		cn.pending[id] = fn
	}
}

func (cn *conn) forget(id string) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	delete(cn.pending, id)
}

// dispatch hands a reply to the request waiting for it; it reports whether there was one.
func (cn *conn) dispatch(f *frame) bool {
	cn.mu.Lock()
	fn := cn.pending[f.ID]
	delete(cn.pending, f.ID)
	cn.mu.Unlock()
	if fn == nil {
		return false
	}
	fn(f)
	return true
}

// enqueue hands a frame to the writer; false when the connection or the client ended first,
// or ctx did.
func (cn *conn) enqueue(ctx context.Context, b []byte) bool {
	select {
	case cn.out <- b:
		return true
	case <-cn.done:
	case <-ctx.Done():
	case <-cn.c.ctx.Done():
	}
	return false
}

// tryEnqueue is enqueue for the reader, which must not wait for the writer: when the queue is
// full the connection is dropped (and everything is resent on the next one).
func (cn *conn) tryEnqueue(b []byte) bool {
	select {
	case cn.out <- b:
		return true
	default:
		cn.close(errQueueFull)
		return false
	}
}

func (cn *conn) write() {
	defer cn.wg.Done()
	var tick <-chan time.Time
	if p := cn.c.opts.PingInterval; p > 0 {
		t := time.NewTicker(p)
		defer t.Stop()
		tick = t.C
	}
	for {
		var b []byte
		select {
		case b = <-cn.out:
		case <-tick:
			b = pingFrame
		case <-cn.done:
			return
		}
		_ = cn.ws.SetWriteDeadline(time.Now().Add(cn.c.opts.WriteTimeout))
		if err := cn.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			cn.close(err)
			return
		}
	}
}

func (cn *conn) read() {
	defer cn.wg.Done()
	c := cn.c
	var timeout time.Duration
	if c.opts.PingInterval > 0 {
		timeout = c.opts.PingInterval + c.opts.AckTimeout
	}
	for {
		if timeout > 0 {
			_ = cn.ws.SetReadDeadline(time.Now().Add(timeout))
		}
		_, b, err := cn.ws.ReadMessage()
		if err != nil {
			cn.close(err)
			return
		}
		if c.ctx.Err() != nil {
			cn.close(ErrClosed)
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.log.Warn("frame is not a JSON object", "frame", truncate(b), "error", err)
			continue
		}
		cn.handle(&f)
	}
}

func (cn *conn) handle(f *frame) {
	c := cn.c
	switch f.Type {
	case protocol.TypeMessage:
		if f.To != "" || f.Channel == "" {
			c.deliverDirect(f.message())
			return
		}
		c.mu.Lock()
		s := c.subs[f.Channel]
		c.mu.Unlock()
		if s == nil {
			c.log.Debug("message for a channel not subscribed", "channel", f.Channel)
			return
		}
		m := f.message()
		if s.accept(&m) {
			s.deliver(m, c.ctx.Done())
		}
	case protocol.TypeJoin, protocol.TypeLeave:
		c.mu.Lock()
		s := c.subs[f.Channel]
		c.mu.Unlock()
		if s == nil || (f.Member == nil && len(f.Members) == 0) {
			c.log.Debug("join or leave for a channel not subscribed, or of nobody", "channel", f.Channel)
			return
		}
		m := f.joinLeave()
		if s.accept(&m) {
			s.deliver(m, c.ctx.Done())
		}
	case protocol.TypeDisconnect:
		c.log.Info("disconnect", "code", f.Code, "reason", f.Reason, "reconnect", f.Reconnect)
		cn.mu.Lock()
		cn.disc = &DisconnectError{Code: f.Code, Reason: f.Reason, Reconnect: f.Reconnect}
		cn.mu.Unlock()
	case protocol.TypeWelcome:
	default:
		if f.ID != "" && cn.dispatch(f) {
			return
		}
		if f.Type == protocol.TypeUnsubscribed && f.ID == "" && f.Channel != "" {
			c.serverUnsubscribed(f.Channel, f.Reason)
			return
		}
		if f.Type == protocol.TypeError {
			c.log.Warn("error from the server", "id", f.ID, "code", f.Code, "message", f.Text)
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
