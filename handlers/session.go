package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// SessionsConfig is what Sessions need.
type SessionsConfig struct {
	NodeID         string
	Hub            Hub
	History        History
	Inbox          Submitter
	PublicChannels []string // patterns anyone may subscribe to
	AnonPublish    []string // patterns anonymous clients may publish to
	DefaultSend    bool     // tokens without a send claim, and anonymous clients, may send
	MaxReplay      int
	// HistoryBounds gives the count and age a resume of channel may reach back (history.channels);
	// zero for no bound of its own. Nil: none.
	HistoryBounds func(channel string) (size int, ttl time.Duration)
	// Reader reads the history for resumes, rewinds and history frames; nil: one made of
	// History, MaxReplay and HistoryBounds.
	Reader         *HistoryReader
	PublishTimeout time.Duration // a subscribe's broker subscription and replay, a publish's ack
	Limits         configs.LimitsConfig
	Events         *Events   // nil: lifecycle events disabled
	Presence       *Presence // nil: presence off
	// Hooks asks the backend (connect, subscribe, publish, refresh, rpc); nil: no hooks.
	Hooks *Hooks
	// ConnectHeaders are the upgrade request's headers the connect hook is given.
	ConnectHeaders []string
	// Verifier checks the tokens of refresh frames (nil: refresh frames need the refresh hook).
	Verifier *auth.Verifier
	Metrics  *metrics.Metrics
	Log      *slog.Logger
}

// Sessions implements websocket.Handler: the protocol of one client connection.
type Sessions struct {
	cfg     SessionsConfig
	history *HistoryReader
	users   *users
	rlog    *ratelog.Logger // rate-limited frames and the disconnects they lead to
	control *Control        // set by NewControl; nil: no control commands
}

// NewSessions makes the connection handler.
func NewSessions(cfg SessionsConfig) *Sessions {
	reader := cfg.Reader
	if reader == nil {
		reader = NewHistoryReader(HistoryConfig{History: cfg.History, MaxReplay: cfg.MaxReplay, Bounds: cfg.HistoryBounds})
	}
	return &Sessions{cfg: cfg, history: reader, users: newUsers(cfg.Limits), rlog: ratelog.New(cfg.Log, ratelog.DefaultInterval)}
}

var _ websocket.Handler = (*Sessions)(nil)

// state is what a connection carries (websocket.Conn.Value).
type state struct {
	tok    atomic.Pointer[auth.Claims] // the claims the connection holds now (a refresh replaces them): claims()
	limits connLimits                  // of this connection
	user   *userState                  // shared by the user's connections on this node
	opened atomic.Bool                 // Open ran: Close releases the reservation
	freed  atomic.Bool                 // the reservation was released
	mu     sync.Mutex
	expiry *time.Timer // the expiry's next step: the refresh hook's call, or the disconnect (mu)
	// expiryEnd disconnects at the expiry while the refresh hook is asked before it (mu): a
	// hook slower than the lead does not keep the connection past its expiry.
	expiryEnd *time.Timer
	member    map[string]bool // the presence channels the connection is a member of (mu)
	gone      bool            // Close ran: a member recorded now must leave at once (mu)
	// applied holds the ids of the control commands applied to the connection (mu): each
	// takes effect once per connection.
	applied map[string]bool
	// subMu serializes the connection's subscribes and unsubscribes: its own frames' and
	// the server-side ones of control commands, which run on the router's goroutine.
	subMu sync.Mutex

	welcome json.RawMessage // the connect hook's data, for the welcome frame (set before Open)
	// transport is how the client is connected, for hook requests: "sse", "stream"; "": websocket.
	transport string
	// tokenUser is the user of the token the connection was opened with ("" without one), the
	// user a refresh frame's token must be for (the connect hook may have set another).
	tokenUser string
	// expiryCap is the connect hook's expires (zero: none), set before Open: a refresh token
	// does not move the expiry past it.
	expiryCap time.Time
	// ctx ends when the connection closes: the hook calls made for it (rpc, refresh) stop.
	ctx    context.Context
	cancel context.CancelFunc
	// inflight bounds the connection's rpc and refresh calls answered asynchronously.
	inflight chan struct{}
	expires  time.Time             // the connection's expiry now (mu); zero: none
	subs     map[string]*subHooked // what the subscribe hook gave each channel (mu)
}

// claims are the connection's claims now.
func (st *state) claims() *auth.Claims { return st.tok.Load() }

// apply reports whether the control command id was not applied to the connection yet, and
// marks it applied.
func (st *state) apply(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.applied[id] {
		return false
	}
	if st.applied == nil {
		st.applied = map[string]bool{}
	}
	st.applied[id] = true
	return true
}

// stateOf is the state Admit made for c; false for a connection Admit did not make (a
// programming error: Upgrade admits every connection it accepts).
func stateOf(c *websocket.Conn) (*state, bool) {
	st, ok := c.Value.(*state)
	return st, ok
}

// LimitError refuses a connection before the upgrade.
type LimitError struct {
	Status int
	Reason string
}

func (e *LimitError) Error() string { return e.Reason }

// Admit decides whether a client with these claims may connect now (connection limits) and
// returns the per-connection value to give websocket.Hub.Accept. Done must be called once the
// connection attempt is over: it releases the reservation when the connection never opened.
func (s *Sessions) Admit(claims *auth.Claims) (value any, done func(), err error) {
	us, limit := s.users.reserve(claims.User)
	switch limit {
	case limitNode:
		return nil, nil, &LimitError{Status: 503, Reason: "this node holds the most connections it may"}
	case limitUser:
		return nil, nil, &LimitError{Status: 429, Reason: "too many connections for this user"}
	}
	st := &state{user: us, limits: connLimits{cfg: &s.cfg.Limits}, inflight: make(chan struct{}, MaxCallsInFlight), tokenUser: claims.User}
	st.tok.Store(claims)
	st.ctx, st.cancel = context.WithCancel(context.Background())
	return st, func() {
		if !st.opened.Load() {
			st.cancel()
			s.release(st)
		}
	}, nil
}

// rebind moves the reservation Admit made for value to claims' user (the connect hook set
// another user), applying limits.connections_per_user to that user; value and claims become
// the connection's. Called before the upgrade, once Admit succeeded.
func (s *Sessions) rebind(value any, claims *auth.Claims) error {
	st, ok := value.(*state)
	if !ok {
		return errors.New("handlers: rebind of a value Admit did not make")
	}
	if st.user != nil && st.user.id != claims.User {
		us, limit := s.users.move(st.user, claims.User)
		if limit != "" {
			return &LimitError{Status: 429, Reason: "too many connections for this user"}
		}
		st.user = us
	}
	st.tok.Store(claims)
	return nil
}

// Reserve counts a connection that Sessions does not hold (a Pusher protocol one) against
// limits.connections_per_node; release gives it back (call it once). Its error is a *LimitError.
func (s *Sessions) Reserve() (release func(), err error) {
	us, limit := s.users.reserve("")
	if limit != "" {
		return nil, &LimitError{Status: 503, Reason: "this node holds the most connections it may"}
	}
	return sync.OnceFunc(func() { s.users.release(us) }), nil
}

func (s *Sessions) release(st *state) {
	if st.freed.CompareAndSwap(false, true) {
		s.users.release(st.user)
	}
}

// Open sends the welcome frame and arms the token expiry. A connection Admit did not make is
// logged and disconnected (policy).
func (s *Sessions) Open(c *websocket.Conn) {
	st, ok := stateOf(c)
	if !ok {
		s.cfg.Log.Error("connection without session state; disconnecting it", "session_id", c.ID)
		c.Disconnect(protocol.DisconnectPolicy)
		return
	}
	st.opened.Store(true)
	if s.cfg.Presence.Sessions() {
		s.cfg.Presence.JoinSession(s.member(c, st))
	}
	s.users.open(st.user, c, st) // from here control commands find the connection
	c.Send(protocol.Encode(protocol.Welcome{Type: protocol.TypeWelcome, Session: c.ID, Node: s.cfg.NodeID, User: c.User, Data: st.welcome}))
	s.cfg.Events.Emit(protocol.Event{Type: protocol.EventConnected, User: c.User, Session: c.ID})
	s.armExpiry(c, st, st.claims().ExpiresAt)
	s.control.opened(c, st) // a revocation made since the upgrade; standing subscriptions
}

// Close stops the expiry timer; the hub already left every channel.
func (s *Sessions) Close(c *websocket.Conn) {
	st, ok := stateOf(c)
	if !ok { // Open disconnected it, and said nothing of it
		return
	}
	st.cancel() // the connection's hook calls
	st.mu.Lock()
	st.stopExpiry()
	for _, sh := range st.subs {
		sh.stop()
	}
	member := st.member
	st.member, st.gone = nil, true
	st.mu.Unlock()
	for channel := range member {
		s.cfg.Presence.Leave(channel, s.memberIn(c, st, channel))
	}
	if s.cfg.Presence.Sessions() {
		s.cfg.Presence.LeaveSession(c.ID)
	}
	s.users.close(st.user, c)
	s.release(st)
	s.cfg.Events.Emit(protocol.Event{Type: protocol.EventDisconnected, User: c.User, Session: c.ID, Reason: c.Reason()})
}

// Frame handles one client frame. It runs on the connection's read goroutine, so frames of one
// connection are handled in order and a publish is acked before the next frame is read.
func (s *Sessions) Frame(c *websocket.Conn, data []byte) {
	st, ok := stateOf(c)
	if !ok { // Open disconnected it: no frame is acted on
		return
	}
	f, perr := protocol.Decode(data)
	if perr != nil {
		s.fail(c, f.ID, perr)
		return
	}
	var err error
	switch f.Type {
	case protocol.TypePing:
		c.Send(protocol.PongFrame(f.ID))
	case protocol.TypeSubscribe:
		err = s.subscribe(c, st, f)
	case protocol.TypeUnsubscribe:
		err = s.unsubscribe(c, st, f)
	case protocol.TypePublish, protocol.TypeSend:
		err = s.publish(c, st, f)
	case protocol.TypePresence, protocol.TypePresenceStats:
		err = s.presence(c, st, f)
	case protocol.TypeHistory:
		err = s.historyFrame(c, st, f)
	case protocol.TypeRPC:
		err = s.rpc(c, st, f)
	case protocol.TypeRefresh:
		err = s.refresh(c, st, f)
	}
	if err != nil {
		code, msg := protocol.CodeOf(err, protocol.CodeInternal)
		s.fail(c, f.ID, &protocol.Error{Code: code, Message: msg})
		if code == protocol.CodeRateLimited {
			s.rateLimited(c, st, f.Type)
		}
	}
}

// errBinaryFrame answers a binary frame.
var errBinaryFrame = protocol.Errorf(protocol.CodeBadRequest, "frames must be JSON text frames")

// Binary answers a binary frame with bad_request: every frame is JSON text. The connection stays.
func (s *Sessions) Binary(c *websocket.Conn) {
	c.Send(protocol.ErrorReply("", errBinaryFrame))
}

func (s *Sessions) fail(c *websocket.Conn, id string, err *protocol.Error) {
	label := err.Code
	if !protocol.GatewayCode(label) {
		label = "hook_deny" // the backend's own codes would make the label's values unbounded
	}
	s.cfg.Metrics.Rejected.WithLabelValues(label).Inc()
	c.Send(protocol.ErrorReply(id, err))
}

// channelName maps a client's channel name to the node's: $user becomes the user's channel.
func channelName(c *websocket.Conn, name string) (string, error) {
	if name != protocol.UserChannel {
		return name, nil
	}
	if c.User == "" {
		return "", protocol.Errorf(protocol.CodeForbidden, "anonymous connections have no $user channel")
	}
	return protocol.UserChannelFor(c.User), nil
}

func (s *Sessions) canSubscribe(st *state, name string) bool {
	if name == protocol.UserChannel {
		return true
	}
	claims := st.claims()
	if claims.HasChannels {
		return matchChannel(claims.Channels, name) || matchChannel(s.cfg.PublicChannels, name)
	}
	return matchChannel(s.cfg.PublicChannels, name)
}

// PusherPrefix starts the native names of Pusher apps' channels (handlers/pusher.NativePrefix).
const PusherPrefix = "pusher:"

// matchChannel is auth.Match for a native client's access (token channels and publish,
// public_channels, anonymous_publish): a Pusher app's channel (pusher:…) is matched only by a
// pattern that starts with "pusher:", so that "*" or "p*" never opens an app's channels (its
// private- and presence- ones are the app's auth endpoint's to grant) to native clients.
func matchChannel(patterns []string, channel string) bool {
	if !strings.HasPrefix(channel, PusherPrefix) {
		return auth.Match(patterns, channel)
	}
	for _, p := range patterns {
		if strings.HasPrefix(p, PusherPrefix) && auth.Match([]string{p}, channel) {
			return true
		}
	}
	return false
}

func (s *Sessions) subscribe(c *websocket.Conn, st *state, f *protocol.Frame) error {
	if err := checkSubscribeRate(st); err != nil {
		return err
	}
	channel, err := channelName(c, f.Channel)
	if err != nil {
		return err
	}
	if f.Rewind > s.cfg.MaxReplay {
		return protocol.Errorf(protocol.CodeBadRequest, "rewind must be at most %d (history.max_replay)", s.cfg.MaxReplay)
	}
	var since protocol.Position
	resume := f.Since != nil && *f.Since != ""
	if resume {
		if since, err = protocol.ParseClientPosition(channel, *f.Since); err != nil {
			return protocol.Errorf(protocol.CodeBadRequest, "since: %v", err)
		}
	}
	// The cheap checks before the hook (again below, under subMu: a control command may
	// subscribe meanwhile).
	if c.Subscribed(channel) {
		return protocol.Errorf(protocol.CodeBadRequest, "already subscribed to %s", f.Channel)
	}
	if err := s.checkSubscriptions(c); err != nil {
		return err
	}
	// The subscribe hook is the authority for the channels it covers; without its answer (no
	// hook, or a failed call of a hook that fails open) the token and public channels decide.
	hooked, err := s.subscribeHook(c, st, f.Channel)
	if err != nil {
		return err
	}
	if hooked == nil && !s.canSubscribe(st, f.Channel) {
		return protocol.Errorf(protocol.CodeForbidden, "not allowed to subscribe to %s", f.Channel)
	}
	st.subMu.Lock()
	defer st.subMu.Unlock()
	if c.Subscribed(channel) {
		return protocol.Errorf(protocol.CodeBadRequest, "already subscribed to %s", f.Channel)
	}
	if err := s.checkSubscriptions(c); err != nil {
		return err
	}
	return s.join(c, st, f.ID, f.Channel, channel, replayFrom{since: since, resume: resume, rewind: f.Rewind}, hooked)
}

// replayFrom is what a subscribe asks to have sent before live messages: what came after since
// (resume), or the newest rewind messages; neither when both are zero.
type replayFrom struct {
	since  protocol.Position
	resume bool
	rewind int
}

// join subscribes c to channel (clientName is the name the client knows it by), replays what
// it missed after since when resuming, records its presence and says subscribed with id. The
// caller holds st.subMu and checked the subscription is allowed; hooked is what the subscribe
// hook answered (nil: none), whose info, data and expiry the subscription takes.
func (s *Sessions) join(c *websocket.Conn, st *state, id, clientName, channel string, from replayFrom, hooked *protocol.HookReply) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	if err := s.cfg.Hub.Join(ctx, c, channel); err != nil {
		return unavailable("subscribe", err)
	}
	// From here live messages of the channel are held for c until Activate.
	cut, recovered, err := s.replay(ctx, c, channel, clientName, from)
	if err != nil {
		s.cfg.Hub.Leave(c, channel)
		return unavailable("replay", err)
	}
	// A member of a presence channel is recorded before its subscribed (it can see itself in
	// presence at once), and its join announced after (its own join frame follows subscribed).
	s.hookedJoin(st, channel, hooked) // before the presence join: the member carries the hook's info
	var announce func()
	if s.cfg.Presence.Enabled(clientName) {
		if announce = s.cfg.Presence.Join(channel, s.memberIn(c, st, channel)); announce != nil {
			st.mu.Lock()
			gone := st.gone // Close runs after the last frame; should it not, leave no ghost
			if !gone {
				if st.member == nil {
					st.member = map[string]bool{}
				}
				st.member[channel] = true
			}
			st.mu.Unlock()
			if gone {
				s.cfg.Presence.Leave(channel, s.memberIn(c, st, channel))
				announce = nil
			}
		}
	}
	sub := protocol.Subscribed{Type: protocol.TypeSubscribed, ID: id, Channel: clientName, Position: cut.ForChannel(channel), Recovered: recovered}
	if hooked != nil {
		sub.Data, sub.Expires = hooked.Data, hooked.Expires
	}
	c.Activate(channel, cut, protocol.Encode(sub))
	s.armSubExpiry(c, st, clientName, channel, hooked)
	s.cfg.Events.Emit(protocol.Event{Type: protocol.EventSubscribed, User: c.User, Session: c.ID, Channel: channel})
	if announce != nil {
		announce()
	}
	return nil
}

// member is the connection's presence entry: its user (the token's sub), session, this node,
// and the token's info claim; nothing else.
func (s *Sessions) member(c *websocket.Conn, st *state) protocol.Member {
	return protocol.Member{User: c.User, Session: c.ID, Node: s.cfg.NodeID, Info: st.claims().Info}
}

// memberIn is the connection's presence entry in channel: with the info the subscribe hook
// gave it there, if any.
func (s *Sessions) memberIn(c *websocket.Conn, st *state, channel string) protocol.Member {
	m := s.member(c, st)
	st.mu.Lock()
	if sh := st.subs[channel]; sh != nil && len(sh.info) > 0 {
		m.Info = sh.info
	}
	st.mu.Unlock()
	return m
}

// mayWatch reports whether c may ask for channel's presence: on a channel the subscribe hook
// covers (the authority there), only while subscribed to it (the hook let it in); elsewhere
// when it may subscribe (token, public channels) or is subscribed.
func (s *Sessions) mayWatch(c *websocket.Conn, st *state, channel string) bool {
	if channel != protocol.UserChannel && s.cfg.Hooks.Covers(protocol.HookSubscribe, channel) {
		return c.Subscribed(channel)
	}
	return s.canSubscribe(st, channel) || c.Subscribed(channel)
}

// presence answers a presence or presence_stats frame, for a channel the client may subscribe
// to; it counts against the subscribe rate.
func (s *Sessions) presence(c *websocket.Conn, st *state, f *protocol.Frame) error {
	if err := checkSubscribeRate(st); err != nil {
		return err
	}
	if !s.mayWatch(c, st, f.Channel) {
		return protocol.Errorf(protocol.CodeForbidden, "not allowed to subscribe to %s", f.Channel)
	}
	ctx := context.Background()
	if f.Type == protocol.TypePresenceStats {
		stats, err := s.cfg.Presence.Stats(ctx, f.Channel)
		if err != nil {
			return err
		}
		c.Send(protocol.PresenceCountsFrame(protocol.TypePresenceStats, f.ID, f.Channel, stats))
		return nil
	}
	page, err := s.cfg.Presence.Members(ctx, f.Channel, f.After, f.Limit)
	if err != nil {
		return err
	}
	if page.Counts != nil {
		c.Send(protocol.PresenceCountsFrame(protocol.TypePresence, f.ID, f.Channel, *page.Counts))
		return nil
	}
	c.Send(protocol.PresenceFrame(f.ID, f.Channel, page.Members, page.Next))
	return nil
}

// replay sends what the channel had after since (when resuming and the history reaches back),
// or its newest messages (rewind), and returns the position after which live messages are new
// to the client, and whether it recovered what was asked.
func (s *Sessions) replay(ctx context.Context, c *websocket.Conn, channel, clientName string, from replayFrom) (protocol.Position, bool, error) {
	switch {
	case from.resume:
		replayed, complete, err := s.history.Resume(ctx, channel, from.since)
		if err != nil {
			return from.since, false, err
		}
		if complete {
			s.sendReplay(c, replayed, channel, clientName)
			if len(replayed) > 0 {
				return positionOf(replayed[len(replayed)-1]), true, nil
			}
			return from.since, true, nil
		}
	case from.rewind > 0:
		msgs, cut, kept, err := s.history.Rewind(ctx, channel, from.rewind)
		if err != nil {
			return cut, false, err
		}
		s.sendReplay(c, msgs, channel, clientName)
		return cut, kept, nil
	}
	cut, err := s.history.Last(ctx, channel)
	return cut, false, err
}

// sendReplay sends msgs (oldest first) to c before its subscribed, a msg_id published through
// two nodes (in the history twice) once.
func (s *Sessions) sendReplay(c *websocket.Conn, msgs []*message.Message, channel, clientName string) {
	for _, frame := range (HistoryPage{Messages: msgs}).Frames(channel, clientName) {
		c.SendWait(frame)
	}
}

// historyFrame answers a history frame: a page of the channel's history, for a channel the
// client may subscribe to. It counts against the subscribe rate.
func (s *Sessions) historyFrame(c *websocket.Conn, st *state, f *protocol.Frame) error {
	if err := checkSubscribeRate(st); err != nil {
		return err
	}
	channel, err := channelName(c, f.Channel)
	if err != nil {
		return err
	}
	if !s.canSubscribe(st, f.Channel) && !c.Subscribed(channel) { // a channel the subscribe hook let it into
		return protocol.Errorf(protocol.CodeForbidden, "not allowed to subscribe to %s", f.Channel)
	}
	var since protocol.Position
	if f.Since != nil && *f.Since != "" {
		if since, err = protocol.ParseClientPosition(channel, *f.Since); err != nil {
			return protocol.Errorf(protocol.CodeBadRequest, "since: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(st.ctx, s.cfg.PublishTimeout)
	defer cancel()
	page, err := s.history.Page(ctx, channel, since, f.Limit, f.Reverse)
	if err != nil {
		return unavailable("history", err)
	}
	next := ""
	if !page.Next.IsZero() {
		next = page.Next.ForChannel(channel)
	}
	c.Send(protocol.HistoryFrame(f.ID, f.Channel, page.Frames(channel, f.Channel), next))
	return nil
}

func (s *Sessions) unsubscribe(c *websocket.Conn, st *state, f *protocol.Frame) error {
	channel, err := channelName(c, f.Channel)
	if err != nil {
		return err
	}
	st.subMu.Lock()
	defer st.subMu.Unlock()
	if !s.leave(c, st, f.ID, f.Channel, channel) {
		return protocol.Errorf(protocol.CodeNotFound, "not subscribed to %s", f.Channel)
	}
	return nil
}

// leave unsubscribes c from channel, says unsubscribed with id and leaves its presence; false
// when c was not subscribed. The caller holds st.subMu.
func (s *Sessions) leave(c *websocket.Conn, st *state, id, clientName, channel string) bool {
	return s.leaveFor(c, st, id, clientName, channel, "")
}

// leaveFor is leave, saying reason in the unsubscribed frame ("" for none).
func (s *Sessions) leaveFor(c *websocket.Conn, st *state, id, clientName, channel, reason string) bool {
	if !s.cfg.Hub.Leave(c, channel) {
		return false
	}
	c.Send(protocol.Encode(protocol.Reply{Type: protocol.TypeUnsubscribed, ID: id, Channel: clientName, Reason: reason}))
	s.cfg.Events.Emit(protocol.Event{Type: protocol.EventUnsubscribed, User: c.User, Session: c.ID, Channel: channel})
	m := s.memberIn(c, st, channel)
	st.mu.Lock()
	member := st.member[channel]
	delete(st.member, channel)
	if sh := st.subs[channel]; sh != nil {
		sh.stop()
		delete(st.subs, channel)
	}
	st.mu.Unlock()
	if member {
		s.cfg.Presence.Leave(channel, m)
	}
	return true
}

func (s *Sessions) publish(c *websocket.Conn, st *state, f *protocol.Frame) error {
	data, hooked, charged := []byte(f.Data), false, false
	if f.Type == protocol.TypePublish && s.cfg.Hooks.Covers(protocol.HookPublish, f.Channel) {
		// The publish rate before the hook call (the router's RateLimit then takes nothing).
		if err := checkPublishRate(st); err != nil {
			return err
		}
		charged = true
		reply, err := s.publishHook(c, st, f)
		if err != nil {
			return err
		}
		if reply != nil {
			hooked = true
			if len(reply.Data) > 0 {
				data = reply.Data
			}
		}
	}
	kind := protocol.KindSend
	if f.Type == protocol.TypePublish {
		kind = protocol.KindPublish
	}
	id, msgID := publishIDs(kind, c.User, c.ID, f.MsgID)
	msg := message.NewMessage(id, data)
	msg.Metadata = make(message.Metadata, 9) // the most set below: made at its size, not grown
	md := msg.Metadata
	md.Set(protocol.MetaUser, c.User)
	md.Set(protocol.MetaSession, c.ID)
	md.Set(protocol.MetaNode, s.cfg.NodeID)
	md.Set(protocol.MetaMsgID, msgID)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	md.Set(protocol.MetaKind, kind)
	if f.Type == protocol.TypePublish {
		md.Set(protocol.MetaTarget, protocol.TargetChannel)
		md.Set(protocol.MetaChannel, f.Channel)
	} else {
		md.Set(protocol.MetaTarget, protocol.TargetServices)
	}
	if f.MsgID != "" {
		md.Set(protocol.MetaIdempotent, "1")
	}
	ctx, position := withSubmission(context.Background(), st)
	if hooked {
		ctx = context.WithValue(ctx, ctxHooked{}, true)
	}
	if charged {
		ctx = context.WithValue(ctx, ctxCharged{}, true)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if err := s.cfg.Inbox.Submit(ctx, msg); err != nil {
		return unavailable("publish", err)
	}
	pos := ""
	if p := position(); !p.IsZero() {
		pos = p.ForChannel(f.Channel)
	}
	c.Send(protocol.AckPositionFrame(f.ID, msgID, pos))
	return nil
}

// publishIDs are a client message's UUID and msg_id: with the client's msg_id, the UUID derived
// from its idempotency key (DedupeKey: kind, user, session and msg_id), the same on every
// attempt; without, a random UUID, which is its msg_id too (no random UUID is drawn for a
// message that has a msg_id).
func publishIDs(kind, user, session, msgID string) (id, outMsgID string) {
	if msgID != "" {
		return protocol.IdempotentUUID(protocol.DedupeKey(kind, user, session, msgID)), msgID
	}
	id = watermill.NewUUID()
	return id, id
}

// unavailable keeps protocol errors as they are and turns anything else into `unavailable`.
func unavailable(what string, err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	var panicked wmw.RecoveredPanicError
	if errors.As(err, &panicked) {
		return protocol.Errorf(protocol.CodeInternal, "%s failed inside the node", what)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return protocol.Errorf(protocol.CodeUnavailable, "%s: the broker did not answer in time", what)
	}
	return protocol.Errorf(protocol.CodeUnavailable, "%s: %v", what, err)
}

// Authorize is the router's auth check for submitted messages: a client publishes only where its
// token (or, for anonymous clients, the configuration) allows, and sends to the services only when
// its token's send claim (or, without one, auth.default_send) allows. API messages carry no claims.
func (s *Sessions) Authorize(msg *message.Message) error {
	st, ok := stateFrom(msg.Context())
	if !ok {
		return nil
	}
	switch msg.Metadata.Get(protocol.MetaKind) {
	case protocol.KindSend:
		return s.authorizeSend(st.claims())
	case protocol.KindPublish:
	default:
		return nil
	}
	claims := st.claims()
	ch := msg.Metadata.Get(protocol.MetaChannel)
	if ch == protocol.UserChannel || ch == "" || (ch[0] == '$') {
		return protocol.Errorf(protocol.CodeForbidden, "no client may publish to %s", ch)
	}
	if hooked, _ := msg.Context().Value(ctxHooked{}).(bool); hooked {
		return nil // the publish hook, the authority for this channel, allowed it
	}
	allowed := claims.Publish
	if claims.User == "" {
		allowed = s.cfg.AnonPublish
	}
	if !matchChannel(allowed, ch) {
		return protocol.Errorf(protocol.CodeForbidden, "not allowed to publish to %s", ch)
	}
	return nil
}

// authorizeSend lets a client send to the services when its token says "send": true, or, for
// tokens without the claim and anonymous clients, when auth.default_send is set.
func (s *Sessions) authorizeSend(claims *auth.Claims) error {
	allowed := s.cfg.DefaultSend
	if claims.HasSend {
		allowed = claims.Send
	}
	if !allowed {
		return protocol.Errorf(protocol.CodeForbidden, "not allowed to send (the token has no \"send\": true)")
	}
	return nil
}

// RateLimiters are the limiters a submitted message counts against: its connection's and its
// user's (none for the API and lifecycle events, nor for a publish that took its tokens before
// the publish hook).
func RateLimiters(msg *message.Message) []*rate.Limiter {
	st, ok := stateFrom(msg.Context())
	if !ok {
		return nil
	}
	if charged, _ := msg.Context().Value(ctxCharged{}).(bool); charged {
		return nil // taken before the publish hook
	}
	var out []*rate.Limiter
	if l := st.limits.publishLimiter(); l != nil {
		out = append(out, l)
	}
	if st.user != nil && st.user.limiter != nil {
		out = append(out, st.user.limiter)
	}
	return out
}

// DedupeKey keys a submitted message by its sender and msg_id ("" when it has no msg_id).
func DedupeKey(msg *message.Message) string {
	md := msg.Metadata
	return protocol.DedupeKey(md.Get(protocol.MetaKind), md.Get(protocol.MetaUser), md.Get(protocol.MetaSession), md.Get(protocol.MetaMsgID))
}

// tooOld reports whether the broker stored m longer ago than ttl. A message without a stored
// time (a broker that does not say) falls back to when the gateway or SDK published it, and
// counts as young when neither is known.
func tooOld(m *message.Message, ttl time.Duration) bool {
	var at time.Time
	if ms, err := strconv.ParseInt(m.Metadata.Get(protocol.MetaStoredAt), 10, 64); err == nil {
		at = time.UnixMilli(ms)
	} else if ns, err := strconv.ParseInt(m.Metadata.Get(protocol.MetaSentAt), 10, 64); err == nil {
		at = time.Unix(0, ns)
	} else {
		return false
	}
	return time.Since(at) > ttl
}
