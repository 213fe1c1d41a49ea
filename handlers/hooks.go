package handlers

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/internal/ratelog"
	"github.com/wsgateway/gateway/protocol"
)

// HookCaller calls the backend's hook and returns its reply: over HTTP (HTTPHookCaller) or
// over the broker (transports/hookbus). An error is a call that failed (no answer in time, a
// reply that is not valid, the breaker open); a deny is a reply. Safe for concurrent use.
type HookCaller interface {
	Call(ctx context.Context, req protocol.HookRequest) (protocol.HookReply, error)
}

// Hook is one hook's settings in Hooks.
type Hook struct {
	Caller HookCaller // nil: the hook is off
	// Patterns are the channels (subscribe, publish) or methods (rpc) the hook covers, as in
	// auth.public_channels; empty: every one. Connect and refresh cover every connection.
	Patterns []string
	Timeout  time.Duration // of a whole call (retries included)
	FailOpen bool          // a failed call counts as no hook (else the client gets unavailable)
	// Cache keeps a decision per (user, channel) this long (subscribe and publish); 0: none.
	// The key is the user and the channel only: a decision is reused for every session and
	// token of the user, and a cached publish allow skips the hook for the user's later data
	// on that channel (so a publish hook that moderates content must not cache).
	Cache time.Duration
}

// HooksConfig is what Hooks need.
type HooksConfig struct {
	NodeID    string
	Hooks     map[string]Hook // by hook name (protocol.HookConnect, ...)
	CacheSize int             // most decisions one hook's cache keeps
	Metrics   *metrics.Metrics
	Log       *slog.Logger
}

// Hooks asks the backend, for each hook that is on, and applies the timeout, the fail mode and
// the cache. A nil *Hooks has every hook off. Safe for concurrent use; it starts nothing (its
// caches are plain LRUs whose entries carry their end), and Close empties the caches.
type Hooks struct {
	cfg    HooksConfig
	caches map[string]*lru.Cache[string, cached]
	rlog   *ratelog.Logger
	now    func() time.Time // the caches' clock (tests)
}

// cached is a decision kept in a hook's cache until its end.
type cached struct {
	reply protocol.HookReply
	until time.Time
}

// NewHooks makes the hooks of cfg.
func NewHooks(cfg HooksConfig) *Hooks {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100000
	}
	h := &Hooks{cfg: cfg, caches: map[string]*lru.Cache[string, cached]{}, rlog: ratelog.New(cfg.Log, ratelog.DefaultInterval), now: time.Now}
	for name, hk := range cfg.Hooks {
		if hk.Caller != nil && hk.Cache > 0 {
			c, err := lru.New[string, cached](cfg.CacheSize)
			if err != nil { // only for a size <= 0, made positive above
				panic(err)
			}
			h.caches[name] = c
		}
	}
	return h
}

// Close empties the hooks' caches. Safe twice, and with a nil *Hooks; the hooks still answer
// after it (without what was cached).
func (h *Hooks) Close() {
	if h == nil {
		return
	}
	for _, c := range h.caches {
		c.Purge()
	}
}

// On reports whether the hook is on.
func (h *Hooks) On(hook string) bool {
	return h != nil && h.cfg.Hooks[hook].Caller != nil
}

// Covers reports whether the hook is on and covers name (a channel or a method).
func (h *Hooks) Covers(hook, name string) bool {
	if !h.On(hook) {
		return false
	}
	p := h.cfg.Hooks[hook].Patterns
	return len(p) == 0 || auth.Match(p, name)
}

// Outcomes of hook calls (the metric's outcome label).
const (
	hookAllowed = "allowed"
	hookDenied  = "denied"
	hookFailed  = "failed"
	hookCached  = "cached"
)

// Decide asks the hook req.Hook when it covers req (its channel or method; connect and
// refresh: always). It returns the reply when the backend answered (or the cache did: a deny
// too); nil, nil when no hook covers req or the call failed and the hook fails open; and an
// unavailable *protocol.Error when the call failed and the hook fails closed. It never waits
// longer than the hook's timeout.
func (h *Hooks) Decide(ctx context.Context, req protocol.HookRequest) (*protocol.HookReply, error) {
	return h.decide(ctx, req, nil)
}

// decide is Decide; ended, when not nil, is called once nothing runs for the call any more:
// at once when no call was made, else when the caller returned (later than decide when a
// caller ignores its context). A bound on calls in flight holds a slot until then.
func (h *Hooks) decide(ctx context.Context, req protocol.HookRequest, ended func()) (*protocol.HookReply, error) {
	handed := false // ended was given to the call, which calls it
	defer func() {
		if !handed && ended != nil {
			ended()
		}
	}()
	name := req.Channel
	if req.Hook == protocol.HookRPC {
		name = req.Method
	}
	switch req.Hook {
	case protocol.HookConnect, protocol.HookRefresh:
		if !h.On(req.Hook) {
			return nil, nil
		}
	default:
		if !h.Covers(req.Hook, name) {
			return nil, nil
		}
	}
	hk := h.cfg.Hooks[req.Hook]
	cache, key := h.caches[req.Hook], req.User+"\x00"+req.Channel
	if req.User == "" {
		cache = nil // anonymous connections are not one user: their decisions are not shared
	}
	if cache != nil {
		if e, ok := cache.Get(key); ok {
			if h.now().Before(e.until) {
				h.cfg.Metrics.HookCalls.WithLabelValues(req.Hook, hookCached).Inc()
				r := e.reply
				return &r, nil
			}
			cache.Remove(key)
		}
	}
	if req.ID == "" {
		req.ID = watermill.NewUUID()
	}
	req.Node = h.cfg.NodeID
	if req.Transport == "" {
		req.Transport = "websocket"
	}
	ctx, cancel := context.WithTimeout(ctx, hk.Timeout)
	defer cancel()
	start := time.Now()
	handed = true
	reply, err := callBounded(ctx, hk.Caller, req, ended)
	if err == nil {
		err = reply.Check()
	}
	h.cfg.Metrics.HookLatency.WithLabelValues(req.Hook).Observe(time.Since(start).Seconds())
	if err != nil {
		h.cfg.Metrics.HookCalls.WithLabelValues(req.Hook, hookFailed).Inc()
		h.rlog.Info("hook_failed", "hook call failed", "hook", req.Hook, "channel", req.Channel, "method", req.Method,
			"fail_open", hk.FailOpen, "error", err)
		if hk.FailOpen {
			return nil, nil
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, protocol.Errorf(protocol.CodeUnavailable, "the %s hook did not answer in time", req.Hook)
		}
		return nil, protocol.Errorf(protocol.CodeUnavailable, "the %s hook failed", req.Hook)
	}
	outcome := hookAllowed
	if reply.Deny != nil {
		outcome = hookDenied
	}
	h.cfg.Metrics.HookCalls.WithLabelValues(req.Hook, outcome).Inc()
	if now := h.now(); cache != nil && cacheable(req.Hook, &reply, now.Add(hk.Cache)) {
		cache.Add(key, cached{reply: reply, until: now.Add(hk.Cache)})
	}
	return &reply, nil
}

// cacheable reports whether reply may be kept until until: not a publish answer that replaces
// the data, nor a subscription whose expiry comes before the entry's end.
func cacheable(hook string, reply *protocol.HookReply, until time.Time) bool {
	if hook == protocol.HookPublish && len(reply.Data) > 0 {
		return false
	}
	return reply.Expires == 0 || time.Unix(reply.Expires, 0).After(until)
}

// callBounded calls c, but returns when ctx ends even if c does not (a caller that ignores its
// context never holds a client's frame past the timeout). ended, when not nil, is called once
// c returned, which may be after callBounded did.
func callBounded(ctx context.Context, c HookCaller, req protocol.HookRequest, ended func()) (protocol.HookReply, error) {
	type result struct {
		reply protocol.HookReply
		err   error
	}
	done := make(chan result, 1)
	go func() { // ends when c returns; c is given ctx, so a well-behaved caller returns with it
		if ended != nil {
			defer ended()
		}
		r, err := c.Call(ctx, req)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		return r.reply, r.err
	case <-ctx.Done():
		return protocol.HookReply{}, ctx.Err()
	}
}

// hookHeaders are the headers of the upgrade request named by names (canonical names, first
// value), for the connect hook.
func hookHeaders(get func(string) string, names []string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		if v := get(n); v != "" {
			out[http.CanonicalHeaderKey(n)] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
