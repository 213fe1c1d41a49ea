package handlers

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Acceptor upgrades a request to a WebSocket connection (websocket.Hub).
type Acceptor interface {
	// Check makes Accept's cheap checks (origin, handshake headers) without answering, with
	// Accept's errors.
	Check(r *http.Request) error
	Accept(w http.ResponseWriter, r *http.Request, id websocket.Identity) error
	Draining() bool
}

// HTTPConfig is what the HTTP endpoints need.
type HTTPConfig struct {
	NodeID   string
	Acceptor Acceptor
	// Streamer serves GET /sse and GET /stream (the hub); nil: they answer 503.
	Streamer Streamer
	Stream   StreamConfig
	Sessions *Sessions // admits the connections Upgrade accepts
	// Ready reports whether the node can serve (broker reachable).
	Ready          func(ctx context.Context) error
	Inbox          Submitter
	Verifier       *auth.Verifier // nil: anonymous only
	AllowAnonymous bool
	APIKey         string         // "": the HTTP API is off
	PublishTimeout time.Duration  // of an API publish's submit
	Presence       *Presence      // nil: presence off (the presence API answers unavailable)
	Control        *Control       // the control API's commands; revocations checked at upgrade
	History        *HistoryReader // the history and position API; nil: they answer unavailable
	Metrics        *metrics.Metrics
	Log            *slog.Logger
}

// HTTP serves the node's HTTP endpoints.
type HTTP struct {
	cfg     HTTPConfig
	rlog    *ratelog.Logger // refused upgrades
	mu      sync.Mutex
	closed  bool           // Close was called: streams are served on their request's goroutine
	streams sync.WaitGroup // the goroutines of the streams that took their connection (goStream)
}

// NewHTTP makes the HTTP endpoints.
func NewHTTP(cfg HTTPConfig) *HTTP {
	return &HTTP{cfg: cfg, rlog: ratelog.New(cfg.Log, ratelog.DefaultInterval)}
}

// Close returns once the streams that took their connection over have ended: call it after the
// hub's Close, which ends them, for the goroutines that then close their connections. Safe to
// call twice.
func (h *HTTP) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.streams.Wait()
}

// goStream runs serve on a goroutine that Close waits for; once closed, on the caller's.
func (h *HTTP) goStream(serve func()) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		serve() // the hub is closed: the stream ends at once
		return
	}
	h.streams.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.streams.Done()
		serve()
	}()
}

// Routes registers every endpoint on mux.
func (h *HTTP) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws", h.Upgrade)
	mux.HandleFunc("GET /sse", h.SSE)
	mux.HandleFunc("GET /stream", h.Stream)
	mux.HandleFunc("POST /api/publish", h.Publish)
	mux.HandleFunc("POST /api/batch", h.Batch)
	mux.HandleFunc("GET /api/presence", h.PresenceMembers)
	mux.HandleFunc("GET /api/presence_stats", h.PresenceStats)
	mux.HandleFunc("GET /api/channels", h.Channels)
	mux.HandleFunc("GET /api/history", h.History)
	mux.HandleFunc("GET /api/position", h.Position)
	mux.HandleFunc("POST /api/disconnect", h.Disconnect)
	mux.HandleFunc("POST /api/subscribe", h.Subscribe)
	mux.HandleFunc("POST /api/unsubscribe", h.Unsubscribe)
	mux.HandleFunc("POST /api/revoke", h.Revoke)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", h.Ready)
	mux.Handle("GET /metrics", h.cfg.Metrics.Handler())
}

// Ready answers 200 while the broker is reachable and the node accepts connections.
func (h *HTTP) Ready(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if h.cfg.Acceptor.Draining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "draining\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.cfg.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "broker unreachable\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// Upgrade authenticates the request and hands it to the hub. Every refusal happens before the
// upgrade, as an HTTP status with a JSON error body. The cheap checks (token, revocation,
// origin, handshake, connection limits for the token's user) come before the connect hook is
// called; the limit of the user the hook sets is checked after it.
func (h *HTTP) Upgrade(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Acceptor.Draining() {
		h.refuse(w, r, http.StatusServiceUnavailable, protocol.CodeUnavailable, "node is shutting down")
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
	if err := h.cfg.Acceptor.Check(r); err != nil {
		h.refuseAccept(w, r, err)
		return
	}
	value, hooked, done, ok := h.admit(w, r, claims)
	if !ok {
		return
	}
	defer done()
	id := websocket.Identity{Session: watermill.NewUUID(), User: hooked.claims.User, Value: value}
	h.refuseAccept(w, r, h.cfg.Acceptor.Accept(w, r, id))
}

// admit reserves a connection of claims (Sessions.Admit), asks the connect hook, and moves the
// reservation to the user the hook set; the connection's state takes what the hook said. When
// it refuses, it has answered the client and ok is false; otherwise done must be called once the
// connection attempt is over. The WebSocket upgrade and the streams both start with it.
func (h *HTTP) admit(w http.ResponseWriter, r *http.Request, claims *auth.Claims) (value any, hooked connected, done func(), ok bool) {
	value, done, err := h.cfg.Sessions.Admit(claims)
	if err != nil {
		h.refuseAdmit(w, r, err)
		return nil, connected{}, nil, false
	}
	hooked, status, perr := h.cfg.Sessions.connectHook(r, claims)
	if perr != nil {
		done()
		h.refuse(w, r, status, perr.Code, perr.Message)
		return nil, connected{}, nil, false
	}
	if hooked.claims != claims {
		if err := h.cfg.Sessions.rebind(value, hooked.claims); err != nil {
			done()
			h.refuseAdmit(w, r, err)
			return nil, connected{}, nil, false
		}
	}
	if st, ok := value.(*state); ok {
		st.welcome, st.expiryCap = hooked.welcome, hooked.expiryCap
	}
	return value, hooked, done, true
}

// refuseAccept answers an upgrade Check or Accept refused with err (nil: nothing to answer).
func (h *HTTP) refuseAccept(w http.ResponseWriter, r *http.Request, err error) {
	var refused *websocket.UpgradeError
	switch {
	case errors.Is(err, websocket.ErrOriginRefused):
		h.refuse(w, r, http.StatusForbidden, protocol.CodeForbidden, "origin not allowed")
	case errors.Is(err, websocket.ErrHubClosed): // closed since the Draining check
		h.refuse(w, r, http.StatusServiceUnavailable, protocol.CodeUnavailable, "node is shutting down")
	case errors.As(err, &refused): // gorilla refused it (not a WebSocket handshake, a wrong version...)
		h.cfg.Metrics.UpgradesRefused.WithLabelValues("upgrade").Inc()
		h.rlog.Info(logUpgrade, "upgrade refused", "error", err, "remote_addr", r.RemoteAddr)
		writeError(w, refused.Status, upgradeCode(refused.Status), refused.Error())
	case err != nil: // the upgrade failed once it had begun: nothing can be answered
		h.cfg.Metrics.UpgradesRefused.WithLabelValues("upgrade").Inc()
		h.rlog.Info(logUpgrade, "upgrade refused", "error", err, "remote_addr", r.RemoteAddr)
	}
}

// upgradeCode is the error code of an upgrade gorilla refused with status.
func upgradeCode(status int) string {
	switch {
	case status == http.StatusForbidden:
		return protocol.CodeForbidden
	case status >= 500:
		return protocol.CodeInternal
	}
	return protocol.CodeBadRequest
}

// refuseAdmit answers an upgrade Admit refused: a *LimitError with its status (429:
// rate_limited, else unavailable), any other error with 503 unavailable.
func (h *HTTP) refuseAdmit(w http.ResponseWriter, r *http.Request, err error) {
	var le *LimitError
	if !errors.As(err, &le) {
		h.refuse(w, r, http.StatusServiceUnavailable, protocol.CodeUnavailable, "the node cannot accept the connection now")
		return
	}
	code := protocol.CodeUnavailable
	if le.Status == http.StatusTooManyRequests {
		code = protocol.CodeRateLimited
	}
	h.refuse(w, r, le.Status, code, le.Reason)
}

// logUpgrade is the ratelog kind of refused upgrades.
const logUpgrade = "upgrade_refused"

func (h *HTTP) authenticate(r *http.Request) (*auth.Claims, error) {
	token := auth.TokenFromRequest(r)
	if token == "" {
		if h.cfg.AllowAnonymous {
			return &auth.Claims{}, nil
		}
		return nil, errors.New("a token is required")
	}
	if h.cfg.Verifier == nil {
		return nil, errors.New("tokens are not accepted by this node")
	}
	return h.cfg.Verifier.Verify(token)
}

// refuse answers an upgrade with status and the JSON error, counts it and logs it (at most once a
// second, without the URL, whose query may hold a token).
func (h *HTTP) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	h.cfg.Metrics.UpgradesRefused.WithLabelValues(strconv.Itoa(status)).Inc()
	h.rlog.Info(logUpgrade, "upgrade refused", "status", status, "code", code, "reason", msg, "remote_addr", r.RemoteAddr)
	writeError(w, status, code, msg)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	protocol.WriteHTTPError(w, status, code, msg)
}

// publishRequest is the body of POST /api/publish.
type publishRequest struct {
	Data      json.RawMessage `json:"data"`
	MsgID     string          `json:"msg_id"`
	Channel   *string         `json:"channel"`
	User      *string         `json:"user"`
	Session   *string         `json:"session"`
	Broadcast bool            `json:"broadcast"`
}

// maxAPIBody bounds a publish request.
const maxAPIBody = 1 << 20

// apiAuth checks the API key; it answers and returns false when the call may not go on.
func (h *HTTP) apiAuth(w http.ResponseWriter, r *http.Request) bool {
	if h.cfg.APIKey == "" {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, "the HTTP API is off (no API key configured)")
		return false
	}
	key := auth.BearerToken(r.Header) // the scheme in any case, like /ws
	if key == "" || subtle.ConstantTimeCompare([]byte(key), []byte(h.cfg.APIKey)) != 1 {
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "a valid API key is required")
		return false
	}
	return true
}

// errNotOneObject refuses an API body with more after its JSON object.
var errNotOneObject = errors.New("nothing may follow the object")

// decodeBody reads a JSON body of at most maxAPIBody into v, answering 400 or 413 when it cannot.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, next := dec.Token(); next != io.EOF {
			err = errNotOneObject
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(next, &tooLarge) || errors.Is(next, os.ErrDeadlineExceeded) {
				err = next
			}
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "body over 1 MiB")
	case errors.Is(err, os.ErrDeadlineExceeded): // http.read_timeout passed before the whole body came
		writeError(w, http.StatusRequestTimeout, protocol.CodeBadRequest, "the request body did not arrive in time")
	default:
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "body must be one JSON object: "+err.Error())
	}
	return false
}

// apiPublished is what the API answers for a message the broker accepted: its id, its msg_id (when
// one was given) and, for a channel or user message on a broker with history, its position in
// the channel (the client form, as in its message frames; absent otherwise).
type apiPublished struct {
	ID       string `json:"id"`
	MsgID    string `json:"msg_id,omitempty"`
	Position string `json:"position,omitempty"`
}

// publishOne checks and submits one publish request; it returns what to answer and, on
// failure, the HTTP status and protocol error.
func (h *HTTP) publishOne(ctx context.Context, req *publishRequest) (apiPublished, int, *protocol.Error) {
	msg, perr := apiMessage(req)
	if perr != nil {
		return apiPublished{}, http.StatusBadRequest, perr
	}
	msg.Metadata.Set(protocol.MetaNode, h.cfg.NodeID)
	ctx, position := withSubmission(ctx, nil)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Inbox.Submit(ctx, msg); err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) && pe.Code == protocol.CodeBadRequest {
			return apiPublished{}, http.StatusBadRequest, pe
		}
		return apiPublished{}, http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeUnavailable, "the broker did not accept the message: %v", err)
	}
	out := apiPublished{ID: msg.UUID, MsgID: msg.Metadata.Get(protocol.MetaMsgID)}
	if p := position(); !p.IsZero() {
		var channel string
		switch {
		case req.Channel != nil:
			channel = *req.Channel
		case req.User != nil:
			channel = protocol.UserChannelFor(*req.User)
		}
		out.Position = p.ForChannel(channel)
	}
	return out, http.StatusOK, nil
}

// Publish is POST /api/publish: it publishes through the broker, so a target on any node is reached.
func (h *HTTP) Publish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	out, status, perr := h.publishOne(r.Context(), &req)
	if perr != nil {
		writeError(w, status, perr.Code, perr.Message)
		return
	}
	writeJSON(w, out)
}

// maxBatch bounds the messages of one batch.
const maxBatch = 1000

// Batch is POST /api/batch (an extension): {"messages":[<publish body>, ...]} published in order;
// 200 with one result per message, {"id","msg_id"} or {"error":{"code","message"}}, so that a
// refused message does not hide what was accepted.
func (h *HTTP) Batch(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []publishRequest `json:"messages"`
	}
	if !h.apiAuth(w, r) || !decodeBody(w, r, &req) {
		return
	}
	if len(req.Messages) == 0 || len(req.Messages) > maxBatch {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "messages must hold 1 to 1000 publish requests")
		return
	}
	type result struct {
		ID       string            `json:"id,omitempty"`
		MsgID    string            `json:"msg_id,omitempty"`
		Position string            `json:"position,omitempty"`
		Error    map[string]string `json:"error,omitempty"`
	}
	results := make([]result, len(req.Messages))
	for i := range req.Messages {
		out, _, perr := h.publishOne(r.Context(), &req.Messages[i])
		if perr != nil {
			results[i].Error = map[string]string{"code": perr.Code, "message": perr.Message}
			continue
		}
		results[i] = result{ID: out.ID, MsgID: out.MsgID, Position: out.Position}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"results": results})
}

// apiMessage checks a publish request and makes its message.
func apiMessage(req *publishRequest) (*message.Message, *protocol.Error) {
	if len(req.Data) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "data is required")
	}
	if len(req.MsgID) > protocol.MaxMsgIDLen {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "msg_id must be at most %d characters", protocol.MaxMsgIDLen)
	}
	targets := 0
	for _, set := range []bool{req.Channel != nil, req.User != nil, req.Session != nil, req.Broadcast} {
		if set {
			targets++
		}
	}
	if targets != 1 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "exactly one target is required: channel, user, session or broadcast")
	}
	msg := message.NewMessage(watermill.NewUUID(), []byte(req.Data))
	md := msg.Metadata
	md.Set(protocol.MetaKind, protocol.KindAPI)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	if req.MsgID != "" {
		md.Set(protocol.MetaMsgID, req.MsgID)
		md.Set(protocol.MetaIdempotent, "1")
		msg.UUID = protocol.IdempotentUUID(DedupeKey(msg))
	}
	switch {
	case req.Channel != nil:
		if !protocol.ValidChannel(*req.Channel) {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		}
		md.Set(protocol.MetaTarget, protocol.TargetChannel)
		md.Set(protocol.MetaChannel, *req.Channel)
	case req.User != nil:
		if *req.User == "" || len(*req.User) > protocol.MaxUserLen {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "user must be 1 to %d bytes", protocol.MaxUserLen)
		}
		md.Set(protocol.MetaTarget, protocol.TargetUser)
		md.Set(protocol.MetaUser, *req.User)
	case req.Session != nil:
		if *req.Session == "" || len(*req.Session) > protocol.MaxSessionLen {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "session must be 1 to %d bytes", protocol.MaxSessionLen)
		}
		md.Set(protocol.MetaTarget, protocol.TargetSession)
		md.Set(protocol.MetaSession, *req.Session)
	default:
		md.Set(protocol.MetaTarget, protocol.TargetAll)
	}
	return msg, nil
}

// PresenceMembers is GET /api/presence?channel=&after=&limit=: a page of a presence channel's
// members, {"channel","members":[...],"next"} (next absent on the last page), or, beyond
// presence.max_members, {"channel","connections","users"} without members.
func (h *HTTP) PresenceMembers(w http.ResponseWriter, r *http.Request) {
	if !h.apiAuth(w, r) {
		return
	}
	q := r.URL.Query()
	channel := q.Get("channel")
	if !protocol.ValidChannel(channel) {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		return
	}
	limit, ok := pageLimit(w, q.Get("limit"))
	if !ok {
		return
	}
	page, err := h.cfg.Presence.Members(r.Context(), channel, q.Get("after"), limit)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if page.Counts != nil {
		writeJSON(w, protocol.ChannelStats{Channel: channel, PresenceStats: *page.Counts})
		return
	}
	if page.Members == nil {
		page.Members = []protocol.Member{}
	}
	writeJSON(w, struct {
		Channel string            `json:"channel"`
		Members []protocol.Member `json:"members"`
		Next    string            `json:"next,omitempty"`
	}{channel, page.Members, page.Next})
}

// PresenceStats is GET /api/presence_stats?channel=: {"channel","connections","users"}.
func (h *HTTP) PresenceStats(w http.ResponseWriter, r *http.Request) {
	if !h.apiAuth(w, r) {
		return
	}
	channel := r.URL.Query().Get("channel")
	if !protocol.ValidChannel(channel) {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		return
	}
	st, err := h.cfg.Presence.Stats(r.Context(), channel)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	writeJSON(w, protocol.ChannelStats{Channel: channel, PresenceStats: st})
}

// Channels is GET /api/channels?prefix=&after=&limit= (or pattern= instead of prefix: a
// channel name, or a prefix ending in *): the channels that have members, by name, with their
// counts, {"channels":[{"channel","connections","users"}],"next"}.
func (h *HTTP) Channels(w http.ResponseWriter, r *http.Request) {
	if !h.apiAuth(w, r) {
		return
	}
	q := r.URL.Query()
	prefix := q.Get("prefix")
	exact := ""
	if pattern := q.Get("pattern"); pattern != "" {
		if prefix != "" {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "give prefix or pattern, not both")
			return
		}
		name, star := strings.CutSuffix(pattern, "*")
		if strings.Contains(name, "*") || (name != "" && !protocol.ValidChannel(name)) {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "pattern must be a channel name or a prefix ending in *")
			return
		}
		prefix = name
		if !star {
			exact = name
		}
	}
	limit, ok := pageLimit(w, q.Get("limit"))
	if !ok {
		return
	}
	if limit == 0 {
		limit = protocol.PresencePage
	}
	cs, next, err := h.cfg.Presence.Channels(r.Context(), prefix, q.Get("after"), limit)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if exact != "" { // a pattern without *: that one channel, if it has members
		kept := cs[:0]
		for _, c := range cs {
			if c.Channel == exact {
				kept = append(kept, c)
			}
		}
		cs, next = kept, ""
	}
	if cs == nil {
		cs = []protocol.ChannelStats{}
	}
	writeJSON(w, struct {
		Channels []protocol.ChannelStats `json:"channels"`
		Next     string                  `json:"next,omitempty"`
	}{cs, next})
}

// pageLimit parses a page's limit (empty: 0, the default); it answers 400 and returns false
// when it is not a number from 1 to protocol.MaxPresencePage.
func pageLimit(w http.ResponseWriter, s string) (int, bool) {
	if s == "" {
		return 0, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > protocol.MaxPresencePage {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf("limit must be between 1 and %d", protocol.MaxPresencePage))
		return 0, false
	}
	return n, true
}

// writeAPIError answers a presence query's error: 400 bad_request, 503 unavailable, 500 else.
func writeAPIError(w http.ResponseWriter, err error) {
	code, msg := protocol.CodeOf(err, protocol.CodeInternal)
	status := http.StatusInternalServerError
	switch code {
	case protocol.CodeBadRequest:
		status = http.StatusBadRequest
	case protocol.CodeUnavailable:
		status = http.StatusServiceUnavailable
	case protocol.CodeNotFound:
		status = http.StatusNotFound
	}
	writeError(w, status, code, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// History is GET /api/history?channel=&since=&limit=&reverse=: a page of the channel's history,
// {"channel","messages":[...],"next"}, each message exactly as a live `message` frame (see
// HistoryReader.Page for the order, next and the bounds).
func (h *HTTP) History(w http.ResponseWriter, r *http.Request) {
	if !h.apiAuth(w, r) {
		return
	}
	q := r.URL.Query()
	channel := q.Get("channel")
	if !protocol.ValidChannel(channel) {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		return
	}
	var since protocol.Position
	if s := q.Get("since"); s != "" {
		var err error
		if since, err = protocol.ParseClientPosition(channel, s); err != nil {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "since: "+err.Error())
			return
		}
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > protocol.MaxHistoryPage {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf("limit must be between 1 and %d", protocol.MaxHistoryPage))
			return
		}
		limit = n
	}
	reverse := false
	if s := q.Get("reverse"); s != "" {
		var err error
		if reverse, err = strconv.ParseBool(s); err != nil {
			writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "reverse must be true or false")
			return
		}
	}
	if h.cfg.History == nil || !h.cfg.History.Keeps() {
		writeAPIError(w, errNoHistory)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	page, err := h.cfg.History.Page(ctx, channel, since, limit, reverse)
	if err != nil {
		writeAPIError(w, unavailable("history", err))
		return
	}
	next := ""
	if !page.Next.IsZero() {
		next = page.Next.ForChannel(channel)
	}
	writeJSON(w, struct {
		Channel  string            `json:"channel"`
		Messages []json.RawMessage `json:"messages"`
		Next     string            `json:"next,omitempty"`
	}{channel, page.Frames(channel, channel), next})
}

// Position is GET /api/position?channel=: the channel's current position,
// {"channel","position"}: a subscribe or history read with since set to it gets what is
// published after this call (store it as "read up to here").
func (h *HTTP) Position(w http.ResponseWriter, r *http.Request) {
	if !h.apiAuth(w, r) {
		return
	}
	channel := r.URL.Query().Get("channel")
	if !protocol.ValidChannel(channel) {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		return
	}
	if h.cfg.History == nil || !h.cfg.History.Keeps() {
		writeAPIError(w, errNoHistory)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	pos, err := h.cfg.History.Last(ctx, channel)
	if err != nil {
		writeAPIError(w, unavailable("position", err))
		return
	}
	writeJSON(w, struct {
		Channel  string `json:"channel"`
		Position string `json:"position"`
	}{channel, pos.ForChannel(channel)})
}
