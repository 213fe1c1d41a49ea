package stream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/protocol"
)

var (
	hjWelcome = []byte(`{"type":"welcome","session":"s"}`)
	hjMsg     = protocol.ChannelMessageFrame("a", "m1", "e:0:5:abc", []byte(`{"k":1}`), nil)
	hjBody    = "retry: 1000\n\ndata: " + string(hjWelcome) + "\n\nid: 1.e:0:5:abc.\ndata: " + string(hjMsg) + "\n\n: heartbeat\n\n"
)

// hijackServer serves each request by taking its connection for an SSE stream that writes
// hjBody in three batches, then waits for the client to go (or ends at once when endFirst) and
// closes. What Hijack answered is sent on hijacked.
func hijackServer(t *testing.T, endFirst bool, hijacked chan<- error, ended chan<- struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Before", "kept")
		h, ctx, err := Hijack(r.Context(), w, r, SSE, NewCursor([]string{"a", "b"}), time.Minute)
		hijacked <- err
		if err != nil {
			return
		}
		go func() {
			defer close(ended)
			defer h.Close()
			if h.Start() != nil || h.Write(hjWelcome) != nil || h.Flush() != nil ||
				h.Write(hjMsg) != nil || h.Heartbeat() != nil || h.Flush() != nil {
				t.Error("a write failed")
				return
			}
			if !endFirst {
				<-ctx.Done()
			}
		}()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestHijackedStream: a stream that took its connection answers as the server would have: a
// 200 with the headers set before and the stream's own, a chunked body that a client reads to
// its proper end.
func TestHijackedStream(t *testing.T) {
	hijacked, ended := make(chan error, 1), make(chan struct{})
	srv := hijackServer(t, true, hijacked, ended)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := <-hijacked; err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body) // io.ErrUnexpectedEOF without the last chunk
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != hjBody {
		t.Errorf("body\n%q\nwant\n%q", body, hjBody)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-store" ||
		resp.Header.Get("X-Before") != "kept" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("status %d, headers %v, transfer encoding %v", resp.StatusCode, resp.Header, resp.TransferEncoding)
	}
	<-ended
}

// TestHijackedStreamHTTP10: an HTTP/1.0 client gets the body unchunked, to the close.
func TestHijackedStreamHTTP10(t *testing.T) {
	hijacked, ended := make(chan error, 1), make(chan struct{})
	srv := hijackServer(t, true, hijacked, ended)
	conn := rawRequest(t, srv, "GET /sse HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != hjBody {
		t.Errorf("body %q (%v), want %q", body, err, hjBody)
	}
	if len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Errorf("transfer encoding %v, close %v: want the body to the close", resp.TransferEncoding, resp.Close)
	}
	<-ended
}

// TestHijackedStreamEndsWithClient: the stream's context ends once the client closes its
// connection, and the request's ResponseWriter is let go while the stream is open.
func TestHijackedStreamEndsWithClient(t *testing.T) {
	var released atomic.Bool
	hijacked, ended := make(chan error, 1), make(chan struct{})
	inner := hijackServer(t, false, hijacked, ended).Config.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackedWriter{w}
		runtime.AddCleanup(tw, func(*atomic.Bool) { released.Store(true) }, &released)
		inner.ServeHTTP(tw, r)
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-hijacked; err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "retry: 1000\n" {
		t.Fatalf("first line %q (%v)", line, err)
	}
	poll.Until(t, 10*time.Second, func() error {
		runtime.GC()
		if !released.Load() {
			return errors.New("the server's ResponseWriter is still held while the stream is open")
		}
		return nil
	})
	select {
	case <-ended:
		t.Fatal("the stream ended before its client went")
	default:
	}
	resp.Body.Close() // the client goes: the stream's context ends, and it closes
	select {
	case <-ended:
	case <-time.After(time.Minute):
		t.Fatal("the stream did not end once its client closed the connection")
	}
}

// rawRequest sends request, as it is, on a connection of its own to srv, closed when t ends.
func rawRequest(t *testing.T, srv *httptest.Server, request string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	return conn
}

type trackedWriter struct{ http.ResponseWriter }

func (w *trackedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestHijackRefused: HTTP/2 and HEAD requests keep the server's ResponseWriter (NewWriter).
func TestHijackRefused(t *testing.T) {
	got := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _, err := Hijack(context.Background(), w, r, SSE, NewCursor(nil), time.Minute)
		got <- err
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: client.Transport.(*http.Transport).TLSClientConfig.RootCAs, NextProtos: []string{"h2"}}
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, srv.URL, nil)
		if method == "HEAD" {
			client = &http.Client{Transport: &http.Transport{TLSClientConfig: client.Transport.(*http.Transport).TLSClientConfig.Clone()}}
			client.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if err := <-got; !errors.Is(err, ErrNotHijackable) {
			t.Errorf("%s over %s: Hijack answered %v, want ErrNotHijackable", method, resp.Proto, err)
		}
		if method == "GET" && resp.ProtoMajor != 2 {
			t.Errorf("GET went over %s, want HTTP/2", resp.Proto)
		}
	}
}

// TestHijackedStreamEndsWhenClientSends: a client that sends anything after its request (a
// stream's client sends nothing) ends its stream.
func TestHijackedStreamEndsWhenClientSends(t *testing.T) {
	hijacked, ended := make(chan error, 1), make(chan struct{})
	srv := hijackServer(t, false, hijacked, ended)
	conn := rawRequest(t, srv, "GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := <-hijacked; err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response %v (%v)", resp, err)
	}
	if _, err := io.WriteString(conn, "GET /more HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(time.Minute):
		t.Fatal("the stream goes on while its client sends")
	}
}
