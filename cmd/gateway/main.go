// Command gateway runs one node of the WebSocket gateway.
//
//	gateway [-config FILE] [-check-config] [-token USER]
//
// Settings come from FILE and GATEWAY_* variables (see configs). An invalid setting exits with
// status 2 and one line naming the key; SIGTERM or SIGINT drain the node and exit 0.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
)

func main() {
	os.Exit(run())
}

func run() int {
	path := flag.String("config", "", "YAML configuration file")
	check := flag.Bool("check-config", false, "validate the configuration and exit")
	token := flag.String("token", "", "print a 24-hour token for this user id, signed with the configured JWT secret, and exit")
	flag.Parse()

	cfg, err := configs.Load(*path, os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	log := newLogger(cfg.Log)
	gateway.SetLibraryLogger(log)
	for _, u := range configs.UnknownVariables(os.Environ()) {
		log.Warn("ignoring an environment variable that is no setting", "variable", u.Name, "did_you_mean", u.Suggestion)
	}
	if *token != "" {
		return printToken(cfg, *token)
	}
	if *check {
		if err := gateway.Check(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "gateway:", err)
			return 2
		}
		if cfg.Development {
			fmt.Println("configuration is valid (development mode: the node will make up a JWT secret)")
			return 0
		}
		fmt.Println("configuration is valid")
		return 0
	}
	if cfg.Development {
		developmentMode(cfg, log)
	}

	g, err := gateway.New(cfg, gateway.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := g.Run(ctx); err != nil {
		log.Error("gateway stopped", "error", err)
		return 1
	}
	log.Info("gateway stopped")
	return 0
}

func newLogger(c configs.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// printToken prints a 24-hour token for user, signed with the configured JWT secret. Without a
// secret it refuses: a token signed with a made-up one would be accepted by no node.
func printToken(cfg *configs.Config, user string) int {
	if cfg.Auth.JWTSecret == "" {
		why := "-token signs with the JWT secret the nodes verify with, and none is set: export the same GATEWAY_JWT_SECRET (auth.jwt_secret) for the nodes and for -token"
		if cfg.Development {
			why += " (a node started without one makes up its own and prints a token for it)"
		} else {
			why += " (with only auth.jwt_public_key, sign tokens with the private key)"
		}
		fmt.Fprintln(os.Stderr, "gateway:", why)
		return 2
	}
	t, err := auth.SignHS256([]byte(cfg.Auth.JWTSecret), user, 24*time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway: -token:", err)
		return 2
	}
	fmt.Println(t)
	return 0
}

// developmentMode runs the embedded memory broker with no way to authenticate configured: it
// makes up a JWT secret (and an API key, unless one is set), and says so loudly, with a token to
// try.
func developmentMode(cfg *configs.Config, log *slog.Logger) {
	cfg.Auth.JWTSecret = randomHex(32)
	attrs := []any{"jwt_secret", cfg.Auth.JWTSecret}
	apiKey := "$GATEWAY_API_KEY" // an API key the operator set is never printed
	if cfg.API.Key == "" {
		cfg.API.Key = randomHex(16)
		apiKey = cfg.API.Key
		attrs = append(attrs, "api_key", apiKey)
	}
	token, _ := auth.SignHS256([]byte(cfg.Auth.JWTSecret), "dev", 24*time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	log.Warn("DEVELOPMENT MODE: no way to authenticate clients is configured (GATEWAY_JWT_SECRET, GATEWAY_JWT_PUBLIC_KEY, GATEWAY_JWKS_URL or GATEWAY_ALLOW_ANONYMOUS), so this node made up a JWT secret (and an API key, unless one was set); never run it like this in production", attrs...)
	base := localAddr(cfg.Addr)
	fmt.Fprintf(os.Stderr, "\n  Try it:  websocat 'ws://%s/ws?token=%s'\n  Publish: curl -H \"Authorization: Bearer %s\" -d '{\"channel\":\"news\",\"data\":{\"hello\":\"world\"}}' http://%s/api/publish\n\n",
		base, token, apiKey, base)
}

// localAddr is how a client on this machine reaches the listen address addr: localhost for an
// empty or wildcard host.
func localAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
