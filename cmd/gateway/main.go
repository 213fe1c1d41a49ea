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
	if cfg.Development {
		developmentMode(cfg, log)
	}
	if *check {
		fmt.Println("configuration is valid")
		return 0
	}
	if *token != "" {
		t, err := auth.SignHS256([]byte(cfg.Auth.JWTSecret), *token, 24*time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
		if err != nil {
			fmt.Fprintln(os.Stderr, "gateway: -token needs GATEWAY_JWT_SECRET:", err)
			return 2
		}
		fmt.Println(t)
		return 0
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

// developmentMode runs the embedded default with no configuration at all: it makes up a JWT
// secret and an API key, and says so loudly, with a token to try.
func developmentMode(cfg *configs.Config, log *slog.Logger) {
	cfg.Auth.JWTSecret = randomHex(32)
	cfg.API.Key = randomHex(16)
	token, _ := auth.SignHS256([]byte(cfg.Auth.JWTSecret), "dev", 24*time.Hour, []string{"*"}, []string{"*"}, auth.AllowSend())
	log.Warn("DEVELOPMENT MODE: no configuration given, so this node made up a JWT secret and an API key; never run it like this in production",
		"jwt_secret", cfg.Auth.JWTSecret, "api_key", cfg.API.Key)
	fmt.Fprintf(os.Stderr, "\n  Try it:  websocat 'ws://localhost%s/ws?token=%s'\n  Publish: curl -H 'Authorization: Bearer %s' -d '{\"channel\":\"news\",\"data\":{\"hello\":\"world\"}}' http://localhost%s/api/publish\n\n",
		cfg.Addr, token, cfg.API.Key, cfg.Addr)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
