package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
)

// certCheckInterval is how often, at most, a TLS handshake looks whether the certificate or key
// file changed (a renewal by cert-manager, a new Kubernetes secret), so a renewed certificate is
// served without a restart.
const certCheckInterval = 10 * time.Second

// httpServer is the main listener's server: the configured timeouts, and the server's own
// errors (TLS handshakes of scanners, bad requests) at debug level only.
func (g *Gateway) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: g.cfg.HTTP.ReadHeaderTimeout,
		// The whole request: a body sent slowly is cut off. A WebSocket connection is not bound
		// by it: the upgrade clears the deadlines of the connection it takes over.
		ReadTimeout: g.cfg.HTTP.ReadTimeout,
		IdleTimeout: g.cfg.HTTP.IdleTimeout,
		ErrorLog:    slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
}

// closeUnreadBodies makes the answer to a request whose handler did not read its whole body
// close the connection ("Connection: close"). Otherwise net/http reads up to 256 KiB of the
// rest of the body before it sends the answer, so a refusal (401, 404, 405, 413) to a client
// that sends its body slowly would wait for that body. A request without a body passes as is
// (the WebSocket upgrade among them); an upgrade with a body is refused 400.
func closeUnreadBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		if websocket.IsWebSocketUpgrade(r) { // what follows its headers would be taken for frames
			w.Header().Set("Connection", "close")
			protocol.WriteHTTPError(w, http.StatusBadRequest, protocol.CodeBadRequest, "a WebSocket handshake carries no body")
			return
		}
		body := &readBody{ReadCloser: r.Body, length: r.ContentLength}
		r.Body = body
		h.ServeHTTP(&closeIfUnread{ResponseWriter: w, body: body}, r)
	})
}

// readBody notes when a request body has been read to its end.
type readBody struct {
	io.ReadCloser
	length int64 // Content-Length; -1 when unknown (chunked)
	read   atomic.Int64
	done   atomic.Bool
}

func (b *readBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF || (b.length >= 0 && b.read.Add(int64(n)) >= b.length) {
		b.done.Store(true)
	}
	return n, err
}

// closeIfUnread adds "Connection: close" to an answer sent before the body was read.
type closeIfUnread struct {
	http.ResponseWriter
	body        *readBody
	wroteHeader bool
}

func (w *closeIfUnread) WriteHeader(status int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		if !w.body.done.Load() {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *closeIfUnread) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (w *closeIfUnread) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// newServerTLS is the TLS configuration of the main listener, nil when tls.cert_file is not set.
// HTTP/1.1 only: a WebSocket upgrade needs it, and a browser offered h2 could try WebSockets over
// HTTP/2 (RFC 8441), which the WebSocket library does not serve.
func newServerTLS(cfg configs.TLSConfig, log *slog.Logger) (*tls.Config, error) {
	if cfg.CertFile == "" {
		return nil, nil
	}
	c, err := loadCertificate(cfg.CertFile, cfg.KeyFile, certCheckInterval, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: c.get,
	}, nil
}

// certificate serves a certificate from files and loads them again when they change.
type certificate struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times when cert was loaded
	checked time.Time
}

func loadCertificate(certFile, keyFile string, every time.Duration, log *slog.Logger) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, every: every, log: log}
	stamp, err := c.fileStamp()
	if err == nil {
		err = c.load(stamp)
	}
	if err != nil {
		var ke *configs.KeyError
		if errors.As(err, &ke) {
			return nil, err
		}
		return nil, &configs.KeyError{Key: "tls.cert_file", Env: "GATEWAY_TLS_CERT_FILE", Reason: err.Error()}
	}
	c.checked = time.Now()
	return c, nil
}

// get is tls.Config.GetCertificate.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= c.every {
		c.checked = now
		if stamp, err := c.fileStamp(); err != nil {
			c.log.Warn("TLS certificate files unreadable; serving the loaded certificate", "error", err)
		} else if stamp != c.stamp {
			if err := c.load(stamp); err != nil {
				// Often a renewal caught half-written (the certificate replaced, the key not yet):
				// the next check after every tries again.
				c.log.Warn("TLS certificate files changed but do not load; serving the previous certificate", "error", err)
			} else {
				c.log.Info("TLS certificate reloaded", "cert_file", c.certFile)
			}
		}
	}
	return c.cert, nil
}

func (c *certificate) load(stamp string) error {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return err
	}
	cert, err := configs.LoadCertificate(certPEM, keyPEM)
	if err != nil {
		return err
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

// fileStamp changes whenever either file is replaced or rewritten (os.Stat follows the symbolic
// links of a Kubernetes secret volume to the current files).
func (c *certificate) fileStamp() (string, error) {
	var b bytes.Buffer
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// adminHandler serves net/http/pprof under /debug/pprof/ and the node's /metrics.
func adminHandler(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("GET /metrics", m.Handler())
	return mux
}

// admin is the optional admin listener; Start opens it, Close closes it.
type admin struct {
	mu   sync.Mutex
	srv  *http.Server
	addr string
	done chan struct{} // closed when Serve has returned
}

// startAdmin listens on admin.addr (when set) and serves the admin handler until closeAdmin.
func (g *Gateway) startAdmin() error {
	if g.cfg.Admin.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", g.cfg.Admin.Addr)
	if err != nil {
		return fmt.Errorf("admin listener on %s: %w", g.cfg.Admin.Addr, err)
	}
	srv := &http.Server{
		Handler:           adminHandler(g.metrics),
		ReadHeaderTimeout: g.cfg.HTTP.ReadHeaderTimeout,
		IdleTimeout:       g.cfg.HTTP.IdleTimeout,
		// No WriteTimeout: /debug/pprof/profile?seconds=30 writes after 30 seconds.
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	g.admin.mu.Lock()
	g.admin.srv, g.admin.addr, g.admin.done = srv, ln.Addr().String(), done
	g.admin.mu.Unlock()
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("admin listener stopped", "error", err)
		}
	}()
	g.log.Info("admin listening (pprof, metrics)", "addr", ln.Addr().String())
	return nil
}

// closeAdmin closes the admin listener and its connections and waits for its server to return.
func (g *Gateway) closeAdmin() {
	g.admin.mu.Lock()
	srv, done := g.admin.srv, g.admin.done
	g.admin.srv, g.admin.addr = nil, ""
	g.admin.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

// AdminAddr is the address the admin listener (pprof, metrics) listens on, "" when it is off
// (admin.addr not set) or closed.
func (g *Gateway) AdminAddr() string {
	g.admin.mu.Lock()
	defer g.admin.mu.Unlock()
	return g.admin.addr
}
