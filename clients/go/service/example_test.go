package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/hookbus"
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

// A service answers the gateway's hooks through the broker: here it authenticates connections
// from a cookie, lets only members into "room:" channels, and answers the rpc method "time".
// Any replica of the service may answer any request; a hook without a handler (publish,
// refresh here) is answered with an error at once.
func ExampleService_OnHooks() {
	broker := memory.NewBroker(memory.Config{})
	defer broker.Close()
	svc, err := service.New(broker.Node("ws"), nil) // or nats.New(nats.ConfigFrom(cfg), log), ...
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	err = svc.OnHooks(ctx, service.HookHandlers{
		Connect: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			user, ok := strings.CutPrefix(req.Headers["Cookie"], "session=")
			if !ok {
				return protocol.HookReply{Deny: &protocol.HookDeny{Code: "login_required", Message: "log in first"}}, nil
			}
			return protocol.HookReply{User: user, Info: json.RawMessage(`{"plan":"free"}`)}, nil
		},
		Subscribe: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if strings.HasPrefix(req.Channel, "room:") && req.User == "" {
				return protocol.HookReply{Deny: &protocol.HookDeny{Code: "members_only"}}, nil
			}
			return protocol.HookReply{}, nil // allowed, nothing changed
		},
		RPC: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.Method != "time" {
				return protocol.HookReply{Deny: &protocol.HookDeny{Code: "unknown_method", Message: req.Method}}, nil
			}
			return protocol.HookReply{Data: json.RawMessage(`"12:00"`)}, nil
		},
	})
	if err != nil {
		panic(err)
	}

	// What a gateway node does for a client's rpc frame (the node's side is hookbus.Caller).
	node := broker.Node("ws")
	defer node.Close()
	caller, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: node, NodeID: "node-1"})
	if err != nil {
		panic(err)
	}
	defer caller.Close()
	if err := caller.Start(ctx); err != nil {
		panic(err)
	}
	callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	reply, err := caller.Call(callCtx, protocol.HookRequest{Hook: protocol.HookRPC, ID: "r1", Method: "time"})
	fmt.Println(string(reply.Data), err)
	_, err = caller.Call(callCtx, protocol.HookRequest{Hook: protocol.HookRefresh, ID: "r2"})
	fmt.Println(errors.Is(err, hookbus.ErrHandler))
	// Output:
	// "12:00" <nil>
	// true
}
