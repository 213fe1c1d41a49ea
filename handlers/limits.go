package handlers

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// connLimits are the per-connection limiters of limits.*, made at their first use: most
// connections never publish nor call, and hold none (a new rate.Limiter is full, so one made
// late allows exactly what one made at connect would). A rate of 0 or less is no limit (nil).
// Safe for concurrent use.
type connLimits struct {
	cfg       *configs.LimitsConfig // the Sessions' own: never changes
	publish   lazyLimiter           // publish and send frames (counted by the router's RateLimit)
	subscribe lazyLimiter           // subscribe frames
	rpc       lazyLimiter           // rpc and refresh frames (limits.rpc_rate), before any hook call
	// strikes counts rate_limited answers (none left: the connection is disconnected). It is
	// made at the first one (most connections never get one) and used only by the
	// connection's frames, which are handled one at a time.
	strikes *rate.Limiter
}

func (cl *connLimits) publishLimiter() *rate.Limiter {
	return cl.publish.get(cl.cfg.PublishRate, cl.cfg.PublishBurst)
}

func (cl *connLimits) subscribeLimiter() *rate.Limiter {
	return cl.subscribe.get(cl.cfg.SubscribeRate, cl.cfg.SubscribeBurst)
}

func (cl *connLimits) rpcLimiter() *rate.Limiter {
	return cl.rpc.get(cl.cfg.RPCRate, max(cl.cfg.RPCBurst, 1))
}

// lazyLimiter is a rate.Limiter made by its first get.
type lazyLimiter struct{ p atomic.Pointer[rate.Limiter] }

// get returns the limiter, making it at the first call; nil when r is not above 0.
func (l *lazyLimiter) get(r float64, burst int) *rate.Limiter {
	if r <= 0 {
		return nil
	}
	if lim := l.p.Load(); lim != nil {
		return lim
	}
	lim := rate.NewLimiter(rate.Limit(r), burst)
	if l.p.CompareAndSwap(nil, lim) {
		return lim
	}
	return l.p.Load() // another goroutine made it first
}

// newStrikes is a full strikes limiter for l, nil when a connection is never disconnected.
func newStrikes(l configs.LimitsConfig) *rate.Limiter {
	if l.RateLimitedDisconnect <= 0 || l.RateLimitedWindow <= 0 {
		return nil
	}
	every := max(l.RateLimitedWindow/time.Duration(l.RateLimitedDisconnect), time.Nanosecond)
	return rate.NewLimiter(rate.Every(every), l.RateLimitedDisconnect)
}

// checkSubscribeRate applies the subscribe rate to a subscribe frame of c: every subscribe
// frame counts, refused or not.
func checkSubscribeRate(st *state) error {
	if l := st.limits.subscribeLimiter(); l != nil && !l.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many subscribes; slow down")
	}
	return nil
}

// checkRPCRate applies limits.rpc_rate to an rpc or refresh frame: every such frame counts,
// refused or not, before any hook call.
func checkRPCRate(st *state) error {
	if l := st.limits.rpcLimiter(); l != nil && !l.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many rpc and refresh frames; slow down")
	}
	return nil
}

// checkPublishRate takes a publish frame's tokens (the connection's publish rate and its user's)
// before the publish hook is called, as the router's RateLimit would after it.
func checkPublishRate(st *state) error {
	if l := st.limits.publishLimiter(); l != nil && !l.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many messages; slow down")
	}
	if st.user != nil && st.user.limiter != nil && !st.user.limiter.Allow() {
		return protocol.Errorf(protocol.CodeRateLimited, "too many messages; slow down")
	}
	return nil
}

// checkSubscriptions refuses a new subscription of c beyond limits.subscriptions_per_connection.
func (s *Sessions) checkSubscriptions(c *websocket.Conn) error {
	if most := s.cfg.Limits.SubscriptionsPerConnection; most > 0 && c.Subscriptions() >= most {
		return protocol.Errorf(protocol.CodeLimitExceeded, "a connection may hold at most %d subscriptions", most)
	}
	return nil
}

// Log kinds of Sessions (ratelog).
const (
	logRateLimited     = "rate_limited"
	logAbuseDisconnect = "rate_limited_disconnect"
)

// rateLimited follows a `rate_limited` answer to c: it is logged (at most once a second), and
// takes one strike; a connection with none left is disconnected, behind the answer.
func (s *Sessions) rateLimited(c *websocket.Conn, st *state, frameType string) {
	s.rlog.Info(logRateLimited, "frame rate limited", "session_id", c.ID, "frame", frameType)
	if st.limits.strikes == nil {
		st.limits.strikes = newStrikes(s.cfg.Limits)
	}
	if st.limits.strikes == nil || st.limits.strikes.Allow() {
		return
	}
	s.rlog.Info(logAbuseDisconnect, "connection disconnected: it kept sending over its rate limits", "session_id", c.ID)
	c.Disconnect(protocol.DisconnectRateLimited)
}
