// Command echo is a small service behind the WebSocket gateway, built on the service SDK
// (clients/go/service): it consumes what clients send ({"type":"send","data":...}) as the
// consumer group "echo" and replies to the sender's session with
//
//	{"echo": <the data sent>, "from": "<the sender's user id>"}
//
// Usage:
//
//	echo [-config FILE] [-group echo] [-embedded] [-health-addr ADDR]
//
// Settings are the gateway's (a YAML file and GATEWAY_* variables, see configs), so the service
// finds the gateway's broker and topic prefix with the very same environment:
//
//	export GATEWAY_BROKER=nats GATEWAY_NATS_URL=nats://127.0.0.1:4222 GATEWAY_JWT_SECRET=change-me-0123456789
//	go run ./cmd/gateway &
//	go run ./examples/echo
//
// Run several echo processes and each send is answered once (competing consumers of the group).
//
// The embedded memory broker lives inside one process, so a separate echo process cannot reach a
// gateway running on it. With -embedded, echo runs a gateway node itself, in the same process, on
// the memory broker (listening on GATEWAY_ADDR, default :8080) and the service next to it: a
// complete demo with nothing else to start.
//
//	go run ./examples/echo -embedded
//	websocat 'ws://localhost:8080/ws?token=<printed token>'
//	{"type":"send","id":"1","data":{"hello":"world"}}
//
// With -health-addr (e.g. :8081), echo serves GET /healthz there: 200 while it consumes its group
// and the broker answers, 503 otherwise; the container image and docker-compose.yml probe it.
//
// SIGINT or SIGTERM stop it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/transports/memory"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stderr, nil)
	stop()
	os.Exit(code)
}

// addrs is what run reports once it is ready.
type addrs struct {
	gateway string // where the embedded gateway listens (-embedded only)
	health  string // where /healthz is served (-health-addr only)
}

// run is the command. ready, when not nil, is called once the service consumes its group (and,
// with -embedded, the gateway listens); it returns when ctx ends: 0 after a clean stop, 1 on a
// failure, 2 on a usage or configuration error.
func run(ctx context.Context, args, environ []string, stderr io.Writer, ready func(addrs)) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML configuration file (the gateway's)")
	group := fs.String("group", "echo", "consumer group: each send is answered by one member")
	embedded := fs.Bool("embedded", false, "run a gateway node in this process, on the in-process memory broker")
	healthAddr := fs.String("health-addr", "", "serve GET "+healthPath+" on this address (e.g. :8081): 200 while the service consumes, 503 otherwise; off when empty")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "echo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *group == "" {
		fmt.Fprintln(stderr, "echo: -group must not be empty")
		return 2
	}
	if *healthAddr != "" {
		if _, _, err := net.SplitHostPort(*healthAddr); err != nil {
			fmt.Fprintf(stderr, "echo: -health-addr %q: %v\n", *healthAddr, err)
			return 2
		}
	}
	cfg, err := configs.Load(*path, environ)
	if err != nil {
		fmt.Fprintln(stderr, "echo:", err)
		return 2
	}
	if !*embedded && cfg.Broker == configs.BrokerMemory {
		fmt.Fprintln(stderr, "echo: the memory broker lives inside one process and cannot reach a gateway in another: "+
			"run with -embedded, or set GATEWAY_BROKER (nats, jetstream, redis, kafka) like the gateway's")
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	hl := &health{}
	var at addrs
	if *healthAddr != "" {
		stopHealth, bound, err := serveHealth(*healthAddr, hl, log)
		if err != nil {
			fmt.Fprintf(stderr, "echo: -health-addr: %v\n", err)
			return 1
		}
		defer stopHealth()
		at.health = bound
		log.Info("health endpoint listening", "addr", bound, "path", healthPath)
	}
	report := func(gateway string) {
		if ready != nil {
			at.gateway = gateway
			ready(at)
		}
	}
	if *embedded {
		return runEmbedded(ctx, cfg, *group, log, stderr, hl, report)
	}
	// echo answers on whichever broker the gateway uses, so it builds the broker as a node does
	// (gateway.NewBroker). A service on one broker builds just that one with its package's New
	// and ConfigFrom, e.g. nats.New(nats.ConfigFrom(cfg), log), and links no other.
	broker, err := gateway.NewBroker(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "echo: service: broker %s: %v\n", cfg.Broker, err)
		return 1
	}
	svc, err := service.New(broker, log, service.WithSigningKeys(cfg.Router.SigningKeys...))
	if err != nil {
		_ = broker.Close()
		fmt.Fprintln(stderr, "echo:", err)
		return 1
	}
	defer svc.Close()
	if err := svc.Start(ctx); err != nil {
		fmt.Fprintln(stderr, "echo:", err)
		return 1
	}
	stopped, err := start(ctx, svc, *group, log)
	if err != nil {
		log.Error("echo cannot consume", "error", err)
		return 1
	}
	hl.consuming(svc, stopped)
	log.Info("echo service ready", "broker", cfg.Broker, "topic_prefix", cfg.TopicPrefix, "group", *group)
	report("")
	<-stopped
	if ctx.Err() == nil {
		log.Error("echo stopped: the broker ended the subscription")
		return 1
	}
	log.Info("echo service stopped")
	return 0
}

// runEmbedded runs a gateway node and the echo service on one in-process memory broker.
func runEmbedded(ctx context.Context, cfg *configs.Config, group string, log *slog.Logger, stderr io.Writer, hl *health, ready func(string)) int {
	if cfg.Broker != configs.BrokerMemory {
		log.Warn("-embedded runs on the in-process memory broker: the configured broker is not used", "broker", cfg.Broker)
		cfg.Broker = configs.BrokerMemory
	}
	if cfg.Development {
		cfg.Auth.JWTSecret = randomHex(32)
		cfg.API.Key = randomHex(16)
		log.Warn("DEVELOPMENT MODE: no way to authenticate clients is configured, so this demo made up a JWT secret and an API key",
			"jwt_secret", cfg.Auth.JWTSecret, "api_key", cfg.API.Key)
	}
	broker := memory.NewBroker(memory.ConfigFrom(cfg)) // as a node builds it: history.channels rules included
	defer broker.Close()
	g, err := gateway.New(cfg, gateway.WithLogger(log), gateway.WithBroker(broker.Node(cfg.TopicPrefix)))
	if err != nil {
		fmt.Fprintln(stderr, "echo:", err)
		return 2
	}
	svc, err := service.New(broker.Node(cfg.TopicPrefix), log, service.WithSigningKeys(cfg.Router.SigningKeys...))
	if err != nil {
		_ = g.Close()
		fmt.Fprintln(stderr, "echo:", err)
		return 2
	}
	defer svc.Close()
	// Consume before clients can connect: the memory broker keeps nothing for a group that does
	// not exist yet.
	stopped, err := start(ctx, svc, group, log)
	if err != nil {
		_ = g.Close()
		log.Error("echo cannot consume", "error", err)
		return 1
	}
	hl.consuming(svc, stopped)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = g.Close()
		fmt.Fprintf(stderr, "echo: listen on %s: %v\n", cfg.Addr, err)
		return 1
	}
	addr := ln.Addr().String()
	if cfg.Auth.JWTSecret != "" {
		token, _ := auth.SignHS256([]byte(cfg.Auth.JWTSecret), "dev", 24*time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(stderr, "\n  Connect: websocat 'ws://localhost:%s/ws?token=%s'\n  Then send: {\"type\":\"send\",\"id\":\"1\",\"data\":{\"hello\":\"world\"}}\n\n", port, token)
	}
	log.Info("echo service ready, with an embedded gateway", "addr", addr, "group", group)
	ready(addr)
	if err := g.Serve(ctx, ln); err != nil {
		log.Error("gateway stopped", "error", err)
		return 1
	}
	_ = svc.Close()
	<-stopped
	log.Info("echo service stopped")
	return 0
}

func newLogger(c configs.LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
