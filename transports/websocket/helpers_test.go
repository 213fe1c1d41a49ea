package websocket

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/internal/metrics"
)

// nopHandler is a protocol that answers nothing.
type nopHandler struct{}

func (nopHandler) Open(*Conn)          {}
func (nopHandler) Frame(*Conn, []byte) {}
func (nopHandler) Binary(*Conn)        {}
func (nopHandler) Close(*Conn)         {}

// nopInterest opens broker subscriptions that never end by themselves.
type nopInterest struct{}

func (nopInterest) Open(string, func()) (func(), error) { return func() {}, nil }

// forceBusy makes h's budget clock count the node as busy for good, so that frames are held
// for the budget whatever the load (before h.Start, or at any time: both are atomics).
func forceBusy(h *Hub) {
	h.budget.busy.Store(true)
	h.budget.force(true)
}

func newTestHub(tb testing.TB, cfg Config) *Hub {
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = 64 << 10
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = time.Minute
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.SendBuffer == 0 {
		cfg.SendBuffer = 256
	}
	h := NewHub(cfg, nopInterest{}, metrics.New(), slog.New(slog.DiscardHandler))
	h.SetHandler(nopHandler{})
	h.Start()
	return h
}

// detachedConn is a connection without a socket: Send drops what it is given.
func (h *Hub) detachedConn(id string) *Conn {
	return newConn(h, Identity{Session: id})
}

// serve serves the hub on a loopback HTTP server.
func (h *Hub) serve(tb testing.TB) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.Accept(w, r, Identity{Session: "s" + strconv.FormatInt(n.Add(1), 10)})
	}))
	tb.Cleanup(func() { h.Close(); srv.Close() })
	return srv
}

func httptestServer(tb testing.TB, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

// waitConns waits until the hub holds n connections.
func (h *Hub) waitConns(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.Len() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("hub holds %d of %d connections", h.Len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// countingClient is a WebSocket client that reads the raw socket and counts the server's text
// frames (server frames are not masked), without decoding them.
type countingClient struct {
	conn   net.Conn
	frames atomic.Int64
	until  chan int64 // read until this many frames were counted, then wait for the next value
	done   chan struct{}
}

func dialCounting(tb testing.TB, srv *httptest.Server) *countingClient {
	return dialCountingWith(tb, srv, gws.DefaultDialer)
}

// dialCountingWith is dialCounting with a dialer of its own (one that offers compression: the
// client counts compressed frames without inflating them).
func dialCountingWith(tb testing.TB, srv *httptest.Server, d *gws.Dialer) *countingClient {
	tb.Helper()
	c, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	cc := &countingClient{conn: c.UnderlyingConn(), until: make(chan int64, 1), done: make(chan struct{})}
	go cc.read()
	return cc
}

func (c *countingClient) read() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	var skip int64 // payload bytes of the current frame still to skip
	var head []byte
	var until int64
	for {
		for c.frames.Load() >= until {
			u, ok := <-c.until
			if !ok {
				return
			}
			until = u
		}
		n, err := c.conn.Read(buf)
		if err != nil {
			return
		}
		p := buf[:n]
		for len(p) > 0 {
			if skip > 0 {
				k := min(skip, int64(len(p)))
				skip -= k
				p = p[k:]
				continue
			}
			head = append(head, p[0])
			p = p[1:]
			payload, ok := parseHeader(head)
			if !ok {
				continue
			}
			if head[0]&0x0f == 1 {
				c.frames.Add(1)
			}
			head = head[:0]
			skip = payload
		}
	}
}

// parseHeader parses an unmasked frame header; ok is false while it is incomplete.
func parseHeader(h []byte) (payload int64, ok bool) {
	if len(h) < 2 {
		return 0, false
	}
	switch l := h[1] & 0x7f; l {
	case 126:
		if len(h) < 4 {
			return 0, false
		}
		return int64(h[2])<<8 | int64(h[3]), true
	case 127:
		if len(h) < 10 {
			return 0, false
		}
		var v int64
		for _, b := range h[2:10] {
			v = v<<8 | int64(b)
		}
		return v, true
	default:
		return int64(l), true
	}
}

// readUntil lets the client read until it has counted n frames.
func (c *countingClient) readUntil(n int64) { c.until <- n }

func (c *countingClient) close() {
	_ = c.conn.Close()
	close(c.until)
	<-c.done
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeSyscalls is this process's write(2)-family calls so far (syscw of /proc/self/io).
func writeSyscalls(tb testing.TB) int64 { return procIO(tb, "syscw:") }

// writtenBytes is the bytes this process's write(2)-family calls wrote so far (wchar).
func writtenBytes(tb testing.TB) int64 { return procIO(tb, "wchar:") }

// procIO is the field key of /proc/self/io.
func procIO(tb testing.TB, key string) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		tb.Skip("no /proc/self/io:", err)
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte(key)); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	tb.Skip("no " + key + " in /proc/self/io")
	return 0
}
