package pusher

import "golang.org/x/time/rate"

// eventLimiter bounds a connection's client events (Pusher: 10 a second).
type eventLimiter struct{ l *rate.Limiter }

func newEventLimiter(perSecond int) *eventLimiter {
	return &eventLimiter{l: rate.NewLimiter(rate.Limit(perSecond), perSecond)}
}

func (e *eventLimiter) allow() bool { return e.l.Allow() }
