// Package gateway assembles one node of the WebSocket gateway from its configuration: the
// broker (a package under transports), the websocket transport (transports/websocket), the
// Watermill router and its middleware (router), the product's handlers (handlers) and the HTTP
// server.
//
// A Go program can build its own gateway with its own middleware:
//
//	g, err := gateway.New(cfg, gateway.WithLogger(log), gateway.WithMiddleware(myMiddleware))
//	...
//	err = g.Run(ctx) // serves until ctx ends, then drains
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/handlers"
	"github.com/wsgateway/gateway/handlers/pusher"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/metrics"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router"
	"github.com/wsgateway/gateway/router/middleware"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/hookbus"
	"github.com/wsgateway/gateway/transports/kafka"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Option changes how New builds a node.
type Option func(*options)

type options struct {
	log        *slog.Logger
	broker     transports.Broker
	dedupe     middleware.DedupeStore
	middleware []message.HandlerMiddleware
	handlers   []extraHandler
	refresh    time.Duration // of the control store; 0: handlers.DefaultControlRefresh
	hookBroker handlers.HookCaller
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithBroker uses b instead of building the configured broker; the node starts it in Start (b
// may be started already) and closes it (New too, when it fails).
func WithBroker(b transports.Broker) Option { return func(o *options) { o.broker = b } }

// WithDedupeStore sets where msg_id keys are kept (default: in memory).
func WithDedupeStore(s middleware.DedupeStore) Option { return func(o *options) { o.dedupe = s } }

// WithControlRefresh sets how often the node reads the control store again (default
// handlers.DefaultControlRefresh, 10 s): the bound within which a node that missed a control
// message applies the standing commands to its open connections.
func WithControlRefresh(d time.Duration) Option { return func(o *options) { o.refresh = d } }

// WithHookBroker sets how the hooks whose via is broker are called. Without it, New builds a
// transports/hookbus Caller (Watermill request/reply over the node's broker), started with the
// node and closed with it; tests and embedders may give their own.
func WithHookBroker(c handlers.HookCaller) Option { return func(o *options) { o.hookBroker = c } }

// WithMiddleware adds router middleware, run on every message after the built-in outer chain
// (see package router), in the order given.
func WithMiddleware(m ...message.HandlerMiddleware) Option {
	return func(o *options) { o.middleware = append(o.middleware, m...) }
}

// WithHandler adds a router handler of the operator's: it consumes topic (a logical topic, see
// package transports) from the node's broker, fan-out (every node receives everything), through
// the same router-level middleware as the built-in handlers.
func WithHandler(name, topic string, h message.NoPublishHandlerFunc) Option {
	return func(o *options) { o.handlers = append(o.handlers, extraHandler{name, topic, h}) }
}

type extraHandler struct {
	name, topic string
	h           message.NoPublishHandlerFunc
}

// Refuse is the error a middleware returns to refuse a client's message: the client gets an
// error frame with code (bad_request, forbidden, rate_limited, unavailable, ...) and msg.
func Refuse(code, msg string) error { return protocol.Errorf(code, "%s", msg) }

// HandlerInbound names the router handler of what clients and the API submit
// (message.HandlerNameFromCtx), for middleware that concerns only those.
const HandlerInbound = router.HandlerInbound

// Gateway is one node.
type Gateway struct {
	cfg      *configs.Config
	log      *slog.Logger
	broker   transports.Broker
	feed     *router.Feed
	inbox    *router.Inbox
	hub      *websocket.Hub
	http     *handlers.HTTP // its streams' goroutines end after the hub
	router   *message.Router
	events   *handlers.Events   // nil when disabled
	webhooks *handlers.Webhooks // nil when webhooks.url is empty
	// pusherHooks are the Pusher-format webhooks of the Pusher apps with a webhook_url.
	pusherHooks []*handlers.Webhooks
	presence    *handlers.Presence
	control     *handlers.Control
	hookbus     *hookbus.Caller // the hooks over the broker; nil when none is, or WithHookBroker gave one
	hooks       *handlers.Hooks // the hooks; Close empties their caches
	metrics     *metrics.Metrics
	mux         *http.ServeMux
	tls         *tls.Config // nil: plain HTTP
	admin       admin
	verifier    *auth.Verifier // nil without token keys; Close stops its JWKS refresh

	routerRan atomic.Bool   // Start ran the router: Close must close it
	started   atomic.Bool   // Start returned: the broker answered and the router runs
	startedc  chan struct{} // closed when started turns true

	closers   []func() error // what New opened besides the broker (a dedupe store's client)
	closeOnce sync.Once
	closeErr  error
}

// New builds a node. It starts nothing (Start and Run do: the broker, the router, the websocket
// transport's budget clock), with one exception: with auth.jwks_url it fetches the key set
// (at most auth.jwks_timeout), so that a wrong URL fails at once like a wrong key, and starts its
// refresh, which Close stops. When it fails it closes what it opened, and a broker given with
// WithBroker too.
func New(cfg *configs.Config, opts ...Option) (_ *Gateway, err error) {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	// undo closes, in reverse order, what New opened, when it fails.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	if o.broker != nil {
		undo = append(undo, func() { _ = o.broker.Close() })
	}
	if err := checkHandlerNames(o.handlers); err != nil {
		return nil, err
	}
	log := o.log.With("node_id", cfg.NodeID)
	p, err := prepare(cfg, log)
	if err != nil {
		return nil, err // prepare closed its verifier
	}
	undo = append(undo, p.verifier.Close) // the JWKS refresh
	verifier, keys, serverTLS := p.verifier, p.keys, p.tls
	var closers []func() error
	if o.dedupe == nil {
		if o.dedupe, closers, err = dedupeStore(cfg); err != nil {
			return nil, err
		}
		undo = append(undo, func() { closeAll(closers) })
	}
	broker := o.broker
	if broker == nil {
		if broker, err = NewBroker(cfg, log); err != nil {
			return nil, err
		}
		undo = append(undo, func() { _ = broker.Close() })
	}
	// Presence needs a broker that keeps it (Check refuses presence.channels otherwise; a broker
	// given with WithBroker is asked here).
	brokerPresence, _ := broker.(transports.Presence)
	if err := checkPresence(cfg, brokerPresence != nil); err != nil {
		return nil, err
	}
	pusherChannels, pusherJoinLeave := pusher.PresencePatterns(cfg.Pusher.Apps)
	g := &Gateway{cfg: cfg, log: log, broker: broker, metrics: metrics.New(), mux: http.NewServeMux(), tls: serverTLS, closers: closers,
		startedc: make(chan struct{})}
	g.feed = router.NewFeed(broker)
	g.inbox = router.NewInbox()
	undo = append(undo, func() { _ = g.feed.Close() }, func() { _ = g.inbox.Close() })

	g.hub = websocket.NewHub(websocket.Config{
		MaxFrameSize:     cfg.WebSocket.MaxFrameSize,
		SendBuffer:       cfg.WebSocket.SendBuffer,
		WriteTimeout:     cfg.WebSocket.WriteTimeout,
		LatencyBudget:    cfg.WebSocket.Budget(),
		Compression:      cfg.WebSocket.Compression,
		CompressionLevel: cfg.WebSocket.CompressionLevel,
		PingInterval:     cfg.WebSocket.PingInterval,
		CheckOrigin:      originChecker(cfg.WebSocket.AllowedOrigins),
	}, g.feed, g.metrics, log) // starts nothing: Start starts its budget clock
	if !cfg.Events.Disabled {
		g.events = handlers.NewEvents(handlers.EventsConfig{
			NodeID:         cfg.NodeID,
			Inbox:          g.inbox,
			Queue:          cfg.Events.Queue,
			Heartbeat:      cfg.Events.Heartbeat,
			PublishTimeout: cfg.WebSocket.PublishTimeout,
			Metrics:        g.metrics,
			Log:            log,
		})
	}
	g.webhooks = handlers.NewWebhooks(handlers.WebhooksConfig{ // starts nothing: Start does
		URL:          cfg.Webhooks.URL,
		Format:       handlers.GatewayWebhookFormat{Secret: []byte(cfg.Webhooks.Secret)},
		Events:       cfg.Webhooks.Events,
		Batch:        webhooksBatch(cfg, broker),
		BatchWait:    cfg.Webhooks.BatchWait,
		Timeout:      cfg.Webhooks.Timeout,
		RetryInitial: cfg.Webhooks.RetryInitial,
		RetryMax:     cfg.Webhooks.RetryMax,
		RetryBudget:  cfg.Webhooks.RetryBudget,
		Broker:       broker,
		PoisonTopic:  cfg.Router.PoisonTopic,
		Metrics:      g.metrics,
		Log:          log,
	})
	g.presence = handlers.NewPresence(handlers.PresenceConfig{ // sets the broker's OnReap: before Start
		NodeID:     cfg.NodeID,
		Presence:   brokerPresence,
		Channels:   slices.Concat(cfg.Presence.Channels, pusherChannels),
		JoinLeave:  slices.Concat(cfg.Presence.JoinLeave, pusherJoinLeave),
		MaxMembers: cfg.Presence.MaxMembers,
		Sessions:   cfg.Events.NodeLost && !cfg.Events.Disabled,
		Inbox:      g.inbox,
		Events:     g.events,
		Timeout:    cfg.WebSocket.PublishTimeout,
		Coalesce:   cfg.Presence.CoalesceWindow(),
		Log:        log,
	})
	undo = append(undo, g.presence.Close)
	viaBroker := o.hookBroker
	if viaBroker == nil && cfg.Hooks.ViaBroker() {
		if g.hookbus, err = hookbus.NewCaller(hookbus.CallerConfig{Broker: broker, NodeID: cfg.NodeID, Log: log}); err != nil {
			return nil, err
		}
		viaBroker = g.hookbus
	}
	hooks, err := newHooks(cfg, viaBroker, g.metrics, log)
	if err != nil {
		return nil, err
	}
	g.hooks = hooks
	// The one reader of channel history: resumes, rewinds, history frames and the history API.
	history := handlers.NewHistoryReader(handlers.HistoryConfig{History: g.feed, MaxReplay: cfg.History.MaxReplay, Bounds: cfg.History.Bounds})
	sessions := handlers.NewSessions(handlers.SessionsConfig{
		NodeID:         cfg.NodeID,
		Hub:            g.hub,
		History:        g.feed,
		Inbox:          g.inbox,
		PublicChannels: cfg.Auth.PublicChannels,
		AnonPublish:    cfg.Auth.AnonymousPublish,
		DefaultSend:    cfg.Auth.DefaultSend,
		MaxReplay:      cfg.History.MaxReplay,
		HistoryBounds:  cfg.History.Bounds,
		Reader:         history,
		PublishTimeout: cfg.WebSocket.PublishTimeout,
		Limits:         cfg.Limits,
		Events:         g.events,
		Presence:       g.presence,
		Hooks:          hooks,
		ConnectHeaders: cfg.Hooks.Connect.Headers,
		Verifier:       verifier,
		Metrics:        g.metrics,
		Log:            log,
	})
	g.hub.SetHandler(sessions)
	controlStore, _ := broker.(transports.ControlStore)
	g.control = handlers.NewControl(handlers.ControlConfig{
		Sessions: sessions,
		Hub:      g.hub,
		Broker:   broker,
		Store:    controlStore,
		Refresh:  o.refresh,
		Timeout:  cfg.WebSocket.PublishTimeout,
		Log:      log,
	})

	var pusherServer *pusher.Server
	if cfg.Pusher.Enabled() {
		pusherServer = pusher.New(pusher.Config{
			NodeID:          cfg.NodeID,
			Apps:            cfg.Pusher.Apps,
			ActivityTimeout: cfg.Pusher.ActivityTimeout,
			Hub:             g.hub,
			Inbox:           g.inbox,
			Presence:        g.presence,
			Control:         g.control,
			Events:          g.events,
			Limits:          cfg.Limits,
			Reserve:         sessions.Reserve,
			Timeout:         cfg.WebSocket.PublishTimeout,
			Metrics:         g.metrics,
			Log:             log,
		})
		pusherServer.Routes(g.mux)
		g.control.Also(pusherServer) // terminate_connections
		for _, a := range pusherServer.WebhookApps() {
			g.pusherHooks = append(g.pusherHooks, handlers.NewWebhooks(handlers.WebhooksConfig{ // starts nothing
				URL:          a.URL,
				Format:       a.Format,
				Events:       pusher.WebhookEvents,
				Accept:       a.Accept,
				Group:        pusher.WebhookGroup(a.ID),
				Batch:        webhooksBatch(cfg, broker),
				BatchWait:    cfg.Webhooks.BatchWait,
				Timeout:      cfg.Webhooks.Timeout,
				RetryInitial: cfg.Webhooks.RetryInitial,
				RetryMax:     cfg.Webhooks.RetryMax,
				RetryBudget:  cfg.Webhooks.RetryBudget,
				Broker:       broker,
				PoisonTopic:  cfg.Router.PoisonTopic,
				Metrics:      g.metrics,
				Log:          log.With("pusher_app", a.ID),
			}))
		}
	}
	rh := handlers.NewMessages(handlers.MessagesConfig{
		Hub:          g.hub,
		Encode:       pusherServer.Encoder(),
		Broker:       broker,
		DedupeWindow: cfg.Router.DedupeWindow,
		Signatures:   keys,
		Metrics:      g.metrics,
		Log:          log,
	})
	g.router, err = router.New(
		router.Sources{Inbox: g.inbox, Feed: g.feed, Direct: broker},
		router.Funcs{Inbound: rh.Inbound, Channel: rh.Channel, Direct: rh.Direct, Authorize: sessions.Authorize,
			DedupeKey: handlers.DedupeKey, RateLimiters: handlers.RateLimiters},
		router.Options{
			Dedupe:           o.dedupe,
			DedupeWindow:     cfg.Router.DedupeWindow,
			DedupeHold:       cfg.WebSocket.PublishTimeout,
			RetryAttempts:    cfg.Router.RetryAttempts,
			RetryInitial:     cfg.Router.RetryInitial,
			RetryMaxElapsed:  cfg.Router.RetryMaxElapsed,
			Timeout:          cfg.Router.Timeout,
			BreakerFailures:  cfg.Router.BreakerFailures,
			BreakerOpenFor:   cfg.Router.BreakerOpenFor,
			PoisonTopic:      cfg.Router.PoisonTopic,
			Publish:          func(topic string, m *message.Message) error { return broker.Publish(topic, m) },
			Signatures:       keys,
			RequireSignature: cfg.Router.RequireSignature,
			Metrics:          g.metrics,
			CloseTimeout:     cfg.WebSocket.PublishTimeout + 5*time.Second,
			Extra:            o.middleware,
		}, log)
	if err != nil {
		return nil, err
	}
	g.router.AddConsumerHandler(handlerControl, protocol.TopicControl, broker, g.control.Handle)
	for _, eh := range o.handlers {
		g.router.AddConsumerHandler(eh.name, eh.topic, broker, eh.h) // names checked: no panic
	}
	g.http = handlers.NewHTTP(handlers.HTTPConfig{
		NodeID:         cfg.NodeID,
		Acceptor:       g.hub,
		Streamer:       g.hub,
		Stream:         handlers.StreamConfig{Heartbeat: cfg.Stream.Heartbeat, MaxChannels: cfg.Stream.MaxChannels, WriteTimeout: cfg.WebSocket.WriteTimeout},
		Sessions:       sessions,
		Ready:          g.ready,
		Inbox:          g.inbox,
		Verifier:       verifier,
		AllowAnonymous: cfg.Auth.AllowAnonymous,
		APIKey:         cfg.API.Key,
		PublishTimeout: cfg.WebSocket.PublishTimeout,
		Presence:       g.presence,
		Control:        g.control,
		History:        history,
		Metrics:        g.metrics,
		Log:            log,
	})
	g.http.Routes(g.mux)
	g.verifier = verifier
	return g, nil
}

// newHooks builds the hooks of cfg.Hooks: each hook that is on is called over HTTP (its own
// caller: retries, circuit breaker) or over the broker (viaBroker).
func newHooks(cfg *configs.Config, viaBroker handlers.HookCaller, m *metrics.Metrics, log *slog.Logger) (*handlers.Hooks, error) {
	hc := cfg.Hooks
	type hook struct {
		name     string
		c        configs.HookConfig
		patterns []string
		cache    time.Duration
	}
	all := []hook{
		{protocol.HookConnect, hc.Connect.HookConfig, nil, 0},
		{protocol.HookSubscribe, hc.Subscribe.HookConfig, hc.Subscribe.Channels, hc.Subscribe.Cache},
		{protocol.HookPublish, hc.Publish.HookConfig, hc.Publish.Channels, hc.Publish.Cache},
		{protocol.HookRefresh, hc.Refresh, nil, 0},
		{protocol.HookRPC, hc.RPC.HookConfig, hc.RPC.Methods, 0},
	}
	out := map[string]handlers.Hook{}
	for _, h := range all {
		var caller handlers.HookCaller
		switch h.c.Via {
		case "":
			continue
		case configs.HookViaHTTP:
			caller = handlers.NewHTTPHookCaller(handlers.HTTPHookConfig{
				URL: h.c.URL, Secret: []byte(hc.Secret), Retries: h.c.RetryCount(),
				BreakerFailures: hc.BreakerFailures, BreakerOpenFor: hc.BreakerOpenFor,
			})
		case configs.HookViaBroker:
			caller = viaBroker // nil in Check, which builds no caller
		}
		out[h.name] = handlers.Hook{Caller: caller, Patterns: h.patterns, Timeout: h.c.Timeout, FailOpen: h.c.FailOpen(), Cache: h.cache}
	}
	return handlers.NewHooks(handlers.HooksConfig{NodeID: cfg.NodeID, Hooks: out, CacheSize: hc.CacheSize, Metrics: m, Log: log}), nil
}

// webhooksBatch is webhooks.batch, but 1 on kafka: the events topic has one partition there, so
// a group has one event in flight at a time, and each extra subscription would only be one more
// idle group member (and a rebalance that hands held events to another member). The broker
// decides, not the setting: a kafka broker given with WithBroker counts too.
func webhooksBatch(cfg *configs.Config, broker transports.Broker) int {
	if _, ok := broker.(*kafka.Broker); ok || cfg.Broker == configs.BrokerKafka {
		return 1
	}
	return cfg.Webhooks.Batch
}

// handlerControl names the router handler of protocol.TopicControl (handlers.Control.Handle).
const handlerControl = "control"

// checkHandlerNames refuses WithHandler names that are given twice or are a built-in handler's
// (Watermill's AddConsumerHandler panics on them).
func checkHandlerNames(hs []extraHandler) error {
	seen := map[string]bool{router.HandlerInbound: true, router.HandlerChannel: true, router.HandlerDirect: true, handlerControl: true}
	for _, h := range hs {
		if seen[h.name] {
			return fmt.Errorf("gateway: WithHandler %q: a router handler of that name exists", h.name)
		}
		seen[h.name] = true
	}
	return nil
}

// closeAll calls every closer, ignoring their errors (a node that is not built, or is closed).
func closeAll(closers []func() error) {
	for _, c := range closers {
		_ = c()
	}
}

// newVerifier builds the token verifier from the auth settings; nil when no key, public key or
// JWKS URL is configured (anonymous clients only). With a JWKS URL it fetches the key set (at
// most auth.jwks_timeout) and starts its refresh, which Verifier.Close stops.
func newVerifier(cfg *configs.Config, log *slog.Logger) (*auth.Verifier, error) {
	a := cfg.Auth
	var pem []byte
	if a.JWTPublicKey != "" {
		var err error
		if pem, err = os.ReadFile(a.JWTPublicKey); err != nil {
			return nil, &configs.KeyError{Key: "auth.jwt_public_key", Env: "GATEWAY_JWT_PUBLIC_KEY", Reason: err.Error()}
		}
	}
	if a.JWTSecret == "" && pem == nil && a.JWKSURL == "" {
		return nil, nil
	}
	opts := []auth.Option{auth.RequireExp(a.ExpRequired()), auth.Audience(a.Audience...), auth.Issuer(a.Issuer)}
	if a.JWKSURL != "" {
		opts = append(opts, auth.JWKS(auth.JWKSConfig{URL: a.JWKSURL, Refresh: a.JWKSRefresh, Timeout: a.JWKSTimeout,
			UnknownKIDEvery: configs.JWKSUnknownKIDEvery, Log: log}))
	}
	v, err := auth.NewVerifier([]byte(a.JWTSecret), pem, opts...)
	if err != nil {
		return nil, &configs.KeyError{Key: "auth.jwt_public_key", Env: "GATEWAY_JWT_PUBLIC_KEY", Reason: err.Error()}
	}
	return v, nil
}

// originChecker allows browsers from the listed origins ("*": any); with none, only pages served
// from the same host. Clients that send no Origin (not browsers) are always allowed.
func originChecker(allowed []string) func(r *http.Request) bool {
	set := map[string]bool{}
	for _, o := range allowed {
		set[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || set["*"] {
			return true
		}
		if len(set) > 0 {
			return set[strings.ToLower(origin)]
		}
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
}

// Handler is the node's HTTP handler (for tests and for embedding in another server). It has
// no pprof: that is served only by the admin listener (admin.addr). An answer sent before the
// request's body was read closes the connection (see closeUnreadBodies); the embedding server
// should bound reads itself, as Serve does with http.read_timeout. Call Start before serving it:
// Start starts the broker and the router, and the websocket transport's budget clock (without
// which frames a busy node held back for websocket.latency_budget would wait).
func (g *Gateway) Handler() http.Handler { return closeUnreadBodies(g.mux) }

// Metrics are the node's collectors.
func (g *Gateway) Metrics() *metrics.Metrics { return g.metrics }

// Start starts the admin listener (when admin.addr is set), waits until the broker answers
// (awaitBroker: for ever, or broker_connect_timeout), starts the router and the hub's
// budget clock, and returns once they run. Run calls it; tests that serve Handler
// themselves call it directly.
func (g *Gateway) Start(ctx context.Context) error {
	if err := g.startAdmin(); err != nil {
		return err
	}
	if err := g.awaitBroker(ctx); err != nil {
		g.closeAdmin()
		return err
	}
	if g.hookbus != nil { // the replies subscription, before the first connection; Close stops it
		if err := g.hookbus.Start(ctx); err != nil {
			g.closeAdmin()
			return err
		}
	}
	if err := g.startRouter(ctx); err != nil {
		g.closeAdmin()
		return err
	}
	if err := g.webhooks.Start(ctx); err != nil { // Close stops them
		g.closeAdmin()
		return err
	}
	for _, w := range g.pusherHooks {
		if err := w.Start(ctx); err != nil { // Close stops them
			g.closeAdmin()
			return err
		}
	}
	g.hub.Start() // Close stops it
	g.markStarted()
	return nil
}

func (g *Gateway) startRouter(ctx context.Context) error {
	errc := make(chan error, 1)
	g.routerRan.Store(true)
	go func() { errc <- g.router.Run(context.WithoutCancel(ctx)) }()
	select {
	case <-g.router.Running():
		g.events.Start()     // ends when Close closes the events
		g.control.Start(ctx) // the stored revocations, before the first upgrade; Close stops its refresh
		return nil
	case err := <-errc:
		return fmt.Errorf("router: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run serves on the configured address until ctx ends, then drains and closes.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", g.cfg.Addr, err)
	}
	return g.Serve(ctx, ln)
}

// Serve is Run on a listener of the caller's (plain TCP: Serve adds the configured TLS). It
// serves /healthz, /readyz (503) and /metrics while Start waits for the broker, and everything
// once it has started. When ctx ends before that, it closes the node and returns nil.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := g.httpServer(closeUnreadBodies(g.untilStarted(g.mux)))
	if g.tls != nil {
		ln = tls.NewListener(ln, g.tls)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "broker", g.cfg.Broker, "tls", g.tls != nil)
	if err := g.Start(ctx); err != nil {
		_ = srv.Close()
		<-errc
		_ = g.Close()
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	select {
	case err := <-errc:
		_ = g.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	g.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return g.Close()
}

// Drain turns /readyz to 503, refuses new connections, and disconnects every session with
// "shutdown", spread over the drain period; it returns when they are gone (or the period plus the
// write timeout has passed). Messages a client sent before its disconnect are acked or refused
// before the router closes.
func (g *Gateway) Drain() {
	g.log.Info("draining", "sessions", g.hub.Len(), "period", g.cfg.Drain.Period)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Drain.Period+g.cfg.WebSocket.WriteTimeout+time.Second)
	defer cancel()
	g.hub.Drain(ctx, g.cfg.Drain.Period)
}

// Close stops the node at once: connections, router, broker, admin listener. Safe to call twice.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.control.Close() // its store refresh, which acts on sessions
		g.hub.Close()     // the sessions leave their presence channels
		if g.http != nil {
			g.http.Close() // the streams' goroutines, ended by the hub's close, close their connections
		}
		g.presence.Close()              // the leaves of reaped members being published
		g.events.Close(2 * time.Second) // the disconnected events of the drain, while the router runs
		g.webhooks.Close()              // a batch not delivered yet is left to the other nodes
		for _, w := range g.pusherHooks {
			w.Close()
		}
		if g.hookbus != nil {
			_ = g.hookbus.Close() // after the sessions: their calls end with ErrClosed
		}
		g.hooks.Close() // their caches
		_ = g.inbox.Close()
		var errs []error
		// A router that never ran would wait its whole close timeout for handlers that never start.
		if g.routerRan.Load() {
			if err := g.router.Close(); err != nil {
				errs = append(errs, fmt.Errorf("router: %w", err))
			}
		}
		_ = g.feed.Close()
		if err := g.broker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("broker: %w", err))
		}
		closeAll(g.closers)
		g.verifier.Close() // the JWKS refresh
		g.closeAdmin()     // last: pprof and metrics stay up through the drain and the shutdown
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}
