package pusher

import (
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
// subscribe_rate to its pusher:subscribe frames. A nil limiter is no limit; each is safe for
// concurrent use.
type connLimits struct {
	publish   *rate.Limiter
	subscribe *rate.Limiter
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
