package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/transports/jetstream"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/nats"
)

// A service built from the gateway's own settings answers what clients send. It builds the
// broker it uses (here core NATS) with that broker package's New and ConfigFrom, and links no
// other broker.
func Example() {
	cfg, err := configs.Load("", os.Environ()) // GATEWAY_NATS_URL, GATEWAY_TOPIC_PREFIX, ... as for the gateway
	if err != nil {
		slog.Error("configuration", "error", err)
		return
	}
	b, err := nats.New(nats.ConfigFrom(cfg), slog.Default())
	if err != nil {
		slog.Error("broker", "error", err)
		return
	}
	svc, err := service.New(b, slog.Default(), service.WithSigningKeys(cfg.Router.SigningKeys...))
	if err != nil {
		_ = b.Close()
		slog.Error("service", "error", err)
		return
	}
	defer svc.Close()
	if err := svc.Start(context.Background()); err != nil { // connects in the background
		slog.Error("service", "error", err)
		return
	}
	ctx := context.Background()

	// To everyone subscribed to "news", once even if retried.
	if _, err := svc.ToChannel(ctx, "news", map[string]string{"title": "hello"}, service.WithMsgID("news-1")); err != nil {
		slog.Error("emit", "error", err)
	}

	in, err := svc.Inbound(ctx, "my-service")
	if err != nil {
		slog.Error("consume", "error", err)
		return
	}
	for m := range in {
		_, err := m.Reply(ctx, map[string]any{"got": json.RawMessage(m.Data()), "from": m.User()})
		if err != nil {
			m.Nack() // delivered again
			continue
		}
		m.Ack()
	}
}

// Services and gateway nodes of one process can share an in-process memory broker.
func ExampleNew_memory() {
	broker := memory.NewBroker(memory.Config{HistorySize: 100})
	defer broker.Close()
	// gateway.New(cfg, gateway.WithBroker(broker.Node("ws"))) would be a node of this broker.
	svc, err := service.New(broker.Node("ws"), nil)
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	watch, err := svc.ChannelMessages(ctx, "news")
	if err != nil {
		panic(err)
	}
	id, err := svc.ToChannel(ctx, "news", map[string]string{"title": "hello"}, service.WithMsgID("news-1"))
	if err != nil {
		panic(err)
	}
	m := <-watch
	m.Ack()
	fmt.Println(m.UUID == id, m.Kind(), m.Target(), m.Channel(), m.MsgID(), string(m.Data()))
	// Output: true service channel news news-1 {"title":"hello"}
}

func ExampleService_Events() {
	cfg, err := configs.Load("", os.Environ())
	if err != nil {
		return
	}
	b, err := jetstream.New(jetstream.ConfigFrom(cfg), nil)
	if err != nil {
		return
	}
	svc, err := service.New(b, nil, service.WithSigningKeys(cfg.Router.SigningKeys...))
	if err != nil {
		_ = b.Close()
		return
	}
	defer svc.Close()
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		return
	}
	events, err := svc.Events(ctx, "presence")
	if err != nil {
		return
	}
	for e := range events {
		if e.Type == service.EventDisconnected {
			fmt.Println(e.User, "left", e.Node, "because", e.Reason)
		}
		e.Ack()
	}
}
