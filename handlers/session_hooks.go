package handlers

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// MaxCallsInFlight bounds the rpc and refresh frames of one connection waiting for the backend
// at once; beyond it a frame is answered rate_limited at once.
const MaxCallsInFlight = 16

// MaxRefreshLead is the longest time before a connection's expiry at which the node calls the
// refresh hook on its own; it calls it a tenth of the lifetime before when that is shorter.
const MaxRefreshLead = 30 * time.Second

// refreshLead is how long before an expiry lifetime away the refresh hook is called.
func refreshLead(lifetime time.Duration) time.Duration {
	return min(MaxRefreshLead, lifetime/10)
}

// ctxHooked marks a client's publish the publish hook allowed (for Authorize).
type ctxHooked struct{}

// ctxCharged marks a client's publish whose rate tokens were taken before the publish hook
// (RateLimiters gives none then).
type ctxCharged struct{}

// subHooked is what the subscribe hook gave one subscription: the member's info and the
// subscription's end.
type subHooked struct {
	info  json.RawMessage
	timer *time.Timer // nil: no end (state.mu)
}

// stop stops the subscription's end. The caller holds state.mu.
func (sh *subHooked) stop() {
	if sh.timer != nil {
		sh.timer.Stop()
	}
}

// hookRequest is a request of hook for the connection c.
func hookRequest(hook string, c *websocket.Conn, st *state) protocol.HookRequest {
	return protocol.HookRequest{Hook: hook, User: c.User, Session: c.ID, Transport: st.transportName(), Info: st.claims().Info}
}

// subscribeHook asks the subscribe hook about channel (the client's name of it). It returns
// the reply when the hook decided and allowed, an error when it denied or failed closed, and
// nil, nil when no hook decided.
func (s *Sessions) subscribeHook(c *websocket.Conn, st *state, channel string) (*protocol.HookReply, error) {
	if channel == protocol.UserChannel || !s.cfg.Hooks.Covers(protocol.HookSubscribe, channel) {
		return nil, nil
	}
	req := hookRequest(protocol.HookSubscribe, c, st)
	req.Channel = channel
	reply, err := s.cfg.Hooks.Decide(st.ctx, req)
	if err != nil {
		return nil, err
	}
	if reply != nil {
		if perr := reply.Err(); perr != nil {
			return nil, perr
		}
	}
	return reply, nil
}

// publishHook asks the publish hook about the publish frame f, as subscribeHook does.
func (s *Sessions) publishHook(c *websocket.Conn, st *state, f *protocol.Frame) (*protocol.HookReply, error) {
	if !s.cfg.Hooks.Covers(protocol.HookPublish, f.Channel) {
		return nil, nil
	}
	req := hookRequest(protocol.HookPublish, c, st)
	req.Channel, req.Data = f.Channel, f.Data
	reply, err := s.cfg.Hooks.Decide(st.ctx, req)
	if err != nil {
		return nil, err
	}
	if reply != nil {
		if perr := reply.Err(); perr != nil {
			return nil, perr
		}
	}
	return reply, nil
}

// hookedJoin records what the subscribe hook gave channel's subscription (its info).
func (s *Sessions) hookedJoin(st *state, channel string, hooked *protocol.HookReply) {
	if hooked == nil || (len(hooked.Info) == 0 && hooked.Expires == 0) {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.subs == nil {
		st.subs = map[string]*subHooked{}
	}
	st.subs[channel] = &subHooked{info: hooked.Info}
}

// armSubExpiry starts the end of channel's subscription the subscribe hook set: then the client
// is unsubscribed with reason expired (and leaves the channel's presence).
func (s *Sessions) armSubExpiry(c *websocket.Conn, st *state, clientName, channel string, hooked *protocol.HookReply) {
	if hooked == nil || hooked.Expires == 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sh := st.subs[channel]
	if sh == nil || st.gone {
		return
	}
	sh.timer = time.AfterFunc(time.Until(time.Unix(hooked.Expires, 0)), func() {
		st.subMu.Lock()
		defer st.subMu.Unlock()
		st.mu.Lock()
		current := st.subs[channel] == sh // not a later subscription of the same channel
		st.mu.Unlock()
		if current {
			s.leaveFor(c, st, "", clientName, channel, protocol.UnsubscribeExpired)
		}
	})
}

// armExpiry sets the connection's expiry to exp (zero: none), replacing the one set before.
// With a refresh hook the node asks it shortly before (refreshLead); else, or when the hook
// does not extend it, the connection is disconnected with token_expired at exp.
func (s *Sessions) armExpiry(c *websocket.Conn, st *state, exp time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s.armExpiryLocked(c, st, exp, s.cfg.Hooks.On(protocol.HookRefresh))
}

// armExpiryLocked is armExpiry; ask says whether the refresh hook is asked first. The caller
// holds st.mu.
func (s *Sessions) armExpiryLocked(c *websocket.Conn, st *state, exp time.Time, ask bool) {
	if st.gone {
		return
	}
	st.stopExpiry()
	st.expires = exp
	if exp.IsZero() {
		return
	}
	left := time.Until(exp)
	disconnect := func() { c.Disconnect(protocol.DisconnectTokenExpired) }
	if ask && left > 0 {
		st.expiry = time.AfterFunc(left-refreshLead(left), func() { s.autoRefresh(c, st, exp) })
		// The disconnect stays armed while the hook is asked: an answer that extends the
		// expiry in time stops it, a slow one does not keep the connection past exp.
		st.expiryEnd = time.AfterFunc(left, disconnect)
		return
	}
	st.expiry = time.AfterFunc(left, disconnect)
}

// stopExpiry stops the expiry's timers. The caller holds st.mu.
func (st *state) stopExpiry() {
	for _, t := range []**time.Timer{&st.expiry, &st.expiryEnd} {
		if *t != nil {
			(*t).Stop()
			*t = nil
		}
	}
}

// autoRefresh asks the refresh hook to extend the connection expiring at exp. An expiry later
// than exp moves it; a deny, no change or a failed call leaves the disconnect at exp.
func (s *Sessions) autoRefresh(c *websocket.Conn, st *state, exp time.Time) {
	req := hookRequest(protocol.HookRefresh, c, st)
	req.Expires = exp.Unix()
	reply, err := s.cfg.Hooks.Decide(st.ctx, req)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.expires.Equal(exp) { // a refresh frame moved it meanwhile
		return
	}
	if err == nil && reply != nil && reply.Deny == nil && reply.Expires > exp.Unix() && time.Now().Before(exp) {
		s.armExpiryLocked(c, st, time.Unix(reply.Expires, 0), true)
		return
	}
	if st.expiryEnd == nil { // the disconnect at exp is armed already otherwise
		s.armExpiryLocked(c, st, exp, false)
	}
}

// take reserves one of the connection's calls in flight; false when all are taken.
func (st *state) take() bool {
	select {
	case st.inflight <- struct{}{}:
		return true
	default:
		return false
	}
}

func (st *state) done() { <-st.inflight }

var errTooManyCalls = protocol.Errorf(protocol.CodeRateLimited, "more than %d rpc and refresh frames waiting for an answer", MaxCallsInFlight)

// rpc answers an rpc frame with the rpc hook's answer, asynchronously (the connection's next
// frames are read meanwhile): rpc_result with the reply's data, or an error frame.
func (s *Sessions) rpc(c *websocket.Conn, st *state, f *protocol.Frame) error {
	if err := checkRPCRate(st); err != nil {
		return err
	}
	if !s.cfg.Hooks.Covers(protocol.HookRPC, f.Method) {
		return protocol.Errorf(protocol.CodeNotFound, "no rpc hook answers method %s", f.Method)
	}
	if !st.take() {
		return errTooManyCalls
	}
	req := hookRequest(protocol.HookRPC, c, st)
	req.Method, req.Data = f.Method, f.Data
	id := f.ID
	go func() { // owned by the connection: st.ctx ends it at Close, the hook's timeout before
		// The slot is given back once the hook's caller returned, even when it outlives the
		// timeout (a caller that ignores its context).
		reply, err := s.cfg.Hooks.decide(st.ctx, req, st.done)
		switch {
		case err != nil:
			s.failWith(c, id, err)
		case reply == nil: // failed, and the hook fails open: as if none covered the method
			s.fail(c, id, protocol.Errorf(protocol.CodeNotFound, "no rpc hook answers method %s", req.Method))
		case reply.Deny != nil:
			s.fail(c, id, reply.Err())
		default:
			c.Send(protocol.RPCResultFrame(id, reply.Data))
		}
	}()
	return nil
}

// failWith answers frame id with err (a *protocol.Error, else internal).
func (s *Sessions) failWith(c *websocket.Conn, id string, err error) {
	code, msg := protocol.CodeOf(err, protocol.CodeInternal)
	s.fail(c, id, &protocol.Error{Code: code, Message: msg})
}

// refresh extends the connection: with a token, checked as at the upgrade (same user, not
// revoked), synchronously; without, by the refresh hook, asynchronously.
func (s *Sessions) refresh(c *websocket.Conn, st *state, f *protocol.Frame) error {
	if err := checkRPCRate(st); err != nil {
		return err
	}
	if f.Token == "" {
		return s.refreshByHook(c, st, f.ID)
	}
	if s.cfg.Verifier == nil {
		return protocol.Errorf(protocol.CodeBadRequest, "tokens are not accepted by this node")
	}
	claims, err := s.cfg.Verifier.Verify(f.Token)
	if err != nil {
		return protocol.Errorf(protocol.CodeUnauthorized, "%v", err)
	}
	// The same user as the token the connection was opened with (not the connect hook's user,
	// which the token does not know); a connection opened without a token has none.
	if st.tokenUser == "" || claims.User != st.tokenUser {
		return protocol.Errorf(protocol.CodeForbidden, "the token is for another user")
	}
	if s.control.Revoked(claims) {
		return protocol.Errorf(protocol.CodeUnauthorized, "token revoked")
	}
	fresh := *claims
	fresh.User = c.User           // the connection's user (the connect hook's, if it set one) stays
	fresh.Info = st.claims().Info // the connection's info (presence entries) stays
	// The connect hook's expires stays a cap: the expiry is the sooner of it and the token's.
	if !st.expiryCap.IsZero() && (fresh.ExpiresAt.IsZero() || st.expiryCap.Before(fresh.ExpiresAt)) {
		fresh.ExpiresAt = st.expiryCap
	}
	st.tok.Store(&fresh)
	s.armExpiry(c, st, fresh.ExpiresAt)
	c.Send(protocol.RefreshedFrame(f.ID, unixOrZero(fresh.ExpiresAt)))
	return nil
}

// refreshByHook answers a refresh frame without a token with the refresh hook's decision.
func (s *Sessions) refreshByHook(c *websocket.Conn, st *state, id string) error {
	if !s.cfg.Hooks.On(protocol.HookRefresh) {
		return protocol.Errorf(protocol.CodeBadRequest, "token is required (no refresh hook is set)")
	}
	if !st.take() {
		return errTooManyCalls
	}
	req := hookRequest(protocol.HookRefresh, c, st)
	st.mu.Lock()
	req.Expires = unixOrZero(st.expires)
	st.mu.Unlock()
	go func() { // owned by the connection: st.ctx ends it at Close
		reply, err := s.cfg.Hooks.decide(st.ctx, req, st.done) // the slot as in rpc
		switch {
		case err != nil:
			s.failWith(c, id, err)
		case reply == nil:
			s.fail(c, id, protocol.Errorf(protocol.CodeBadRequest, "token is required (the refresh hook did not answer)"))
		case reply.Deny != nil:
			s.fail(c, id, reply.Err())
		default:
			st.mu.Lock()
			if reply.Expires > 0 {
				s.armExpiryLocked(c, st, time.Unix(reply.Expires, 0), s.cfg.Hooks.On(protocol.HookRefresh))
			}
			exp := unixOrZero(st.expires)
			st.mu.Unlock()
			c.Send(protocol.RefreshedFrame(id, exp))
		}
	}()
	return nil
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// connected is what the connect hook made of an upgrade.
type connected struct {
	claims    *auth.Claims    // to connect with: the token's, or a copy with the hook's user, info and expiry
	welcome   json.RawMessage // the welcome's data
	expiryCap time.Time       // the hook's expires (zero: none)
}

// connectHook asks the connect hook about an upgrade with claims. It returns what to connect
// with; or the HTTP status and error that refuse the upgrade (403 with the deny's code, 503
// unavailable).
func (s *Sessions) connectHook(r *http.Request, claims *auth.Claims) (connected, int, *protocol.Error) {
	if !s.cfg.Hooks.On(protocol.HookConnect) {
		return connected{claims: claims}, 0, nil
	}
	req := protocol.HookRequest{Hook: protocol.HookConnect, User: claims.User, Transport: transportOf(r), Info: claims.Info,
		Headers: hookHeaders(r.Header.Get, s.cfg.ConnectHeaders)}
	if !claims.ExpiresAt.IsZero() {
		req.Expires = claims.ExpiresAt.Unix()
	}
	reply, err := s.cfg.Hooks.Decide(r.Context(), req)
	if err != nil {
		code, msg := protocol.CodeOf(err, protocol.CodeUnavailable)
		return connected{}, http.StatusServiceUnavailable, &protocol.Error{Code: code, Message: msg}
	}
	if reply == nil { // failed, and the hook fails open
		return connected{claims: claims}, 0, nil
	}
	if perr := reply.Err(); perr != nil {
		return connected{}, http.StatusForbidden, perr
	}
	if len(reply.User) > protocol.MaxUserLen {
		return connected{}, http.StatusServiceUnavailable, protocol.Errorf(protocol.CodeUnavailable, "the connect hook's user is longer than %d bytes", protocol.MaxUserLen)
	}
	var expiryCap time.Time
	out := *claims
	if reply.User != "" && reply.User != claims.User {
		out.User = reply.User
	}
	if len(reply.Info) > 0 {
		out.Info = reply.Info
	}
	if reply.Expires > 0 {
		out.ExpiresAt = time.Unix(reply.Expires, 0)
		expiryCap = out.ExpiresAt
	}
	return connected{claims: &out, welcome: reply.Data, expiryCap: expiryCap}, 0, nil
}
