package websocket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
)

// recConn records what reaches the socket.
type recConn struct {
	net.Conn  // nil: only the methods below are used
	mu        sync.Mutex
	writes    [][]byte
	deadlines []time.Time
}

func (r *recConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deadlines = append(r.deadlines, t)
	return nil
}

func (r *recConn) joined() []byte { return bytes.Join(r.writes, nil) }

// frame is an unmasked text frame with a payload of n bytes of b.
func frame(n int, b byte) []byte {
	var h []byte
	switch {
	case n > 65535:
		h = []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	case n > 125:
		h = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		h = []byte{0x81, byte(n)}
	}
	return append(h, bytes.Repeat([]byte{b}, n)...)
}

func TestFrameLen(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 300, 65535, 65536, 100_000} {
		if got := frameLen(frame(n, 'x')); got != len(frame(n, 'x')) {
			t.Errorf("payload %d: frameLen %d, want %d", n, got, len(frame(n, 'x')))
		}
	}
	for _, p := range [][]byte{nil, {0x81}, {0x81, 126, 1}, {0x81, 127, 0, 0}} {
		if got := frameLen(p); got != 0 {
			t.Errorf("incomplete header %v: frameLen %d, want 0", p, got)
		}
	}
}

func TestFlushConnPassesThroughUntilOpen(t *testing.T) {
	rec := &recConn{}
	f := &flushConn{Conn: rec}
	dl := time.Now().Add(time.Minute)
	_ = f.SetWriteDeadline(dl)
	_, _ = f.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"))
	if len(rec.writes) != 1 || len(rec.deadlines) != 1 || !rec.deadlines[0].Equal(dl) {
		t.Fatalf("handshake: %d writes, deadlines %v; want it written at once with its deadline", len(rec.writes), rec.deadlines)
	}
}

func TestFlushConnCoalescesWhileMoreIsQueued(t *testing.T) {
	rec := &recConn{}
	var more atomic.Bool
	f := &flushConn{Conn: rec, more: more.Load}
	var want []byte
	write := func(p []byte) {
		t.Helper()
		if n, err := f.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want = append(want, p...)
	}

	// Nothing queued behind: each frame goes out at once.
	write(frame(10, 'a'))
	write(frame(20, 'b'))
	if len(rec.writes) != 2 {
		t.Fatalf("%d socket writes for 2 lone frames, want 2", len(rec.writes))
	}

	// Frames queued behind: held until the last one, then one write.
	more.Store(true)
	write(frame(30, 'c'))
	write(frame(300, 'd'))
	if len(rec.writes) != 2 {
		t.Fatalf("frames were written while more were queued: %d writes", len(rec.writes))
	}
	more.Store(false)
	write(frame(5, 'e'))
	if len(rec.writes) != 3 {
		t.Fatalf("%d socket writes, want 3", len(rec.writes))
	}

	// A frame gorilla hands over in two parts is not flushed in the middle.
	big := frame(1000, 'f')
	_ = f.SetWriteDeadline(time.Now().Add(time.Hour))
	write(big[:200])
	if len(rec.writes) != 3 {
		t.Fatal("half a frame was written")
	}
	write(big[200:])
	if len(rec.writes) != 4 {
		t.Fatalf("%d socket writes, want 4", len(rec.writes))
	}

	// A frame that does not fit with what is held: everything still goes out in order.
	more.Store(true)
	write(frame(100, 'g'))
	huge := frame(maxCoalesce, 'h')
	more.Store(false)
	write(huge)

	if !bytes.Equal(rec.joined(), want) {
		t.Fatal("the socket did not get the frames' bytes in order")
	}
	if f.socketWrites() != int64(4+1) { // the last flush is one call (writev on a TCP socket)
		t.Fatalf("socketWrites %d, want 5", f.socketWrites())
	}
	if f.buf != nil {
		t.Fatal("the buffer is held after a flush")
	}
	// Each write carries the deadline gorilla set last.
	if len(rec.deadlines) != int(f.socketWrites()) {
		t.Fatalf("%d deadlines set for %d writes", len(rec.deadlines), f.socketWrites())
	}
}

// TestFlushConnOwnFrames: frames the hub writes itself go into the same buffer as gorilla's, in
// order, and out with flushAll; a large one goes out at once with what is held.
func TestFlushConnOwnFrames(t *testing.T) {
	rec := &recConn{}
	var more atomic.Bool
	more.Store(true)
	f := &flushConn{Conn: rec, more: more.Load, timeout: time.Minute}
	var want []byte
	gorilla := frame(300, 'a')
	if _, err := f.Write(gorilla[:100]); err != nil {
		t.Fatal(err)
	}
	if err := f.writeFrame([]byte("x"), false); err == nil {
		t.Fatal("writeFrame inside one of gorilla's frames succeeded")
	}
	if _, err := f.Write(gorilla[100:]); err != nil {
		t.Fatal(err)
	}
	want = append(want, gorilla...)
	for i, n := range []int{10, 200, 70_000, 5} {
		p := bytes.Repeat([]byte{byte('b' + i)}, n)
		if err := f.writeFrame(p, false); err != nil {
			t.Fatal(err)
		}
		want = append(want, frame(n, byte('b'+i))...)
	}
	if f.socketWrites() != 1 { // the 70,000-byte frame went out with the three before it (writev)
		t.Fatalf("%d socket writes before flushAll, want 1", f.socketWrites())
	}
	if err := f.flushAll(); err != nil {
		t.Fatal(err)
	}
	if err := f.flushAll(); err != nil || f.socketWrites() != 2 {
		t.Fatalf("flushAll: %d writes (%v), want 2", f.socketWrites(), err)
	}
	if !bytes.Equal(rec.joined(), want) {
		t.Fatal("the socket did not get the frames' bytes in order")
	}
	for _, d := range rec.deadlines { // the write timeout from each write
		if until := time.Until(d); until < 50*time.Second || until > time.Minute {
			t.Fatalf("deadline in %v, want about the timeout (1m)", until)
		}
	}
}

// client is a gorilla client of a test hub, with the hub's side of its connection.
type client struct {
	ws   *gws.Conn
	conn *Conn
}

func dialHub(t *testing.T, h *Hub, url string) client {
	t.Helper()
	before := map[*Conn]bool{}
	for _, c := range h.conns() {
		before[c] = true
	}
	ws, _, err := gws.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	h.waitConns(t, len(before)+1)
	for _, c := range h.conns() {
		if !before[c] {
			return client{ws: ws, conn: c}
		}
	}
	t.Fatal("no new connection")
	return client{}
}

func (cl client) read(t *testing.T) []byte {
	t.Helper()
	_ = cl.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := cl.ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQueuedFramesArriveWholeInOrderAndCoalesced queues frames of every size to a client that
// does not read yet, so that they pile up (socket buffers, then the connection's queue), then
// reads them: all arrive, whole and in order, the disconnect frame and the close last, and the
// connection wrote them in fewer socket writes than frames.
func TestQueuedFramesArriveWholeInOrderAndCoalesced(t *testing.T) {
	h := newTestHub(t, Config{SendBuffer: 4096, WriteTimeout: 20 * time.Second})
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	sizes := []int{10, 200, 300, 1000, 8 << 10, 40 << 10}
	const n = 1500 // ~12 MB: more than loopback socket buffers hold
	for i := range n {
		p := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", sizes[i%len(sizes)]))
		if !cl.conn.Send([]byte(p)) {
			t.Fatalf("Send %d refused", i)
		}
	}
	cl.conn.Disconnect(protocol.DisconnectShutdown)
	for i := range n {
		var m struct {
			I   int    `json:"i"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal(cl.read(t), &m); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if m.I != i || len(m.Pad) != sizes[i%len(sizes)] {
			t.Fatalf("frame %d: got i=%d with %d bytes of padding", i, m.I, len(m.Pad))
		}
	}
	var d protocol.DisconnectFrame
	if err := json.Unmarshal(cl.read(t), &d); err != nil || d.Type != "disconnect" || d.Code != protocol.DisconnectShutdown.Code {
		t.Fatalf("after the frames: %+v, %v; want disconnect shutdown", d, err)
	}
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != gws.CloseGoingAway {
		t.Fatalf("then %v; want close %d", err, gws.CloseGoingAway)
	}
	if w := cl.conn.fc.socketWrites(); w >= n {
		t.Fatalf("%d frames took %d socket writes; a backlog should share writes", n+1, w)
	} else {
		t.Logf("%d frames in %d socket writes", n+1, w)
	}
}

// TestSlowConsumerGetsItsFramesThenDisconnect: a client that does not read is disconnected as
// slow once its queue stays full; what was queued before still arrives, in order, then the
// disconnect frame and the close.
func TestSlowConsumerGetsItsFramesThenDisconnect(t *testing.T) {
	h := newTestHub(t, Config{SendBuffer: 16, WriteTimeout: 20 * time.Second})
	var logs bytes.Buffer // written by the Send below, on this goroutine
	h.rlog = ratelog.New(slog.New(slog.NewTextHandler(&logs, nil)), time.Second)
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	payload := strings.Repeat("y", 64<<10)
	sent := 0
	for ; sent < 1000; sent++ {
		if !cl.conn.Send([]byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, sent, payload))) {
			break
		}
	}
	if sent == 1000 {
		t.Fatal("a client that reads nothing was never counted slow")
	}
	if r := cl.conn.Reason(); r != protocol.DisconnectSlowConsumer.Code {
		t.Fatalf("reason %q, want slow_consumer", r)
	}
	if cl.conn.Send([]byte(`{"late":true}`)) {
		t.Fatal("Send accepted a frame after the disconnect")
	}
	if out := logs.String(); !strings.Contains(out, "level=INFO msg=\"slow consumer disconnected\" session_id=s1") {
		t.Fatalf("the slow consumer was not logged at info: %q", out)
	}
	for i := range sent {
		var m struct {
			I int `json:"i"`
		}
		if err := json.Unmarshal(cl.read(t), &m); err != nil || m.I != i {
			t.Fatalf("frame %d: i=%d, %v", i, m.I, err)
		}
	}
	var d protocol.DisconnectFrame
	if err := json.Unmarshal(cl.read(t), &d); err != nil || d.Code != protocol.DisconnectSlowConsumer.Code || !d.Reconnect {
		t.Fatalf("after %d frames: %+v, %v; want disconnect slow_consumer", sent, d, err)
	}
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != gws.CloseTryAgainLater {
		t.Fatalf("then %v; want close %d", err, gws.CloseTryAgainLater)
	}
}

// TestAcceptReturnsWhileTheConnectionLives: the HTTP handler returns once the connection is
// open (so net/http can free the request's buffers) and the connection keeps working.
func TestAcceptReturnsWhileTheConnectionLives(t *testing.T) {
	h := newTestHub(t, Config{})
	var returned atomic.Int64
	var acceptErr atomic.Value
	srv := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.Accept(w, r, Identity{Session: r.URL.Query().Get("s")}); err != nil {
			acceptErr.Store(err)
			if ue := (*UpgradeError)(nil); errors.As(err, &ue) { // nothing was written: answer it
				w.WriteHeader(ue.Status)
			}
		}
		returned.Add(1)
	}))
	t.Cleanup(h.Close)
	ws, _, err := gws.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/?s=a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	deadline := time.Now().Add(10 * time.Second)
	for returned.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Accept did not return while the connection is open")
		}
		time.Sleep(time.Millisecond)
	}
	c, ok := h.Session("a")
	if !ok {
		t.Fatal("the connection is not in the hub")
	}
	if err := h.Join(context.Background(), c, "news"); err != nil {
		t.Fatal(err)
	}
	c.Activate("news", protocol.Position{}, nil)
	if n := h.Deliver("news", protocol.Position{Lo: 1}, []byte(`{"type":"message"}`), nil); n != 1 {
		t.Fatalf("delivered to %d", n)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := ws.ReadMessage(); err != nil || string(b) != `{"type":"message"}` {
		t.Fatalf("read %q, %v", b, err)
	}
	if v := acceptErr.Load(); v != nil {
		t.Fatalf("Accept: %v", v)
	}

	// A request that is not an upgrade gets gorilla's refusal from Accept, with its status.
	resp, err := http.Get(srv.URL + "/?s=b")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: status %d, want 400", resp.StatusCode)
	}
	for acceptErr.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Accept of a plain GET returned no error")
		}
		time.Sleep(time.Millisecond)
	}
	if ue := (*UpgradeError)(nil); !errors.As(acceptErr.Load().(error), &ue) || ue.Status != http.StatusBadRequest {
		t.Fatalf("Accept of a plain GET: %v, want an *UpgradeError with status 400", acceptErr.Load())
	}
}

// TestQueueMemoryIsReleased: once a connection caught up, its overflow queue holds no memory.
func TestQueueMemoryIsReleased(t *testing.T) {
	h := newTestHub(t, Config{SendBuffer: 1024, WriteTimeout: 20 * time.Second})
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	for i := range 500 {
		cl.conn.Send([]byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("z", 32<<10))))
	}
	for range 500 {
		cl.read(t)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !cl.conn.idle() {
		if time.Now().After(deadline) {
			t.Fatal("the queue never emptied")
		}
		time.Sleep(time.Millisecond)
	}
	cl.conn.qmu.Lock()
	defer cl.conn.qmu.Unlock()
	if cl.conn.pending.buf != nil || cl.conn.lead {
		t.Fatalf("after catching up: pending holds %d slots, lead %v", len(cl.conn.pending.buf), cl.conn.lead)
	}
	cl.conn.fc.mu.Lock()
	defer cl.conn.fc.mu.Unlock()
	if cl.conn.fc.buf != nil {
		t.Fatal("after catching up: the socket's buffer is held")
	}
}

func TestRing(t *testing.T) {
	var r ring
	next, want := 0, 0
	for round := range 50 {
		for range round % 37 {
			r.push(qframe{b: []byte{byte(next)}})
			next++
		}
		for range round % 23 {
			if r.len() == 0 {
				break
			}
			if b := r.pop().b; int(b[0]) != want%256 {
				t.Fatalf("popped %d, want %d", b[0], want%256)
			}
			want++
		}
	}
	for r.len() > 0 {
		if b := r.pop().b; int(b[0]) != want%256 {
			t.Fatalf("popped %d, want %d", b[0], want%256)
		}
		want++
	}
	if want != next || r.buf != nil {
		t.Fatalf("popped %d of %d; buffer kept: %v", want, next, r.buf != nil)
	}
}

// TestEntryMembers: the channel's subscriber list stays exact through joins, re-joins and leaves
// in any order, below and above the size where it keeps an index.
func TestEntryMembers(t *testing.T) {
	h := newTestHub(t, Config{})
	var e entry
	conns := make([]*Conn, 40)
	want := map[*Conn]*sub{}
	for i := range conns {
		conns[i] = h.detachedConn(fmt.Sprint(i))
	}
	check := func() {
		t.Helper()
		if len(e.members) != len(want) {
			t.Fatalf("%d members, want %d", len(e.members), len(want))
		}
		for i, m := range e.members {
			if want[m.c] != m.s {
				t.Fatalf("member %d has the wrong subscription", i)
			}
			if j := e.find(m.c); j != i {
				t.Fatalf("find says %d for member %d", j, i)
			}
		}
	}
	for i, c := range conns {
		s := &sub{}
		e.add(c, s)
		want[c] = s
		if i%3 == 0 { // joined again: the new subscription replaces the old
			s2 := &sub{}
			e.add(c, s2)
			want[c] = s2
		}
		check()
	}
	for i := range conns {
		c := conns[(i*7)%len(conns)]
		if !e.remove(c) {
			t.Fatalf("remove %d: not a member", i)
		}
		delete(want, c)
		if e.remove(c) {
			t.Fatal("removed twice")
		}
		check()
	}
}

// TestLatencyBudgetCoalescesWhenBusy: on a busy node, a connection's first frame goes out at
// once, and frames queued less than a budget after a write wait for the budget and go out
// together, in one socket write; a disconnect queued behind them still comes after them.
func TestLatencyBudgetCoalescesWhenBusy(t *testing.T) {
	h := newTestHub(t, Config{LatencyBudget: 2 * time.Second}) // long: the three Sends below must come within it, even on a loaded machine
	forceBusy(h)
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	w0 := cl.conn.fc.socketWrites()
	cl.conn.Send([]byte(`{"n":0}`))
	if b := cl.read(t); string(b) != `{"n":0}` {
		t.Fatalf("first frame: %s", b)
	}
	if w := cl.conn.fc.socketWrites() - w0; w != 1 {
		t.Fatalf("first frame took %d socket writes", w)
	}
	// melody reports the first frame written (the connection idle again) only after the client
	// may have read it: frames sent before that would queue behind it rather than wait the budget.
	deadline := time.Now().Add(10 * time.Second)
	for !cl.conn.idle() {
		if time.Now().After(deadline) {
			t.Fatal("the first frame is never reported written")
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i <= 3; i++ { // well within the budget after the first write
		cl.conn.Send([]byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	cl.conn.Disconnect(protocol.DisconnectShutdown)
	for i := 1; i <= 3; i++ {
		if b := cl.read(t); string(b) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("frame %d: %s", i, b)
		}
	}
	if b := cl.read(t); !strings.Contains(string(b), `"disconnect"`) {
		t.Fatalf("after the frames: %s, want the disconnect", b)
	}
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != gws.CloseGoingAway {
		t.Fatalf("then %v; want close %d", err, gws.CloseGoingAway)
	}
	// The first frame, then the three and the disconnect together, then the close frame.
	if w := cl.conn.fc.socketWrites() - w0; w != 3 {
		t.Fatalf("%d socket writes, want 3", w)
	}
}

// TestLatencyBudgetIdleWritesAtOnce: with a latency budget, a node that is not busy writes each
// frame at once, one socket write per frame, even frames that come right after a write: none
// waits the budget (a minute here, far beyond the test's deadlines).
func TestLatencyBudgetIdleWritesAtOnce(t *testing.T) {
	h := newTestHub(t, Config{LatencyBudget: time.Minute})
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	w0 := cl.conn.fc.socketWrites()
	for i := range 5 {
		want := fmt.Sprintf(`{"n":%d}`, i)
		cl.conn.Send([]byte(want))
		if b := cl.read(t); string(b) != want { // read's deadline is seconds: a held frame fails it
			t.Fatalf("frame %d: %s", i, b)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !cl.conn.idle() { // written and reported: the next Send finds no lead
			if time.Now().After(deadline) {
				t.Fatal("the frame is never reported written")
			}
			time.Sleep(time.Millisecond)
		}
	}
	if w := cl.conn.fc.socketWrites() - w0; w != 5 {
		t.Fatalf("%d socket writes for 5 frames sent one at a time, want 5", w)
	}
	if n := h.budget.leads.Load(); n != 0 {
		t.Fatalf("%d leads in flight once everything was written, want 0", n)
	}
}

// TestBusyState: the writers are behind at a tick when more than busyLeads leads were in flight
// at it and at the tick before; the node becomes busy once they were behind on half a window's
// ticks or more, stays busy while it delivers at least half the frames it delivered then (the
// backlog goes away while frames are held), and becomes idle below that.
func TestBusyState(t *testing.T) {
	var s busyState
	window := func(leads []int64, frames int64) bool {
		for i := range busyWindow {
			if n := s.sample(leads[i%len(leads)]); n != i+1 {
				t.Fatalf("sample %d of the window says %d", i+1, n)
			}
		}
		return s.observe(frames)
	}
	const over = busyLeads + 1
	steps := []struct {
		name   string
		leads  []int64 // at each tick, repeated over the window
		frames int64
		want   bool
	}{
		{"frames written as they come", []int64{0}, 100000, false},
		{"a burst drained within a tick, every other tick", []int64{1000, 0}, 100000, false},
		{"behind on 7 of 16 ticks (8 over, the first not behind)", []int64{over, over, over, over, over, over, over, over, 0, 0, 0, 0, 0, 0, 0, 0}, 100000, false},
		{"behind on 8 of 16 (9 ticks over, the first not behind): busy at 40,000 frames a window", []int64{0, over, over, over, over, over, over, over, over, over, 0, 0, 0, 0, 0, 0}, 40000, true},
		{"no backlog (frames held), the load is still there", []int64{0}, 30000, true},
		{"half the load that made it busy", []int64{0}, 20000, true},
		{"below half: idle, frames written at once again", []int64{0}, 19999, false},
		{"behind with no deliveries (replies, replays): busy...", []int64{over}, 0, true},
		{"...until a window with no frames", []int64{0}, 0, false},
		{"behind again", []int64{over}, 500, true},
		{"the load went away while still behind (a drain): idle", []int64{over}, 10, false},
	}
	for i, st := range steps {
		if got := window(st.leads, st.frames); got != st.want {
			t.Fatalf("step %d (%s): busy %v, want %v", i, st.name, got, st.want)
		}
	}
}

// recHandler records the frames handed to the protocol.
type recHandler struct {
	nopHandler
	frames atomic.Int64
}

func (r *recHandler) Frame(*Conn, []byte) { r.frames.Add(1) }

// TestInvalidUTF8ClosesWith1007: a text frame that is not UTF-8 (bytes 0xff 0xfe) fails the
// connection with close code 1007 (RFC 6455) and never reaches the protocol, while a valid
// frame before it does, and a valid frame after it does not.
func TestInvalidUTF8ClosesWith1007(t *testing.T) {
	h := newTestHub(t, Config{})
	rec := &recHandler{}
	h.SetHandler(rec)
	srv := h.serve(t)
	cl := dialHub(t, h, srv.URL)
	if err := cl.ws.WriteMessage(gws.TextMessage, []byte(`{"type":"ping","id":"é"}`)); err != nil {
		t.Fatal(err)
	}
	for _, frame := range [][]byte{{0xff, 0xfe}, []byte(`{"type":"ping","id":"after"}`)} {
		if err := cl.ws.WriteMessage(gws.TextMessage, frame); err != nil {
			t.Fatal(err)
		}
	}
	_ = cl.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != closeInvalidData || ce.Text != reasonInvalidUTF8 {
		t.Fatalf("after invalid UTF-8: %v; want close %d %q", err, closeInvalidData, reasonInvalidUTF8)
	}
	// Once the hub let the connection go, the server read everything up to the client's close
	// (gorilla answers the server's close), the frame after the invalid one included.
	deadline := time.Now().Add(10 * time.Second)
	for h.Len() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection did not end")
		}
		time.Sleep(time.Millisecond)
	}
	if n := rec.frames.Load(); n != 1 {
		t.Fatalf("the protocol got %d frames, want only the one before the invalid one", n)
	}
	if r := cl.conn.Reason(); r != reasonInvalidUTF8 {
		t.Fatalf("reason %q", r)
	}
}

// TestHubStartsNothingUntilStart: NewHub starts no budget clock; Start does, once; Close
// stops it, is safe twice, and a Start after it starts nothing. A hub closed without a Start
// closes too.
func TestHubStartsNothingUntilStart(t *testing.T) {
	running := func(h *Hub) bool {
		h.budget.runMu.Lock()
		defer h.budget.runMu.Unlock()
		return h.budget.running
	}
	h := NewHub(Config{LatencyBudget: time.Millisecond}, nopInterest{}, metrics.New(), slog.New(slog.DiscardHandler))
	if running(h) {
		t.Fatal("NewHub started the budget clock")
	}
	h.Start()
	h.Start()
	if !running(h) {
		t.Fatal("Start did not start the budget clock")
	}
	h.Close()
	h.Close()
	select {
	case <-h.budget.done:
	default:
		t.Fatal("Close left the budget clock running")
	}

	never := NewHub(Config{LatencyBudget: time.Millisecond}, nopInterest{}, metrics.New(), slog.New(slog.DiscardHandler))
	never.Close()
	never.Start()
	if running(never) {
		t.Fatal("Start after Close started the budget clock")
	}
}

// TestWriteBusyMetric: gateway_write_busy follows the budget clock's decision: 1 once the node
// counts as busy (here forced, without a load), 0 again once it does not.
func TestWriteBusyMetric(t *testing.T) {
	h := newTestHub(t, Config{LatencyBudget: 16 * time.Millisecond}) // a window every 16 ms
	gauge := func() float64 {
		families, err := h.metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "gateway_write_busy" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no gateway_write_busy")
		return 0
	}
	waitGauge := func(want float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for gauge() != want {
			if time.Now().After(deadline) {
				t.Fatalf("gateway_write_busy is %v, want %v", gauge(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitGauge(0)
	h.budget.force(true)
	waitGauge(1)
	h.budget.force(false) // no load: idle at the next window
	waitGauge(0)
}

// TestServerBuffersReleasedWhileOpen: once a connection is open, nothing of ours holds the HTTP
// server's ResponseWriter, which holds the server connection's 4 KiB read and write buffers
// (the hijacker lives as long as the connection and used to keep it: 8 KiB per connection).
func TestServerBuffersReleasedWhileOpen(t *testing.T) {
	h := newTestHub(t, Config{})
	var released atomic.Bool
	srv := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackedWriter{w} // holding it holds w (a cleanup on w itself would never run: w and its connection point at each other)
		runtime.AddCleanup(tw, func(*atomic.Bool) { released.Store(true) }, &released)
		_ = h.Accept(tw, r, Identity{Session: "a"})
	}))
	t.Cleanup(h.Close)
	ws, _, err := gws.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !released.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the server's ResponseWriter is still held while the connection is open")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := h.Session("a"); !ok {
		t.Fatal("the connection is not in the hub")
	}
}

type trackedWriter struct{ http.ResponseWriter }

func (w *trackedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestRingGivesBufferBack: a ring that empties, or is reset, holds no memory and leaves its first
// buffer cleared (the buffer goes back to ringPool, which must keep no frame reachable).
func TestRingGivesBufferBack(t *testing.T) {
	frame := func(i int) qframe { return qframe{b: []byte{byte(i)}} }
	for _, empty := range []func(*ring){
		func(r *ring) {
			for r.len() > 0 {
				r.pop()
			}
		},
		(*ring).reset,
	} {
		var r ring
		for i := range 3 {
			r.push(frame(i))
		}
		first := r.buf
		if len(first) != ringMin {
			t.Fatalf("first buffer of %d frames, want %d", len(first), ringMin)
		}
		empty(&r)
		if r.len() != 0 || r.buf != nil {
			t.Fatalf("ring holds %d frames, a buffer of %d, want none", r.len(), len(r.buf))
		}
		for i, f := range first {
			if f.b != nil {
				t.Fatalf("frame %d (%q) still in the buffer given back", i, f.b)
			}
		}
	}
}

// TestBudgetClockSleepsWhenIdle: a clock with nothing to do (not busy, nobody waiting, the
// writers not behind) stops ticking at the end of a window; more than busyLeads leads in flight
// wake it, it ticks while they last, and it sleeps again once they are written.
func TestBudgetClockSleepsWhenIdle(t *testing.T) {
	d := newBudgetClock(16 * time.Millisecond) // a tick every millisecond
	d.start()
	defer d.stop()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		poll.Until(t, 10*time.Second, func() error {
			if !cond() {
				return errors.New(what)
			}
			return nil
		})
	}
	waitFor("an idle clock never sleeps", d.parked.Load)
	for range busyLeads + 1 {
		d.addLead()
	}
	if d.parked.Load() {
		t.Fatal("more than busyLeads leads in flight did not wake the clock")
	}
	from := d.now()
	waitFor("the woken clock does not tick", func() bool { return d.now() > from+busyWindow })
	if d.parked.Load() {
		t.Fatal("the clock slept while the writers were behind")
	}
	d.leads.Add(-(busyLeads + 1))
	waitFor("the clock never sleeps again", d.parked.Load)
}

// discardConn takes every write and records none (the socket of an allocation count).
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// TestWriteFrameAllocations: a frame the hub writes itself (every channel delivery to a native
// connection) allocates nothing, held and written out: its header is built in the connection,
// not in an array of its own that escapes to the heap.
func TestWriteFrameAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops sync.Pool entries at random: the coalescing buffer is allocated again")
	}
	f := &flushConn{Conn: discardConn{}, timeout: time.Minute}
	payload := bytes.Repeat([]byte("x"), 200)
	if err := f.writeFrame(payload, false); err != nil { // the coalescing pool's first buffer
		t.Fatal(err)
	}
	if err := f.flushAll(); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := f.writeFrame(payload, false); err != nil {
			t.Fatal(err)
		}
		if err := f.flushAll(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("writeFrame and flushAll: %v allocations per frame, want 0", allocs)
	}
}
