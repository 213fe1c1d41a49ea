// Command middleware builds its own gateway with two middleware of its own, the way an operator
// extends the product: one enriches what clients publish with metadata for the services, the
// other refuses publishes that contain a banned word.
//
//	GATEWAY_JWT_SECRET=... go run ./examples/middleware
package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
)

// Enrich stamps every message clients submit with when and by which edition of the policy it
// was accepted, for the services downstream.
func Enrich(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if message.HandlerNameFromCtx(msg.Context()) == gateway.HandlerInbound {
			msg.Metadata.Set("received_at", time.Now().UTC().Format(time.RFC3339Nano))
			msg.Metadata.Set("policy", "example-v1")
		}
		return h(msg)
	}
}

// RejectWord refuses client messages whose payload contains word: the client gets an error frame
// with code forbidden, and nothing reaches the broker.
func RejectWord(word string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if message.HandlerNameFromCtx(msg.Context()) == gateway.HandlerInbound && bytes.Contains(msg.Payload, []byte(word)) {
				return nil, gateway.Refuse("forbidden", "this message contains a banned word")
			}
			return h(msg)
		}
	}
}

// New builds the node with both middleware (in this order: enrich, then reject).
func New(cfg *configs.Config, opts ...gateway.Option) (*gateway.Gateway, error) {
	opts = append(opts, gateway.WithMiddleware(Enrich, RejectWord("spoiler")))
	return gateway.New(cfg, opts...)
}

func main() {
	cfg, err := configs.Load("", os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	g, err := New(cfg, gateway.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := g.Run(ctx); err != nil {
		log.Error("stopped", "error", err)
		os.Exit(1)
	}
}
