package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/transports/websocket"
)

// fakeAcceptor refuses every upgrade with err, writing nothing, as websocket.Hub does before an upgrade.
type fakeAcceptor struct{ err error }

func (f fakeAcceptor) Accept(http.ResponseWriter, *http.Request, websocket.Identity) error {
	return f.err
}
func (fakeAcceptor) Draining() bool { return false }

// Check passes every request: Accept refuses it.
func (fakeAcceptor) Check(*http.Request) error { return nil }

// newTestHTTP makes the HTTP endpoints of cfg with metrics, a silent log and Sessions.
func newTestHTTP(cfg HTTPConfig) *HTTP {
	cfg.Metrics, cfg.Log = metrics.New(), slog.New(slog.DiscardHandler)
	cfg.Sessions = NewSessions(SessionsConfig{Metrics: cfg.Metrics, Log: cfg.Log})
	return NewHTTP(cfg)
}

// TestUpgradeRefusalsAnswerJSON: an upgrade the hub refuses before writing anything (an Origin
// not allowed, a hub closed since the drain check, a request gorilla will not upgrade) is
// answered with the status and the JSON error body of every other refusal, never an empty 200.
func TestUpgradeRefusalsAnswerJSON(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{websocket.ErrOriginRefused, http.StatusForbidden, "forbidden"},
		{websocket.ErrHubClosed, http.StatusServiceUnavailable, "unavailable"},
		{&websocket.UpgradeError{Status: http.StatusBadRequest, Err: errors.New("not a handshake")}, http.StatusBadRequest, "bad_request"},
		{&websocket.UpgradeError{Status: http.StatusMethodNotAllowed, Err: errors.New("not GET")}, http.StatusMethodNotAllowed, "bad_request"},
		{&websocket.UpgradeError{Status: http.StatusForbidden, Err: errors.New("origin")}, http.StatusForbidden, "forbidden"},
		{&websocket.UpgradeError{Status: http.StatusInternalServerError, Err: errors.New("no hijack")}, http.StatusInternalServerError, "internal"},
	} {
		h := newTestHTTP(HTTPConfig{AllowAnonymous: true, Acceptor: fakeAcceptor{tc.err}})
		rec := httptest.NewRecorder()
		h.Upgrade(rec, httptest.NewRequest("GET", "/ws", nil))
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != tc.status || err != nil ||
			rec.Header().Get("Content-Type") != "application/json" || body.Error.Code != tc.code {
			t.Errorf("%v: %d %q %s, want %d application/json with code %s", tc.err, rec.Code, rec.Header().Get("Content-Type"), rec.Body, tc.status, tc.code)
		}
	}
}

// TestRefuseAdmit: what Admit refuses is answered from its *LimitError, found through wrapping
// too (429 rate_limited, 503 unavailable); any other error is 503 unavailable, not a panic.
// Upgrade cannot reach the last case today (Admit returns only *LimitError), so refuseAdmit is
// called directly.
func TestRefuseAdmit(t *testing.T) {
	h := newTestHTTP(HTTPConfig{Acceptor: fakeAcceptor{}})
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{&LimitError{Status: http.StatusTooManyRequests, Reason: "too many"}, http.StatusTooManyRequests, "rate_limited"},
		{fmt.Errorf("admit: %w", &LimitError{Status: http.StatusServiceUnavailable, Reason: "full"}), http.StatusServiceUnavailable, "unavailable"},
		{errors.New("something else"), http.StatusServiceUnavailable, "unavailable"},
	} {
		rec := httptest.NewRecorder()
		h.refuseAdmit(rec, httptest.NewRequest("GET", "/ws", nil), tc.err)
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != tc.status || err != nil || body.Error.Code != tc.code {
			t.Errorf("%v: %d %s, want %d with code %s", tc.err, rec.Code, rec.Body, tc.status, tc.code)
		}
	}
}
