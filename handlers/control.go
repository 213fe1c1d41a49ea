package handlers

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/websocket"
)

// DefaultControlRefresh is how often a node reads the control store again: the bound within
// which a node that missed a control message (a broker outage) still enforces a revocation on
// its open connections and applies a standing subscription.
const DefaultControlRefresh = 10 * time.Second

// ControlConfig is what Control needs.
type ControlConfig struct {
	Sessions *Sessions
	Hub      Hub
	Broker   transports.Broker       // where the API's commands go (IssueControl)
	Store    transports.ControlStore // nil: the broker keeps no control state
	Refresh  time.Duration           // how often the store is read again; 0: DefaultControlRefresh
	Timeout  time.Duration           // of one store read or write, and of a server-side subscribe
	Log      *slog.Logger
}

// Control applies the backend's control commands (protocol.Control) to this node's
// connections: the ones that arrive on protocol.TopicControl (Handle, a router handler every
// node runs) and the standing ones of the broker's control store, read at Start and every
// Refresh, which is how a node started later knows them. Safe for concurrent use; Start and
// Close are safe twice.
type Control struct {
	cfg    ControlConfig
	recent *recent // command ids handled lately: a redelivered message is skipped

	mu    sync.Mutex
	users map[string]protocol.Control            // revocations by user
	jtis  map[string]protocol.Control            // revocations by jti
	subs  map[string]map[string]protocol.Control // standing subscriptions: user -> channel -> subscribe

	others []UserDisconnecter // connections Sessions does not hold (Also)

	startOnce, closeOnce sync.Once
	stop                 chan struct{}
	wg                   sync.WaitGroup
}

// UserDisconnecter disconnects a user's connections that Sessions does not hold (the Pusher
// protocol's signed-in connections): Control calls it for every disconnect command naming a
// user. Safe for concurrent use.
type UserDisconnecter interface {
	DisconnectUser(user string, d protocol.Disconnect)
}

// Also adds connections that Sessions does not hold to the disconnect commands. Call it before
// Start (it is not safe concurrently with commands).
func (c *Control) Also(d UserDisconnecter) {
	if c != nil && d != nil {
		c.others = append(c.others, d)
	}
}

// NewControl makes the control of the node of cfg.Sessions. It starts nothing.
func NewControl(cfg ControlConfig) *Control {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultControlRefresh
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = transports.DefaultPublishTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Control{cfg: cfg, recent: newRecent(10 * time.Minute), users: map[string]protocol.Control{},
		jtis: map[string]protocol.Control{}, subs: map[string]map[string]protocol.Control{}, stop: make(chan struct{})}
	cfg.Sessions.control = c
	return c
}

// Start reads the control store once (so that upgrades from now on are checked against every
// stored revocation; a failed read is logged and retried on the refresh) and starts reading it
// every Refresh, until Close.
func (c *Control) Start(ctx context.Context) {
	if c == nil || c.cfg.Store == nil {
		return
	}
	c.startOnce.Do(func() {
		select {
		case <-c.stop:
			return // closed before it started
		default:
		}
		if err := c.refresh(ctx); err != nil {
			c.cfg.Log.Warn("control store not read; retrying", "error", err)
		}
		c.wg.Add(1)
		go c.loop()
	})
}

// Close stops the refresh and waits for it. Safe to call twice, and without Start.
func (c *Control) Close() {
	if c == nil {
		return
	}
	c.closeOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func (c *Control) loop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.refresh(context.Background()); err != nil {
				c.cfg.Log.Warn("control store not read", "error", err)
			}
		}
	}
}

// refresh reads the store: revocations are added (none is taken back before its until, which
// drops it from the store too), standing subscriptions replaced by the stored ones; then both
// are applied to the open connections that did not get them yet.
func (c *Control) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	records, err := c.cfg.Store.ListControl(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	subs := map[string]map[string]protocol.Control{}
	var revokes []protocol.Control
	for key, raw := range records {
		cmd, err := protocol.DecodeControl(raw)
		if err != nil {
			c.cfg.Log.Warn("control record not understood; ignored", "key", key, "error", err)
			continue
		}
		switch {
		case cmd.Expired(now):
			_ = c.cfg.Store.DeleteControl(ctx, key) // any node may drop it; a failure is retried next time
		case cmd.Kind == protocol.ControlRevoke:
			revokes = append(revokes, cmd)
		case cmd.Kind == protocol.ControlSubscribe:
			if subs[cmd.User] == nil {
				subs[cmd.User] = map[string]protocol.Control{}
			}
			subs[cmd.User][cmd.Channel] = cmd
		}
	}
	c.mu.Lock()
	c.subs = subs
	c.mu.Unlock()
	for _, r := range revokes {
		c.revoke(r)
	}
	for _, bySub := range subs {
		for _, s := range bySub {
			c.subscribe(s, false)
		}
	}
	return nil
}

// Handle is the router handler of protocol.TopicControl: it applies one command to this node's
// connections (each command once per connection).
func (c *Control) Handle(msg *message.Message) error {
	cmd, err := protocol.DecodeControl(msg.Payload)
	if err != nil || cmd.ID == "" {
		c.cfg.Log.Warn("control command not understood; dropped", "message_uuid", msg.UUID, "error", err)
		return nil
	}
	if c.recent.seen(cmd.ID) {
		return nil
	}
	switch cmd.Kind {
	case protocol.ControlDisconnect:
		c.disconnect(cmd)
	case protocol.ControlSubscribe:
		c.subscribe(cmd, true)
	case protocol.ControlUnsubscribe:
		c.unsubscribe(cmd)
	case protocol.ControlRevoke:
		c.revoke(cmd)
	default:
		c.cfg.Log.Warn("control command of unknown kind dropped", "kind", cmd.Kind, "id", cmd.ID)
	}
	return nil
}

// Issue checks cmd, records it in the store when it stands, and publishes it to every node (the
// HTTP API's commands). Its error is a *protocol.Error: bad_request, or unavailable.
func (c *Control) Issue(ctx context.Context, cmd *protocol.Control) error {
	if c == nil {
		return protocol.Errorf(protocol.CodeUnavailable, "this node takes no control commands")
	}
	if err := cmd.Prepare(time.Now()); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := transports.IssueControl(ctx, c.cfg.Broker, cmd); err != nil {
		if errors.Is(err, transports.ErrNoControlStore) {
			return protocol.Errorf(protocol.CodeUnavailable, "%v", err)
		}
		return protocol.Errorf(protocol.CodeUnavailable, "the broker did not take the command: %v", err)
	}
	return nil
}

func (c *Control) disconnect(cmd protocol.Control) {
	d := cmd.Disconnect()
	if cmd.Session != "" {
		if conn, ok := c.cfg.Hub.Session(cmd.Session); ok {
			conn.Disconnect(d)
		}
		return
	}
	for _, cs := range c.cfg.Sessions.users.conns(cmd.User) {
		if cs.st.apply(cmd.ID) {
			cs.c.Disconnect(d)
		}
	}
	for _, o := range c.others {
		o.DisconnectUser(cmd.User, d)
	}
}

func (c *Control) subscribe(cmd protocol.Control, record bool) {
	if record {
		c.mu.Lock()
		if c.subs[cmd.User] == nil {
			c.subs[cmd.User] = map[string]protocol.Control{}
		}
		c.subs[cmd.User][cmd.Channel] = cmd
		c.mu.Unlock()
	}
	for _, cs := range c.cfg.Sessions.users.conns(cmd.User) {
		c.subscribeConn(cs.c, cs.st, cmd)
	}
}

// subscribeConn subscribes one connection to a command's channel, once per connection: a
// connection that unsubscribed itself since is not subscribed again by the same command.
func (c *Control) subscribeConn(conn *websocket.Conn, st *state, cmd protocol.Control) {
	st.subMu.Lock()
	defer st.subMu.Unlock()
	if conn.Closing() || !st.apply(cmd.ID) || conn.Subscribed(cmd.Channel) {
		return
	}
	s := c.cfg.Sessions
	if err := s.checkSubscriptions(conn); err != nil {
		c.cfg.Log.Warn("server-side subscribe skipped", "session_id", conn.ID, "channel", cmd.Channel, "error", err)
		return
	}
	if err := s.join(conn, st, "", cmd.Channel, cmd.Channel, replayFrom{}, nil); err != nil {
		c.cfg.Log.Warn("server-side subscribe failed", "session_id", conn.ID, "channel", cmd.Channel, "error", err)
		return
	}
	if conn.Closing() { // closed while joining: the hub may have left its channels before this one
		c.cfg.Hub.Leave(conn, cmd.Channel)
	}
}

func (c *Control) unsubscribe(cmd protocol.Control) {
	c.mu.Lock()
	delete(c.subs[cmd.User], cmd.Channel)
	if len(c.subs[cmd.User]) == 0 {
		delete(c.subs, cmd.User)
	}
	c.mu.Unlock()
	for _, cs := range c.cfg.Sessions.users.conns(cmd.User) {
		cs.st.subMu.Lock()
		if cs.st.apply(cmd.ID) {
			c.cfg.Sessions.leave(cs.c, cs.st, "", cmd.Channel, cmd.Channel)
		}
		cs.st.subMu.Unlock()
	}
}

// revoke records a revocation and disconnects the open connections it covers (revoked).
func (c *Control) revoke(cmd protocol.Control) {
	if cmd.Expired(time.Now()) {
		return
	}
	c.mu.Lock()
	if cmd.JTI != "" {
		c.jtis[cmd.JTI] = cmd
	} else if old, ok := c.users[cmd.User]; !ok || !old.Before.After(cmd.Before) || old.Until.Before(cmd.Until) {
		c.users[cmd.User] = cmd // the newer one (a store read may bring an older copy)
	}
	c.mu.Unlock()
	conns := c.cfg.Sessions.users.all()
	if cmd.JTI == "" {
		conns = c.cfg.Sessions.users.conns(cmd.User)
	}
	for _, cs := range conns {
		if c.Revoked(cs.st.claims()) {
			cs.c.Disconnect(protocol.DisconnectRevoked)
		}
	}
}

// Revoked reports whether a token with these claims is revoked now: its jti is, or its user's
// tokens issued before a time are (a token without iat counts as issued before). Nil-safe.
func (c *Control) Revoked(claims *auth.Claims) bool {
	if c == nil || claims == nil {
		return false
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if claims.JTI != "" {
		if r, ok := c.jtis[claims.JTI]; ok && r.Until.After(now) {
			return true
		}
	}
	if claims.User == "" {
		return false
	}
	r, ok := c.users[claims.User]
	return ok && r.Until.After(now) && (claims.IssuedAt.IsZero() || claims.IssuedAt.Before(r.Before))
}

// opened is called by Sessions.Open once the connection can be found: it disconnects it when its
// token was revoked since the upgrade, and applies the user's standing subscriptions. Nil-safe.
func (c *Control) opened(conn *websocket.Conn, st *state) {
	if c == nil {
		return
	}
	if c.Revoked(st.claims()) {
		conn.Disconnect(protocol.DisconnectRevoked)
		return
	}
	if conn.User == "" {
		return
	}
	c.mu.Lock()
	var cmds []protocol.Control
	for _, cmd := range c.subs[conn.User] {
		cmds = append(cmds, cmd)
	}
	c.mu.Unlock()
	for _, cmd := range cmds {
		c.subscribeConn(conn, st, cmd)
	}
}
