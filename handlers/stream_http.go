package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/stream"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Streamer serves connections carried by an HTTP response (websocket.Hub.Serve).
type Streamer interface {
	Serve(ctx context.Context, s websocket.Stream, id websocket.Identity, frames [][]byte, heartbeat time.Duration) error
	CheckOrigin(r *http.Request) bool
}

// StreamConfig is what the one-way transports need (configs.StreamConfig, and the WebSocket
// connections' write timeout).
type StreamConfig struct {
	Heartbeat    time.Duration
	MaxChannels  int
	WriteTimeout time.Duration
}

// SSE serves GET /sse: Server-Sent Events of the channels the query names.
func (h *HTTP) SSE(w http.ResponseWriter, r *http.Request) { h.serveStream(w, r, stream.SSE) }

// Stream serves GET /stream: the same, as NDJSON.
func (h *HTTP) Stream(w http.ResponseWriter, r *http.Request) { h.serveStream(w, r, stream.NDJSON) }

// serveStream authenticates a one-way stream, checks its channels (the cheap checks first, then
// the connection limits, then the connect hook, as Upgrade), and hands it to the hub as a
// connection whose only client frames are a subscribe per channel, each resuming from the
// position the last event id holds for it. Every refusal comes before the response starts, as
// for an upgrade (401, 403, 429, 503, and 400 for a bad channel list).
func (h *HTTP) serveStream(w http.ResponseWriter, r *http.Request, f stream.Format) {
	if h.cfg.Streamer == nil || h.cfg.Acceptor.Draining() {
		h.refuse(w, r, http.StatusServiceUnavailable, protocol.CodeUnavailable, "node is shutting down")
		return
	}
	if !h.cfg.Streamer.CheckOrigin(r) {
		h.refuse(w, r, http.StatusForbidden, protocol.CodeForbidden, "origin not allowed")
		return
	}
	q := r.URL.Query()
	channels := q["channel"]
	if msg := h.checkStreamChannels(channels); msg != "" {
		h.refuse(w, r, http.StatusBadRequest, protocol.CodeBadRequest, msg)
		return
	}
	claims, err := h.authenticate(r)
	if err != nil {
		h.refuse(w, r, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		return
	}
	if h.cfg.Control.Revoked(claims) {
		h.refuse(w, r, http.StatusUnauthorized, protocol.CodeUnauthorized, "token revoked")
		return
	}
	// The token and public channels decide here, before the stream starts; a channel the
	// subscribe hook covers is its to decide, in the stream (an error event when it refuses).
	for _, ch := range channels {
		if ch == protocol.UserChannel && claims.User == "" {
			h.refuse(w, r, http.StatusForbidden, protocol.CodeForbidden, "anonymous connections have no $user channel")
			return
		}
		if ch != protocol.UserChannel && !h.cfg.Sessions.cfg.Hooks.Covers(protocol.HookSubscribe, ch) && !h.cfg.Sessions.mayStream(claims, ch) {
			h.refuse(w, r, http.StatusForbidden, protocol.CodeForbidden, "not allowed to subscribe to "+ch)
			return
		}
	}
	value, hooked, done, ok := h.admit(w, r, claims)
	if !ok {
		return
	}
	if st, ok := value.(*state); ok {
		st.transport = transportOf(r)
	}
	user := hooked.claims.User

	last := r.Header.Get("Last-Event-ID")
	for _, k := range []string{"last_event_id", "since"} {
		if v := q.Get(k); v != "" {
			last = v
		}
	}
	since := stream.Resume(last, channels)
	frames := make([][]byte, len(channels))
	for i, ch := range channels {
		sub := protocol.Frame{Type: protocol.TypeSubscribe, ID: strconv.Itoa(i + 1), Channel: ch}
		name := ch
		if ch == protocol.UserChannel {
			name = protocol.UserChannelFor(user)
		}
		if _, err := protocol.ParseClientPosition(name, since[i]); since[i] != "" && err == nil {
			sub.Since = &since[i]
		}
		frames[i] = protocol.Encode(sub)
	}

	if origin := r.Header.Get("Origin"); origin != "" {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	id := websocket.Identity{Session: watermill.NewUUID(), User: user, Value: value}
	cur := stream.NewCursor(channels)
	// An HTTP/1.x stream takes its connection: the request, the response and the server's
	// buffers go once this handler returns, and a goroutine of the stream's serves it.
	hj, ctx, err := stream.Hijack(r.Context(), w, r, f, cur, h.cfg.Stream.WriteTimeout)
	switch {
	case err == nil:
		h.goStream(func() {
			defer done()
			defer hj.Close()
			h.serveOn(ctx, hj.Writer, id, frames)
		})
		return
	case !errors.Is(err, stream.ErrNotHijackable):
		done() // the connection was taken, and closed
		return
	}
	defer done()
	h.serveOn(r.Context(), stream.NewWriter(w, f, cur, h.cfg.Stream.WriteTimeout), id, frames)
}

// serveOn starts the stream sw and serves it until it ends.
func (h *HTTP) serveOn(ctx context.Context, sw *stream.Writer, id websocket.Identity, frames [][]byte) {
	if err := sw.Start(); err != nil {
		return
	}
	if err := h.cfg.Streamer.Serve(ctx, sw, id, frames, h.cfg.Stream.Heartbeat); errors.Is(err, websocket.ErrHubClosed) {
		_ = sw.Write(protocol.DisconnectShutdown.Frame())
		_ = sw.Flush()
	}
}

// checkStreamChannels says what is wrong with the channel list of a stream ("" when nothing).
// None is fine: such a stream gets the messages addressed to its session and to everyone.
func (h *HTTP) checkStreamChannels(channels []string) string {
	if len(channels) > h.cfg.Stream.MaxChannels {
		return "a stream may name at most " + strconv.Itoa(h.cfg.Stream.MaxChannels) + " channels"
	}
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		if ch != protocol.UserChannel && !protocol.ValidChannel(ch) {
			return "invalid channel name " + strconv.Quote(ch)
		}
		if seen[ch] {
			return "channel " + ch + " is named twice"
		}
		seen[ch] = true
	}
	return ""
}

// mayStream reports whether a connection with claims may subscribe to channel by its token and
// the public channels (the rule of a subscribe frame without the subscribe hook).
func (s *Sessions) mayStream(claims *auth.Claims, channel string) bool {
	st := &state{}
	st.tok.Store(claims)
	return s.canSubscribe(st, channel)
}

// The transports hook requests name (protocol.HookRequest.Transport).
const (
	transportWebSocket = "websocket"
	transportSSE       = "sse"
	transportStream    = "stream"
)

// transportOf is the transport a connection request asks for, by its path.
func transportOf(r *http.Request) string {
	switch r.URL.Path {
	case "/sse":
		return transportSSE
	case "/stream":
		return transportStream
	}
	return transportWebSocket
}

// transportName is the connection's transport, for hook requests.
func (st *state) transportName() string {
	if st.transport == "" {
		return transportWebSocket
	}
	return st.transport
}
