package gateway_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/internal/testcert"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports/memory"
)

// servedNode runs g.Serve on a loopback listener (the path of cmd/gateway: TLS, timeouts) until
// the test ends, then drains it and waits for Serve to return.
func servedNode(t *testing.T, cfg *configs.Config, opts ...gateway.Option) (*gateway.Gateway, string) {
	t.Helper()
	g, err := gateway.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return g, ln.Addr().String()
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, client *http.Client, url string, want int) {
	t.Helper()
	wstest.WaitFor(t, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			return fmt.Errorf("%s: %d, want %d", url, resp.StatusCode, want)
		}
		return nil
	})
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// TestTLS: with a certificate and key the listener speaks only TLS: https for the HTTP endpoints
// and the API, wss for clients, HTTP/1.1 even when the client offers h2.
func TestTLS(t *testing.T) {
	cert := testcert.New(t)
	cfg := testConfig(t, "GATEWAY_TLS_CERT_FILE="+cert.CertFile, "GATEWAY_TLS_KEY_FILE="+cert.KeyFile)
	_, addr := servedNode(t, cfg)
	base := "https://" + addr
	client := &http.Client{Timeout: wstest.Timeout, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig(), ForceAttemptHTTP2: true}}
	waitStatus(t, client, base+"/readyz", 200)

	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("https /healthz: %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(cert.Serial) != 0 {
		t.Fatalf("https /healthz was not served with the configured certificate (%+v)", resp.TLS)
	}
	if resp.Proto != "HTTP/1.1" {
		t.Fatalf("protocol %s, want HTTP/1.1 (WebSocket upgrades need it)", resp.Proto)
	}

	// Plain HTTP on the TLS port is refused.
	if status, body := get(t, &http.Client{Timeout: wstest.Timeout}, "http://"+addr+"/healthz"); status != 400 || !strings.Contains(body, "HTTPS") {
		t.Fatalf("plain http on the TLS listener: %d %q, want 400", status, body)
	}

	// A wss client subscribes and receives what the API publishes over https.
	d := websocket.Dialer{TLSClientConfig: cert.ClientConfig(), HandshakeTimeout: wstest.Timeout}
	conn, _, err := d.Dial("wss://"+addr+"/ws?token="+allowAll(t, "alice"), nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	c := &wstest.Client{Conn: conn}
	t.Cleanup(func() { conn.Close() })
	read := func(typ string) wstest.Frame {
		t.Helper()
		f, err := c.Read(wstest.Timeout)
		if err != nil || f.Str("type") != typ {
			t.Fatalf("read: %v %v, want %s", f, err, typ)
		}
		return f
	}
	read("welcome")
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"s","channel":"news"}`)); err != nil {
		t.Fatal(err)
	}
	read("subscribed")
	req, _ := http.NewRequest("POST", base+"/api/publish", strings.NewReader(`{"channel":"news","data":{"over":"tls"}}`))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("https api publish: %d", resp.StatusCode)
	}
	if f := read("message"); f.Data() != `{"over":"tls"}` {
		t.Fatalf("message %v", f)
	}
}

// TestTLSCertificateErrors: New refuses a certificate it cannot serve, naming the key, even when
// the files changed after Validate.
func TestTLSCertificateErrors(t *testing.T) {
	cert := testcert.New(t)
	other := testcert.New(t)
	cfg := testConfig(t, "GATEWAY_TLS_CERT_FILE="+cert.CertFile, "GATEWAY_TLS_KEY_FILE="+cert.KeyFile)
	cfg.TLS.KeyFile = other.KeyFile // not the key of the certificate
	_, err := gateway.New(cfg)
	var ke *configs.KeyError
	if !errors.As(err, &ke) || ke.Key != "tls.key_file" || ke.Env != "GATEWAY_TLS_KEY_FILE" {
		t.Fatalf("New with a mismatched key: %v, want a KeyError naming tls.key_file", err)
	}
	cfg.TLS.KeyFile = cert.KeyFile
	if err := os.Remove(cert.CertFile); err != nil {
		t.Fatal(err)
	}
	if _, err = gateway.New(cfg); !errors.As(err, &ke) || ke.Key != "tls.cert_file" {
		t.Fatalf("New with a missing certificate: %v, want a KeyError naming tls.cert_file", err)
	}
}

// TestServerTimeouts: read_header_timeout closes a connection that does not finish its headers,
// idle_timeout a keep-alive connection with no request (the defaults, 10s and 120s, would not).
func TestServerTimeouts(t *testing.T) {
	cfg := testConfig(t, "GATEWAY_HTTP_READ_HEADER_TIMEOUT=300ms", "GATEWAY_HTTP_IDLE_TIMEOUT=500ms")
	_, addr := servedNode(t, cfg)
	waitStatus(t, &http.Client{Timeout: wstest.Timeout}, "http://"+addr+"/readyz", 200)

	// closedWithin reads from conn until the server closes it, within limit.
	closedWithin := func(conn net.Conn, r *bufio.Reader, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(limit))
		_, err := io.Copy(io.Discard, r)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server kept the connection open for %v", limit)
		}
		return time.Since(start)
	}

	t.Run("ReadHeader", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil { // no blank line
			t.Fatal(err)
		}
		if d := closedWithin(conn, bufio.NewReader(conn), 5*time.Second); d < 200*time.Millisecond {
			t.Fatalf("closed after %v, before the read-header timeout", d)
		}
	})
	t.Run("Idle", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("status %d, close %v: want a kept-alive 200", resp.StatusCode, resp.Close)
		}
		if d := closedWithin(conn, r, 5*time.Second); d < 300*time.Millisecond {
			t.Fatalf("idle connection closed after %v, before the idle timeout", d)
		}
	})
}

// TestAdminListener: pprof and metrics answer on admin.addr, never on the main listener; Close
// closes the admin listener, and a second Close is harmless.
func TestAdminListener(t *testing.T) {
	cfg := testConfig(t, "GATEWAY_ADMIN_ADDR=127.0.0.1:0")
	g, url := nodetest.InProcess(t, cfg)
	admin := g.AdminAddr()
	if admin == "" {
		t.Fatal("AdminAddr is empty with admin.addr set")
	}
	client := &http.Client{Timeout: wstest.Timeout}
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/cmdline":           "",
		"/metrics":                       "gateway_connections",
	} {
		status, body := get(t, client, "http://"+admin+path)
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("admin %s: %d, body without %q", path, status, want)
		}
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap"} {
		if status, _ := get(t, client, url+path); status != 404 {
			t.Errorf("main listener %s: %d, want 404", path, status)
		}
	}
	if status, _ := get(t, client, url+"/metrics"); status != 200 {
		t.Errorf("main listener /metrics: %d, want 200 (Prometheus scrapes it there)", status)
	}

	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if g.AdminAddr() != "" {
		t.Errorf("AdminAddr %q after Close", g.AdminAddr())
	}
	if conn, err := net.DialTimeout("tcp", admin, time.Second); err == nil {
		conn.Close()
		t.Fatalf("the admin listener %s still accepts connections after Close", admin)
	}
}

// TestAdminListenerOffByDefault: without admin.addr there is no admin listener, and the main
// listener has no pprof.
func TestAdminListenerOffByDefault(t *testing.T) {
	cfg := testConfig(t)
	if cfg.Admin.Addr != "" {
		t.Fatalf("admin.addr defaults to %q, want empty", cfg.Admin.Addr)
	}
	g, url := nodetest.InProcess(t, cfg)
	if a := g.AdminAddr(); a != "" {
		t.Fatalf("AdminAddr %q without admin.addr", a)
	}
	if status, _ := get(t, &http.Client{Timeout: wstest.Timeout}, url+"/debug/pprof/"); status != 404 {
		t.Fatalf("/debug/pprof/ on the main listener: %d, want 404", status)
	}
}

// TestAdminListenerBusy: a node whose admin address is taken does not start, and says which.
func TestAdminListenerBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g, err := gateway.New(testConfig(t, "GATEWAY_ADMIN_ADDR="+ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	err = g.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "admin listener on "+ln.Addr().String()) {
		t.Fatalf("Start with a busy admin address: %v", err)
	}
}

// TestRouterRetriesCounted: gateway_router_retries_total counts every broker publish attempt
// after the first.
func TestRouterRetriesCounted(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	fb := &failingBroker{Broker: broker.Node("down")}
	n := startNode(t, testConfig(t, "GATEWAY_ROUTER_RETRY_ATTEMPTS=2", "GATEWAY_ROUTER_RETRY_INITIAL=1ms",
		"GATEWAY_EVENTS_DISABLED=true"), gateway.WithBroker(fb)) // no lifecycle events: only this publish fails
	if status, _ := apiPublish(t, n.URL, map[string]any{"channel": "x", "data": 1}); status != 503 {
		t.Fatalf("api publish with the broker down: %d", status)
	}
	_, body := get(t, &http.Client{Timeout: wstest.Timeout}, n.URL+"/metrics")
	if !strings.Contains(body, "\ngateway_router_retries_total 2\n") {
		t.Fatalf("after 1 + 2 attempts, /metrics does not say gateway_router_retries_total 2:\n%s", body)
	}
}
