package websocket

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/protocol"
)

// sniffConn records every byte a client reads from the server, to look at the frames on the
// wire (RSV1, sizes) after gorilla decoded them.
type sniffConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (s *sniffConn) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	s.mu.Lock()
	s.got.Write(p[:n])
	s.mu.Unlock()
	return n, err
}

// wireFrame is one server frame as it was on the wire.
type wireFrame struct {
	op   byte
	rsv1 bool
	size int // header included
}

// frames parses what was read after the handshake's answer into frames.
func (s *sniffConn) frames(t *testing.T) []wireFrame {
	t.Helper()
	s.mu.Lock()
	b := bytes.Clone(s.got.Bytes())
	s.mu.Unlock()
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no handshake answer read")
	}
	b = b[i+4:]
	var out []wireFrame
	for len(b) > 0 {
		n := frameLen(b)
		if n == 0 || n > len(b) {
			break // a frame still on its way
		}
		out = append(out, wireFrame{op: b[0] & 0x0f, rsv1: b[0]&rsv1Bit != 0, size: n})
		b = b[n:]
	}
	return out
}

// dialDeflate dials the hub as a gorilla client that offers permessage-deflate (or not), and
// records what it reads.
func dialDeflate(t *testing.T, h *Hub, url string, offer bool) (client, *sniffConn, *http.Response) {
	t.Helper()
	before := map[*Conn]bool{}
	for _, c := range h.conns() {
		before[c] = true
	}
	sc := &sniffConn{}
	d := gws.Dialer{EnableCompression: offer, HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			sc.Conn = c
			return sc, err
		}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	h.waitConns(t, len(before)+1)
	for _, c := range h.conns() {
		if !before[c] {
			return client{ws: ws, conn: c}, sc, resp
		}
	}
	t.Fatal("no new connection")
	return client{}, nil, nil
}

// jsonFrame is a channel message frame whose data pads it to about n bytes (compressible).
func jsonFrame(i, n int) []byte {
	return fmt.Appendf(nil, `{"type":"message","channel":"ch","id":"%d","data":{"i":%d,"pad":"%s"}}`, i, i,
		strings.Repeat("abcdefgh", n/8))
}

// TestCompressionPerConnection: with compression on, a client that offers permessage-deflate
// gets large frames compressed (RSV1 on the wire, fewer bytes) and small ones plain; a client
// that does not offer it gets every frame plain; both read the same messages; and each message
// is compressed once for all the compressing subscribers of the channel.
func TestCompressionPerConnection(t *testing.T) {
	h := newTestHub(t, Config{Compression: true, CompressionLevel: 1})
	srv := h.serve(t)
	type sub struct {
		cl    client
		sniff *sniffConn
		offer bool
	}
	var subs []sub
	for i, offer := range []bool{true, false, true, true, false} {
		cl, sc, resp := dialDeflate(t, h, srv.URL, offer)
		ext := resp.Header.Get("Sec-WebSocket-Extensions")
		if offer != strings.Contains(ext, "permessage-deflate") {
			t.Fatalf("client %d (offers: %v) got extensions %q", i, offer, ext)
		}
		if cl.conn.deflate != offer {
			t.Fatalf("client %d (offers: %v): the hub compresses for it: %v", i, offer, cl.conn.deflate)
		}
		if err := h.Join(context.Background(), cl.conn, "ch"); err != nil {
			t.Fatal(err)
		}
		cl.conn.Activate("ch", protocol.Position{}, nil)
		subs = append(subs, sub{cl, sc, offer})
	}
	sizes := []int{20, 4096, 60, 300, 40 << 10}
	for i, n := range sizes {
		if got := h.Deliver("ch", protocol.Position{Lo: uint64(i)}, jsonFrame(i, n), nil); got != len(subs) {
			t.Fatalf("delivered to %d of %d", got, len(subs))
		}
		for _, s := range subs { // one at a time: each frame goes as the lead (through melody and gorilla)
			if got := s.cl.read(t); !bytes.Equal(got, jsonFrame(i, n)) {
				t.Fatalf("message %d: got %.60q…", i, got)
			}
		}
	}
	if c := h.deflate.count.Load(); c != 3 { // the three frames of minDeflate bytes or more, once each
		t.Fatalf("%d compressions for 3 large messages to 3 compressing connections; want 3", c)
	}
	for i, s := range subs {
		fs := s.sniff.frames(t)
		var text []wireFrame
		for _, f := range fs {
			if f.op == 1 {
				text = append(text, f)
			}
		}
		if len(text) != len(sizes) {
			t.Fatalf("client %d: %d text frames on the wire, want %d", i, len(text), len(sizes))
		}
		for j, f := range text {
			large := len(jsonFrame(j, sizes[j])) >= minDeflate
			if want := s.offer && large; f.rsv1 != want {
				t.Fatalf("client %d (offers: %v), frame %d of %d bytes: RSV1 %v, want %v", i, s.offer, j, sizes[j], f.rsv1, want)
			}
			if f.rsv1 && f.size >= len(jsonFrame(j, sizes[j]))/2 {
				t.Fatalf("client %d, frame %d: %d bytes on the wire for %d", i, j, f.size, len(jsonFrame(j, sizes[j])))
			}
		}
	}
}

// TestCompressionOffByDefault: a hub without compression does not negotiate it; the client
// gets plain frames.
func TestCompressionOffByDefault(t *testing.T) {
	h := newTestHub(t, Config{})
	srv := h.serve(t)
	cl, sc, resp := dialDeflate(t, h, srv.URL, true)
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("extensions %q negotiated by a hub without compression", ext)
	}
	frame := jsonFrame(1, 4096)
	cl.conn.Send(frame)
	if got := cl.read(t); !bytes.Equal(got, frame) {
		t.Fatal("wrong message")
	}
	for _, f := range sc.frames(t) {
		if f.rsv1 {
			t.Fatal("RSV1 frame from a hub without compression")
		}
	}
}

// TestCompressionQueuedFramesAndDrain: frames queued behind each other (coalesced into shared
// writes, framed by the hub), compressed and not, large and small, to a compressing and a plain
// client of the same channel, arrive whole and in order, without a latency budget and with one
// on a node held busy (the budget clock hands over the lead); then Drain's disconnect and close.
func TestCompressionQueuedFramesAndDrain(t *testing.T) {
	for _, delay := range []time.Duration{0, 5 * time.Millisecond} {
		t.Run(fmt.Sprint("latency_budget=", delay), func(t *testing.T) { testCompressionQueued(t, delay) })
	}
}

func testCompressionQueued(t *testing.T, delay time.Duration) {
	h := newTestHub(t, Config{Compression: true, CompressionLevel: 6, SendBuffer: 4096, WriteTimeout: 20 * time.Second, LatencyBudget: delay})
	if delay > 0 {
		forceBusy(h)
	}
	srv := h.serve(t)
	z, zs, _ := dialDeflate(t, h, srv.URL, true)
	p, ps, _ := dialDeflate(t, h, srv.URL, false)
	for _, cl := range []client{z, p} {
		if err := h.Join(context.Background(), cl.conn, "ch"); err != nil {
			t.Fatal(err)
		}
		cl.conn.Activate("ch", protocol.Position{}, nil)
	}
	sizes := []int{10, 200, 300, 1000, 8 << 10, 40 << 10, 100}
	// 40 rounds of the 7 sizes: every mix of sizes queued behind each other many times over (700,
	// 100 rounds, took 39 s of the package's 84 s under -race on a shared machine).
	const n = 280
	for i := range n {
		if got := h.Deliver("ch", protocol.Position{Lo: uint64(i)}, jsonFrame(i, sizes[i%len(sizes)]), nil); got != 2 {
			t.Fatalf("delivered to %d of 2", got)
		}
	}
	drained := make(chan struct{})
	go func() { defer close(drained); h.Drain(context.Background(), 10*time.Millisecond) }()
	for _, cl := range []client{z, p} {
		for i := range n {
			if got := cl.read(t); !bytes.Equal(got, jsonFrame(i, sizes[i%len(sizes)])) {
				t.Fatalf("message %d: got %.60q…", i, got)
			}
		}
		var d protocol.DisconnectFrame
		if err := json.Unmarshal(cl.read(t), &d); err != nil || d.Code != protocol.DisconnectShutdown.Code {
			t.Fatalf("after the frames: %+v, %v; want disconnect shutdown", d, err)
		}
		_, _, err := cl.ws.ReadMessage()
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != gws.CloseGoingAway {
			t.Fatalf("then %v; want close %d", err, gws.CloseGoingAway)
		}
	}
	<-drained
	if c := h.deflate.count.Load(); c < 1 || c > n {
		t.Fatalf("%d compressions for %d messages", c, n)
	}
	rsv1 := func(sc *sniffConn) (k int) {
		for _, f := range sc.frames(t) {
			if f.rsv1 {
				k++
			}
		}
		return k
	}
	if k := rsv1(zs); k < n*5/7 { // the sizes of minDeflate bytes or more: 5 of 7
		t.Fatalf("%d compressed frames of %d to the compressing client", k, n)
	}
	if k := rsv1(ps); k != 0 {
		t.Fatalf("%d compressed frames to the plain client", k)
	}
	if w := z.conn.fc.socketWrites(); w >= n {
		t.Fatalf("%d frames took %d socket writes; a backlog should share writes", n, w)
	}
}

// TestCompressionSlowConsumer: a compressing client that reads nothing is disconnected as slow;
// what was queued before arrives, inflated, in order, then the disconnect frame and the close.
func TestCompressionSlowConsumer(t *testing.T) {
	h := newTestHub(t, Config{Compression: true, SendBuffer: 16, WriteTimeout: 20 * time.Second})
	srv := h.serve(t)
	cl, _, _ := dialDeflate(t, h, srv.URL, true)
	rnd := make([]byte, 24<<10)
	payload := func(i int) []byte {
		_, _ = rand.Read(rnd) // hex of random bytes: deflate halves it at best, so the socket fills
		return fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, hex.EncodeToString(rnd))
	}
	var sent [][]byte
	for len(sent) < 2000 {
		f := payload(len(sent))
		if !cl.conn.Send(f) {
			break
		}
		sent = append(sent, f)
	}
	if len(sent) == 2000 {
		t.Fatal("a client that reads nothing was never counted slow")
	}
	if r := cl.conn.Reason(); r != protocol.DisconnectSlowConsumer.Code {
		t.Fatalf("reason %q, want slow_consumer", r)
	}
	for i, want := range sent {
		if got := cl.read(t); !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %.40q…", i, got)
		}
	}
	var d protocol.DisconnectFrame
	if err := json.Unmarshal(cl.read(t), &d); err != nil || d.Code != protocol.DisconnectSlowConsumer.Code {
		t.Fatalf("after %d frames: %+v, %v; want disconnect slow_consumer", len(sent), d, err)
	}
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != gws.CloseTryAgainLater {
		t.Fatalf("then %v; want close %d", err, gws.CloseTryAgainLater)
	}
}

// TestCompressedClientFrameInflatedBeyondLimit: a client frame within max_frame_size on the
// wire that inflates beyond it closes the connection with 1009, unread by the protocol; one
// that stays within it is read.
func TestCompressedClientFrameInflatedBeyondLimit(t *testing.T) {
	h := newTestHub(t, Config{Compression: true, MaxFrameSize: 4096})
	rec := &recHandler{}
	h.SetHandler(rec)
	srv := h.serve(t)
	cl, _, _ := dialDeflate(t, h, srv.URL, true)
	cl.ws.EnableWriteCompression(true)
	ok := fmt.Appendf(nil, `{"type":"ping","id":"%s"}`, strings.Repeat("a", 3000))
	big := fmt.Appendf(nil, `{"type":"ping","id":"%s"}`, strings.Repeat("a", 1<<20)) // some 1 KiB deflated
	for _, f := range [][]byte{ok, big} {
		if err := cl.ws.WriteMessage(gws.TextMessage, f); err != nil {
			t.Fatal(err)
		}
	}
	_ = cl.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := cl.ws.ReadMessage()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != gws.CloseMessageTooBig {
		t.Fatalf("after an inflated frame beyond the limit: %v; want close %d", err, gws.CloseMessageTooBig)
	}
	if n := rec.frames.Load(); n != 1 {
		t.Fatalf("the protocol got %d frames, want the one within the limit", n)
	}
}

// clientFrame is a masked client frame.
func clientFrame(b0 byte, payload []byte) []byte {
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	key := [4]byte{1, 2, 3, 4}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// TestInflateGuard: the guard hands gorilla every frame as it came (a control frame in the middle
// of a held compressed message goes first), whatever the reads' sizes; a compressed message that
// inflates beyond the limit becomes the header of a frame over it, and nothing more is read.
func TestInflateGuard(t *testing.T) {
	d := newDeflater(1)
	small := d.frame(bytes.Repeat([]byte("abcdefgh"), 100)) // 800 bytes inflated
	if !small.z {
		t.Fatal("not compressed")
	}
	half := len(small.b) / 2
	plain := clientFrame(0x81, []byte("plain"))
	whole := clientFrame(0xc1, small.b)
	first := clientFrame(0x41, small.b[:half]) // RSV1, not FIN
	ping := clientFrame(0x89, []byte("p"))
	last := clientFrame(0x80, small.b[half:])
	in := slices.Concat(plain, whole, first, ping, last, plain)
	want := slices.Concat(plain, whole, ping, first, last, plain)
	for _, step := range []int{1, 3, 64, len(in)} {
		g := newInflateGuard(1000)
		src := &chunkReader{b: in, step: step}
		var got []byte
		buf := make([]byte, 7)
		for {
			n, err := g.read(src, buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d: gorilla got %d bytes, want %d", step, len(got), len(want))
		}
	}
	// Beyond the limit: 800 bytes inflated against 500.
	g := newInflateGuard(500)
	src := &chunkReader{b: slices.Concat(plain, whole, plain), step: 5}
	var got []byte
	buf := make([]byte, 64)
	var err error
	for err == nil {
		var n int
		n, err = g.read(src, buf)
		got = append(got, buf[:n]...)
	}
	if !errors.Is(err, errInflatedTooLarge) || !bytes.Equal(got, slices.Concat(plain, appendTooLarge(nil, 500))) {
		t.Fatalf("got %x, %v", got, err)
	}
}

// chunkReader reads b step bytes at a time, then io.EOF.
type chunkReader struct {
	b    []byte
	step int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b[:min(r.step, len(r.b))])
	r.b = r.b[n:]
	return n, nil
}
