package handlers

import (
	"net/http"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// The bodies of the control API (POST /api/disconnect, /api/subscribe, /api/unsubscribe,
// /api/revoke). id is optional: the command's id, which makes a repeated call apply once per
// connection; without one a new id is made and answered.
type (
	disconnectRequest struct {
		ID        string `json:"id"`
		User      string `json:"user"`
		Session   string `json:"session"`
		Code      string `json:"code"`
		Reason    string `json:"reason"`
		Reconnect bool   `json:"reconnect"`
	}
	subscribeRequest struct {
		ID      string `json:"id"`
		User    string `json:"user"`
		Channel string `json:"channel"`
	}
	revokeRequest struct {
		ID     string    `json:"id"`
		User   string    `json:"user"`
		JTI    string    `json:"jti"`
		Before time.Time `json:"before"`
		Until  time.Time `json:"until"`
	}
)

// Disconnect is POST /api/disconnect: {"user"|"session", "code", "reason", "reconnect"} ends the
// user's connections on every node, or the one session, with a disconnect frame of that code.
func (h *HTTP) Disconnect(w http.ResponseWriter, r *http.Request) {
	var req disconnectRequest
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	h.issue(w, r, &protocol.Control{ID: req.ID, Kind: protocol.ControlDisconnect, User: req.User, Session: req.Session,
		Code: req.Code, Reason: req.Reason, Reconnect: req.Reconnect})
}

// Subscribe is POST /api/subscribe: {"user","channel"} subscribes every session of the user, on
// every node, now and when it connects later, until /api/unsubscribe.
func (h *HTTP) Subscribe(w http.ResponseWriter, r *http.Request) {
	var req subscribeRequest
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	h.issue(w, r, &protocol.Control{ID: req.ID, Kind: protocol.ControlSubscribe, User: req.User, Channel: req.Channel})
}

// Unsubscribe is POST /api/unsubscribe: {"user","channel"} ends a standing subscription and
// unsubscribes the user's sessions from the channel.
func (h *HTTP) Unsubscribe(w http.ResponseWriter, r *http.Request) {
	var req subscribeRequest
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	h.issue(w, r, &protocol.Control{ID: req.ID, Kind: protocol.ControlUnsubscribe, User: req.User, Channel: req.Channel})
}

// Revoke is POST /api/revoke: {"user","before","until"} or {"jti","until"} (RFC 3339 times)
// refuses those tokens at upgrade and disconnects their open connections, until until.
func (h *HTTP) Revoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	h.issue(w, r, &protocol.Control{ID: req.ID, Kind: protocol.ControlRevoke, User: req.User, JTI: req.JTI,
		Before: req.Before, Until: req.Until})
}

// issue sends a command and answers {"id"}, 400 bad_request or 503 unavailable.
func (h *HTTP) issue(w http.ResponseWriter, r *http.Request, cmd *protocol.Control) {
	if err := h.cfg.Control.Issue(r.Context(), cmd); err != nil {
		writeAPIError(w, err)
		return
	}
	writeJSON(w, map[string]string{"id": cmd.ID})
}
