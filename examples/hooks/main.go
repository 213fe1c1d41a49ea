// Command hooks is an application backend answering the gateway's five hooks over the broker
// with the service SDK (clients/go/service, Service.OnHooks), and optionally over HTTP:
//
//   - connect: a connection without a token is let in by its "user" cookie (user=alice), with
//     info {"name"} and a welcome; mallory is banned; the connection expires after -session;
//   - subscribe: room:closed is refused (room_closed); members get info {"name"} (in presence)
//     and a topic in their subscribed frame; room:trial subscriptions end after -trial;
//   - publish: only {"text": "..."}; "darn" and "heck" are replaced with asterisks;
//   - refresh: extends a connection by -session (the node asks it shortly before the expiry);
//   - rpc: time, add ({"a","b"} → {"sum"}), whoami.
//
// Usage:
//
//	hooks [-config FILE] [-embedded] [-http-addr ADDR] [-session 1h] [-trial 1m]
//
// Settings are the gateway's (a YAML file and GATEWAY_* variables, see configs), so the service
// finds the gateway's broker and topic prefix with the same environment; the gateway's nodes
// turn the hooks on with GATEWAY_HOOKS_<HOOK>_VIA=broker (README.md). Run several: each hook
// call is answered by one of them.
//
// With -embedded, it runs a gateway node itself, in the same process, on the memory broker
// (listening on GATEWAY_ADDR, default :8080), with every hook over the broker, anonymous
// connections allowed (the connect hook decides) and presence on room:*. With -http-addr it also
// answers the hooks over HTTP at http://ADDR/hooks/<hook>, checking their signature with
// hooks.secret (GATEWAY_HOOKS_SECRET).
//
// SIGINT or SIGTERM stop it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports/memory"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stderr, nil)
	stop()
	os.Exit(code)
}

// addrs is what run reports once it answers hooks.
type addrs struct {
	gateway string // where the embedded gateway listens (-embedded only)
	http    string // where the HTTP hooks are served (-http-addr only)
}

// embeddedEnv are the settings -embedded gives its node when the environment does not set them.
var embeddedEnv = []string{
	"GATEWAY_ALLOW_ANONYMOUS=true", // a connection without a token: the connect hook decides
	"GATEWAY_HOOKS_CONNECT_VIA=broker",
	"GATEWAY_HOOKS_SUBSCRIBE_VIA=broker", "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*",
	"GATEWAY_HOOKS_PUBLISH_VIA=broker", "GATEWAY_HOOKS_PUBLISH_CHANNELS=room:*",
	"GATEWAY_HOOKS_REFRESH_VIA=broker",
	"GATEWAY_HOOKS_RPC_VIA=broker",
	"GATEWAY_PRESENCE_CHANNELS=room:*",
}

// run is the command. ready, when not nil, is called once hooks are answered (and, with
// -embedded, the gateway listens); it returns when ctx ends: 0 after a clean stop, 1 on a
// failure, 2 on a usage or configuration error.
func run(ctx context.Context, args, environ []string, stderr io.Writer, ready func(addrs)) int {
	fs := flag.NewFlagSet("hooks", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file (the gateway's)")
	embedded := fs.Bool("embedded", false, "run a gateway node in this process, on the in-process memory broker, with every hook over the broker")
	httpAddr := fs.String("http-addr", "", "also answer the hooks over HTTP on this address (POST /hooks/<hook>, signed with hooks.secret); off when empty")
	session := fs.Duration("session", time.Hour, "lifetime of a connection the connect hook lets in, and of each refresh")
	trial := fs.Duration("trial", time.Minute, "how long a subscription to room:trial lasts")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hooks: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *session <= 0 || *trial <= 0 {
		fmt.Fprintln(stderr, "hooks: -session and -trial must be positive")
		return 2
	}
	if *embedded {
		environ = withDefaults(environ, embeddedEnv)
	}
	cfg, err := configs.Load(*path, environ)
	if err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 2
	}
	if !*embedded && cfg.Broker == configs.BrokerMemory {
		fmt.Fprintln(stderr, "hooks: the memory broker lives inside one process and cannot reach a gateway in another: "+
			"run with -embedded, or set GATEWAY_BROKER (nats, jetstream, redis, kafka) like the gateway's")
		return 2
	}
	if *httpAddr != "" && len(cfg.Hooks.Secret) < configs.MinHooksSecret {
		fmt.Fprintf(stderr, "hooks: -http-addr needs hooks.secret (GATEWAY_HOOKS_SECRET), at least %d bytes, to check the requests\n", configs.MinHooksSecret)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	app := NewApp(*session, *trial)
	var at addrs
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			fmt.Fprintf(stderr, "hooks: -http-addr: %v\n", err)
			return 1
		}
		srv := &http.Server{Handler: app.HTTPHandler(cfg.Hooks.Secret), ReadHeaderTimeout: 10 * time.Second}
		done := make(chan struct{})
		go func() { // owned by run: stopped by the deferred Close
			defer close(done)
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http hooks", "error", err)
			}
		}()
		defer func() { _ = srv.Close(); <-done }()
		at.http = ln.Addr().String()
		log.Info("answering hooks over HTTP", "url", "http://"+at.http+"/hooks/<hook>")
	}
	if *embedded {
		return runEmbedded(ctx, cfg, app, log, stderr, func(gw string) {
			if ready != nil {
				at.gateway = gw
				ready(at)
			}
		})
	}
	// hooks answers on whichever broker the gateway uses, so it builds the broker as a node does
	// (gateway.NewBroker). A service on one broker builds just that one with its package's New
	// and ConfigFrom, e.g. redis.New(redis.ConfigFrom(cfg), log), and links no other.
	broker, err := gateway.NewBroker(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "hooks: broker %s: %v\n", cfg.Broker, err)
		return 1
	}
	svc, err := service.New(broker, log)
	if err != nil {
		_ = broker.Close()
		fmt.Fprintln(stderr, "hooks:", err)
		return 1
	}
	defer svc.Close()
	if err := svc.Start(ctx); err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 1
	}
	if err := svc.OnHooks(ctx, app.Handlers()); err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 1
	}
	log.Info("answering hooks over the broker", "broker", cfg.Broker, "topic_prefix", cfg.TopicPrefix)
	if ready != nil {
		ready(at)
	}
	<-ctx.Done()
	log.Info("hooks service stopped")
	return 0
}

// runEmbedded runs a gateway node and the hooks service on one in-process memory broker.
func runEmbedded(ctx context.Context, cfg *configs.Config, app *App, log *slog.Logger, stderr io.Writer, ready func(string)) int {
	if cfg.Broker != configs.BrokerMemory {
		log.Warn("-embedded runs on the in-process memory broker: the configured broker is not used", "broker", cfg.Broker)
		cfg.Broker = configs.BrokerMemory
	}
	broker := memory.NewBroker(memory.ConfigFrom(cfg))
	defer broker.Close()
	svc, err := service.New(broker.Node(cfg.TopicPrefix), log)
	if err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 2
	}
	defer svc.Close()
	// Answer before clients can connect.
	if err := svc.OnHooks(ctx, app.Handlers()); err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 1
	}
	g, err := gateway.New(cfg, gateway.WithLogger(log), gateway.WithBroker(broker.Node(cfg.TopicPrefix)))
	if err != nil {
		fmt.Fprintln(stderr, "hooks:", err)
		return 2
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = g.Close()
		fmt.Fprintf(stderr, "hooks: listen on %s: %v\n", cfg.Addr, err)
		return 1
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	fmt.Fprintf(stderr, "\n  Connect: websocat -H 'Cookie: user=alice' ws://localhost:%s/ws\n  Then: {\"type\":\"rpc\",\"id\":\"1\",\"method\":\"add\",\"data\":{\"a\":1,\"b\":2}}\n\n", port)
	log.Info("hooks service ready, with an embedded gateway", "addr", addr)
	ready(addr)
	if err := g.Serve(ctx, ln); err != nil {
		log.Error("gateway stopped", "error", err)
		return 1
	}
	log.Info("hooks service stopped")
	return 0
}

// withDefaults adds to environ the entries of defaults whose variable it does not set.
func withDefaults(environ, defaults []string) []string {
	set := map[string]bool{}
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		set[k] = true
	}
	out := append([]string(nil), environ...)
	for _, d := range defaults {
		if k, _, _ := strings.Cut(d, "="); !set[k] {
			out = append(out, d)
		}
	}
	return out
}
