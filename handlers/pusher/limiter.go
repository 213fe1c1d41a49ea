package pusher

import (
	"time"

	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/configs"
)

// eventLimiter bounds a connection's client events (Pusher: 10 a second).
type eventLimiter struct{ l *rate.Limiter }

func newEventLimiter(perSecond int) *eventLimiter {
	return &eventLimiter{l: rate.NewLimiter(rate.Limit(perSecond), perSecond)}
}

func (e *eventLimiter) allow() bool { return e.l.Allow() }

// connLimits are the native per-connection limits (limits.*) as they apply to a Pusher
// connection: publish_rate to its client events (besides the app's client_event_rate),
// subscribe_rate to its pusher:subscribe frames, and the strikes (rate_limited_disconnect,
// rate_limited_window) to its refusals for a rate. A nil limiter is no limit; each is safe for
// concurrent use.
type connLimits struct {
	publish   *rate.Limiter
	subscribe *rate.Limiter
	// strikes counts the connection's refusals for a rate (none left: it is disconnected); made
	// at the first one, used only by the connection's frames, which are handled one at a time.
	strikes *rate.Limiter
}

func newConnLimits(l configs.LimitsConfig) connLimits {
	var cl connLimits
	if l.PublishRate > 0 {
		cl.publish = rate.NewLimiter(rate.Limit(l.PublishRate), l.PublishBurst)
	}
	if l.SubscribeRate > 0 {
		cl.subscribe = rate.NewLimiter(rate.Limit(l.SubscribeRate), l.SubscribeBurst)
	}
	return cl
}

func allow(l *rate.Limiter) bool { return l == nil || l.Allow() }

// newStrikes is a full strikes limiter for l (as the native one), nil when a connection is
// never disconnected.
func newStrikes(l configs.LimitsConfig) *rate.Limiter {
	if l.RateLimitedDisconnect <= 0 || l.RateLimitedWindow <= 0 {
		return nil
	}
	every := max(l.RateLimitedWindow/time.Duration(l.RateLimitedDisconnect), time.Nanosecond)
	return rate.NewLimiter(rate.Every(every), l.RateLimitedDisconnect)
}
