package websocket

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// fakeStream records what the hub writes; block, when set, holds every Flush until closed.
type fakeStream struct {
	mu      sync.Mutex
	written []string
	flushes int
	beats   int
	block   chan struct{}
	aborted bool
}

func (s *fakeStream) Write(f []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written = append(s.written, string(f))
	return nil
}

func (s *fakeStream) Heartbeat() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beats++
	return nil
}

func (s *fakeStream) Flush() error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	return nil
}

func (s *fakeStream) Abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.block != nil && !s.aborted {
		close(s.block)
	}
	s.aborted = true
}

func (s *fakeStream) frames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.written...)
}

// joinHandler subscribes a stream connection to the channel each frame names.
type joinHandler struct {
	nopHandler
	h *Hub
}

func (j joinHandler) Open(c *Conn) { c.Send([]byte(`{"type":"welcome"}`)) }

func (j joinHandler) Frame(c *Conn, f []byte) {
	if err := j.h.Join(context.Background(), c, string(f)); err == nil {
		c.Activate(string(f), protocol.Position{}, []byte(`{"type":"subscribed","channel":"`+string(f)+`"}`))
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A stream connection is a member of the hub like a WebSocket one: its frames are handled once
// it is open, Deliver reaches it, a Disconnect is its last frame and ends Serve.
func TestServeStream(t *testing.T) {
	h := newTestHub(t, Config{})
	h.SetHandler(joinHandler{h: h})
	t.Cleanup(h.Close)
	s := &fakeStream{}
	done := make(chan error, 1)
	go func() {
		done <- h.Serve(context.Background(), s, Identity{Session: "st"}, [][]byte{[]byte("a"), []byte("b")}, 0)
	}()
	waitUntil(t, "the subscriptions", func() bool { return len(s.frames()) == 3 })
	if n := h.Deliver("b", protocol.Position{}, []byte("to-b"), nil); n != 1 {
		t.Fatalf("Deliver queued %d frames, want 1", n)
	}
	c, ok := h.Session("st")
	if !ok {
		t.Fatal("the stream connection is not among the hub's sessions")
	}
	c.Disconnect(protocol.DisconnectShutdown)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the disconnect")
	}
	got := s.frames()
	want := []string{`{"type":"welcome"}`, `{"type":"subscribed","channel":"a"}`, `{"type":"subscribed","channel":"b"}`, "to-b", string(protocol.DisconnectShutdown.Frame())}
	if len(got) != len(want) {
		t.Fatalf("wrote %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("wrote %q, want %q", got, want)
		}
	}
	if h.Len() != 0 || h.Deliver("a", protocol.Position{}, []byte("x"), nil) != 0 {
		t.Fatal("the ended stream is still in the hub")
	}
}

// A stream that does not take its frames is disconnected as slow, as a WebSocket is.
func TestServeStreamSlowConsumer(t *testing.T) {
	h := newTestHub(t, Config{SendBuffer: 4})
	h.SetHandler(joinHandler{h: h})
	t.Cleanup(h.Close)
	s := &fakeStream{block: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background(), s, Identity{Session: "slow"}, [][]byte{[]byte("a")}, 0) }()
	waitUntil(t, "the subscription", func() bool { c, ok := h.Session("slow"); return ok && c.Subscribed("a") })
	c, _ := h.Session("slow")
	for range 20 {
		h.Deliver("a", protocol.Position{}, []byte("m"), nil)
		if c.Closing() {
			break
		}
	}
	if c.Reason() != protocol.DisconnectCodeSlowConsumer {
		t.Fatalf("reason %q, want slow_consumer", c.Reason())
	}
	s.Abort()
	<-done
	got := s.frames()
	if last := got[len(got)-1]; last != string(protocol.DisconnectSlowConsumer.Frame()) {
		t.Fatalf("last frame %s, want the slow_consumer disconnect", last)
	}
}

// Close ends a stream at once, and Serve refuses once the hub is closed.
func TestServeStreamClose(t *testing.T) {
	h := newTestHub(t, Config{})
	s := &fakeStream{block: make(chan struct{})} // flushes only once aborted
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background(), s, Identity{Session: "c"}, nil, time.Millisecond) }()
	waitUntil(t, "the connection", func() bool { return h.Len() == 1 })
	h.Close()
	<-done
	if err := h.Serve(context.Background(), &fakeStream{}, Identity{Session: "late"}, nil, 0); !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Serve on a closed hub: %v", err)
	}
}
