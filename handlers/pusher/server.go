// Package pusher serves the Pusher Channels protocol (version 7, as pusher-js speaks it) and
// the Pusher HTTP API on a node, over the same hub, router and broker as the native protocol
// (docs/pusher.md). An app's channels are native channels by one rule (names.go), so Pusher
// clients, native clients and services share them; presence goes through handlers.Presence,
// so member lists are the cluster's.
package pusher

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Hub is what the Pusher protocol needs of the WebSocket hub.
type Hub interface {
	Accept(w http.ResponseWriter, r *http.Request, id websocket.Identity) error
	Draining() bool
	Join(ctx context.Context, c *websocket.Conn, channel string) error
	Leave(c *websocket.Conn, channel string) bool
}

// Config is what the Pusher protocol needs.
type Config struct {
	NodeID          string
	Apps            []configs.PusherApp
	ActivityTimeout time.Duration
	Hub             Hub
	Inbox           handlers.Submitter
	Presence        *handlers.Presence // must keep presence: every app channel is a presence channel of the node's
	Control         *handlers.Control  // terminate_connections issues its disconnect commands; nil: 503
	Events          *handlers.Events   // client_event lifecycle events, for apps with webhooks; nil: none
	Limits          configs.LimitsConfig
	// Reserve counts a connection against limits.connections_per_node (handlers.Sessions.Reserve);
	// nil: no count.
	Reserve func() (release func(), err error)
	Timeout time.Duration // of a subscribe's broker calls, a publish's ack
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time // the clock of request signatures; nil: time.Now
}

// app is a configured app.
type app struct {
	configs.PusherApp
	clientEvents bool
}

// Server serves the Pusher protocol: it is the websocket.Handler of Pusher connections, the
// encoder of channel messages for them (Encode), and the HTTP endpoints (Routes). Safe for
// concurrent use.
type Server struct {
	cfg    Config
	byKey  map[string]*app
	byID   map[string]*app
	roster *roster
	users  *userIndex
	rlog   *ratelog.Logger // refusals for a rate and the disconnects they lead to
}

// New makes the server; it starts nothing.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, byKey: map[string]*app{}, byID: map[string]*app{}, roster: newRoster(), users: newUserIndex(cfg.Limits),
		rlog: ratelog.New(cfg.Log, ratelog.DefaultInterval)}
	for _, a := range cfg.Apps {
		x := &app{PusherApp: a, clientEvents: a.ClientEvents != nil && *a.ClientEvents}
		s.byKey[a.Key], s.byID[a.ID] = x, x
	}
	return s
}

var _ websocket.Handler = (*Server)(nil)
var _ websocket.Translator = (*Server)(nil)

// PresencePatterns are the presence.channels and presence.join_leave patterns the apps need:
// every app channel is recorded (for the channel queries), and presence- channels announce their
// joins and leaves (member_added, member_removed).
func PresencePatterns(apps []configs.PusherApp) (channels, joinLeave []string) {
	if len(apps) == 0 {
		return nil, nil
	}
	channels = []string{NativePrefix + "*"}
	for _, a := range apps {
		joinLeave = append(joinLeave, AppPrefix(a.ID)+prefixPresence+"*")
	}
	return channels, joinLeave
}

// Routes registers the connection endpoint and the HTTP API on mux.
func (s *Server) Routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /app/{key}", s.Upgrade)
	mux.HandleFunc("POST /apps/{id}/events", s.Events)
	mux.HandleFunc("POST /apps/{id}/batch_events", s.BatchEvents)
	mux.HandleFunc("GET /apps/{id}/channels", s.Channels)
	mux.HandleFunc("GET /apps/{id}/channels/{name}", s.Channel)
	mux.HandleFunc("GET /apps/{id}/channels/{name}/users", s.Users)
	mux.HandleFunc("POST /apps/{id}/users/{user}/terminate_connections", s.TerminateConnections)
}

// newSocketID is a Pusher socket_id, \d+\.\d+: two random numbers.
func newSocketID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	hi := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
	lo := binary.BigEndian.Uint32(b[4:]) & 0x7fffffff
	return strconv.FormatUint(uint64(hi), 10) + "." + strconv.FormatUint(uint64(lo), 10)
}

// conn is a Pusher connection's state (websocket.Conn.Value).
type conn struct {
	app     *app   // nil: refused (unknown app, bad protocol); Open says why and closes
	refuse  int    // the pusher:error code Open sends and closes with
	message string // its message

	limiter *eventLimiter
	limits  connLimits
	release func() // gives back the node's connection count (Close)

	mu   sync.Mutex
	subs map[string]*subscription // by Pusher name
	user string                   // the signed-in user's id (pusher:signin); "": not signed in
	gone bool                     // Close ran
}

// subscription is one channel of a Pusher connection.
type subscription struct {
	native string
	userID string // presence channels: the member's user_id
	member protocol.Member
	roster bool // holds a reference of the roster's channel
}

func stateOf(c *websocket.Conn) *conn {
	st, _ := c.Value.(*conn)
	return st
}

// Upgrade is GET /app/{key}: the Pusher connection. An unknown key or protocol is upgraded
// all the same, then told with pusher:error and closed with its code, as Pusher does.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Hub.Draining() {
		http.Error(w, "node is shutting down", http.StatusServiceUnavailable)
		return
	}
	st := &conn{subs: map[string]*subscription{}}
	key := r.PathValue("key")
	a := s.byKey[key]
	proto := r.URL.Query().Get("protocol")
	v, perr := strconv.Atoi(proto)
	switch {
	case a == nil:
		st.refuse, st.message = CodeUnknownApp, "App key "+key+" does not exist on this gateway"
	case proto == "":
		st.refuse, st.message = CodeNoProtocol, "No protocol version supplied"
	case perr != nil || v < minProtocolVersion || v > protocolVersion:
		st.refuse, st.message = CodeBadProtocol, "Unsupported protocol version "+proto
	default:
		st.app = a
		st.limiter = newEventLimiter(a.ClientEventRate)
		st.limits = newConnLimits(s.cfg.Limits)
	}
	if st.app != nil && s.cfg.Reserve != nil {
		release, err := s.cfg.Reserve()
		if err != nil {
			var le *handlers.LimitError
			status := http.StatusServiceUnavailable
			if errors.As(err, &le) {
				status = le.Status
			}
			http.Error(w, err.Error(), status)
			return
		}
		st.release = release
	}
	id := websocket.Identity{Session: newSocketID(), Value: st, Handler: s, Format: websocket.FormatPusher}
	err := s.cfg.Hub.Accept(w, r, id)
	if err != nil && st.release != nil {
		st.release() // never opened: Close will not run
	}
	var refused *websocket.UpgradeError
	switch {
	case errors.Is(err, websocket.ErrOriginRefused):
		http.Error(w, "origin not allowed", http.StatusForbidden)
	case errors.Is(err, websocket.ErrHubClosed):
		http.Error(w, "node is shutting down", http.StatusServiceUnavailable)
	case errors.As(err, &refused):
		http.Error(w, refused.Error(), refused.Status)
	case err != nil:
		s.cfg.Log.Debug("pusher upgrade failed", "error", err)
	}
}

// goodbye is a Pusher disconnect: pusher:error, then the close with its code.
type goodbye struct {
	code   int
	msg    string
	reason string
}

func (g goodbye) Frame() []byte       { return errorFrame(g.code, g.msg) }
func (g goodbye) CloseCode() int      { return g.code }
func (g goodbye) CloseReason() string { return g.reason }

// Goodbye is websocket.Translator: the node's disconnects in Pusher's codes (4200: reconnect
// now; 4100: back off and reconnect; 4009: do not come back).
func (s *Server) Goodbye(_ *websocket.Conn, g websocket.Goodbye) websocket.Goodbye {
	if pg, ok := g.(goodbye); ok {
		return pg
	}
	d, ok := g.(protocol.Disconnect)
	if !ok {
		return g
	}
	switch {
	case d.Code == protocol.DisconnectCodeSlowConsumer:
		return goodbye{CodeOverCapacity, d.Reason, d.Code}
	case d.Reconnect:
		return goodbye{CodeReconnect, d.Reason, d.Code}
	}
	return goodbye{CodeUnauthorized, d.Reason, d.Code}
}

// Open says connection_established, or why the connection is refused.
func (s *Server) Open(c *websocket.Conn) {
	st := stateOf(c)
	if st == nil || st.app == nil {
		code, msg := CodeUnknownApp, "unknown app"
		if st != nil {
			code, msg = st.refuse, st.message
		}
		c.Disconnect(goodbye{code, msg, "pusher_refused"})
		return
	}
	c.Send(connectedFrame(c.ID, int(s.cfg.ActivityTimeout/time.Second)))
}

// Binary answers a binary frame: the protocol is JSON text.
func (s *Server) Binary(c *websocket.Conn) {
	c.Send(errorFrame(0, "frames must be JSON text frames"))
}

// Close leaves the presence of every channel the connection was on (the hub left them).
func (s *Server) Close(c *websocket.Conn) {
	st := stateOf(c)
	if st == nil {
		return
	}
	if st.release != nil {
		st.release()
	}
	st.mu.Lock()
	subs, user := st.subs, st.user
	st.subs, st.gone = nil, true
	st.mu.Unlock()
	if user != "" {
		s.users.remove(UserKey(st.app.ID, user), c)
	}
	for _, sub := range subs {
		s.left(sub)
	}
}

// left undoes what a subscription recorded, once the hub left its channel.
func (s *Server) left(sub *subscription) {
	s.cfg.Presence.Leave(sub.native, sub.member)
	if sub.roster {
		s.roster.release(sub.native)
	}
}

// withdraw undoes what a subscription recorded but never announced (a refused subscribe).
func (s *Server) withdraw(sub *subscription) {
	s.cfg.Presence.Withdraw(sub.native, sub.member)
	if sub.roster {
		s.roster.release(sub.native)
	}
}

// rateLimited follows a refusal of c's frame for a rate (a subscribe over limits.subscribe_rate,
// a client event over client_event_rate or limits.publish_rate): it is logged (at most once a
// second) and takes one strike, as a native rate_limited answer does; a connection with none
// left is disconnected (pusher:error 4009, behind the refusal).
func (s *Server) rateLimited(c *websocket.Conn, st *conn, frame string) {
	s.rlog.Info("pusher_rate_limited", "pusher frame rate limited", "session_id", c.ID, "frame", frame)
	if st.limits.strikes == nil {
		st.limits.strikes = newStrikes(s.cfg.Limits)
	}
	if st.limits.strikes == nil || st.limits.strikes.Allow() {
		return
	}
	s.rlog.Info("pusher_rate_limited_disconnect", "pusher connection disconnected: it kept sending over its rate limits", "session_id", c.ID)
	c.Disconnect(protocol.DisconnectRateLimited)
}
