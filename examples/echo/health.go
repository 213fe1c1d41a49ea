package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wsgateway/gateway/clients/go/service"
)

// healthPath is what -health-addr serves; docker-compose.yml and the echo image probe it.
const healthPath = "/healthz"

// pingTimeout bounds the broker ping of one probe.
const pingTimeout = 2 * time.Second

// health answers GET /healthz: 200 while the service consumes its group and the broker answers a
// ping, 503 otherwise: before the group is consumed, once the consumer stopped (shutdown, or the
// broker ended the subscription), and while the broker is unreachable.
type health struct {
	mu      sync.Mutex
	svc     *service.Service // nil until consuming is called
	stopped <-chan struct{}  // closed when the consumer stops
}

// consuming records that svc consumes the group until stopped is closed.
func (h *health) consuming(svc *service.Service, stopped <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.svc, h.stopped = svc, stopped
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	svc, stopped := h.svc, h.stopped
	h.mu.Unlock()
	status, body := http.StatusOK, "ok\n"
	switch {
	case svc == nil:
		status, body = http.StatusServiceUnavailable, "starting\n"
	case closed(stopped):
		status, body = http.StatusServiceUnavailable, "not consuming\n"
	default:
		ctx, cancel := context.WithTimeout(r.Context(), pingTimeout)
		err := svc.Broker().Ping(ctx)
		cancel()
		if err != nil {
			status, body = http.StatusServiceUnavailable, "broker unreachable\n"
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// serveHealth serves h on GET /healthz at addr, in a goroutine that stop ends (and waits for);
// bound is the address it listens on (the port chosen for ":0").
func serveHealth(addr string, h http.Handler, log *slog.Logger) (stop func(), bound string, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+healthPath, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "addr", ln.Addr().String(), "error", err)
		}
	}()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), pingTimeout+time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}
	return stop, ln.Addr().String(), nil
}
