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

// The five hooks answered over the broker (docs/hooks.md, "Examples"): connect authenticates
// a cookie, subscribe refuses a room and gives presence info and an expiry, publish moderates,
// refresh extends the connection, rpc answers methods. Every replica of the service runs the
// same handlers: any of them may get any request.
func ExampleHookHandlers() {
	cfg, err := configs.Load("", os.Environ()) // the gateway's GATEWAY_* settings
	if err != nil {
		return
	}
	b, err := nats.New(nats.ConfigFrom(cfg), nil) // the gateway's broker
	if err != nil {
		return
	}
	svc, err := service.New(b, nil)
	if err != nil {
		_ = b.Close()
		return
	}
	defer svc.Close()
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		return
	}
	deny := func(code, message string) (protocol.HookReply, error) {
		return protocol.HookReply{Deny: &protocol.HookDeny{Code: code, Message: message}}, nil
	}
	err = svc.OnHooks(ctx, service.HookHandlers{
		// Connect: {"headers":{"Cookie":"user=alice"}} → the connection is alice's for an hour.
		Connect: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			user, ok := strings.CutPrefix(req.Headers["Cookie"], "user=")
			if !ok && req.User == "" {
				return deny("login_required", "log in first")
			}
			if req.User != "" {
				user = req.User // a token's user
			}
			return protocol.HookReply{User: user, Info: json.RawMessage(`{"name":"` + user + `"}`),
				Data: json.RawMessage(`{"plan":"free"}`), Expires: time.Now().Add(time.Hour).Unix()}, nil
		},
		// Subscribe: refuse a room; give the member's presence info, data for the subscribed
		// frame, and end trial subscriptions after a minute.
		Subscribe: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.Channel == "room:closed" {
				return deny("room_closed", "this room is closed")
			}
			reply := protocol.HookReply{Info: json.RawMessage(`{"role":"member"}`), Data: json.RawMessage(`{"topic":"cats"}`)}
			if strings.HasPrefix(req.Channel, "trial:") {
				reply.Expires = time.Now().Add(time.Minute).Unix()
			}
			return reply, nil
		},
		// Publish: replace the data (or deny, or return the zero reply to publish it as sent).
		Publish: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			var msg struct{ Text string }
			if err := json.Unmarshal(req.Data, &msg); err != nil {
				return deny("bad_message", "publish {\"text\":…}")
			}
			clean, _ := json.Marshal(map[string]string{"text": strings.ReplaceAll(msg.Text, "darn", "****")})
			return protocol.HookReply{Data: clean}, nil
		},
		// Refresh: req.Expires is the connection's expiry now; a later one extends it.
		Refresh: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.User == "mallory" {
				return deny("banned", "") // the connection ends at its expiry
			}
			return protocol.HookReply{Expires: time.Now().Add(time.Hour).Unix()}, nil
		},
		// RPC: req.Method and its params req.Data; the reply's data is the result.
		RPC: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			switch req.Method {
			case "orders.total":
				return protocol.HookReply{Data: json.RawMessage(`{"total":"12.50"}`)}, nil
			}
			return deny("unknown_method", req.Method)
		},
	})
	if err != nil {
		slog.Error("hooks", "error", err)
		return
	}
	<-ctx.Done() // answers until the service is stopped
}

// The control commands (docs/hooks.md, "Control"): each returns its command id and reaches
// every node; the standing ones (subscribe, unsubscribe, revoke) need a broker with a control
// store (all but core NATS: ErrNoControlStore).
func ExampleService_SubscribeUser() {
	broker := memory.NewBroker(memory.Config{})
	defer broker.Close()
	svc, err := service.New(broker.Node("ws"), nil) // the broker the gateway uses
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	ctx := context.Background()

	// alice's sessions join room:42 now and whenever she connects, until unsubscribed; the
	// command id of your own makes a retry safe.
	_, err = svc.SubscribeUser(ctx, "alice", "room:42", service.WithCommandID("join-room-42-alice"))
	fmt.Println("subscribe:", err)
	_, err = svc.UnsubscribeUser(ctx, "alice", "room:42")
	fmt.Println("unsubscribe:", err)
	// Every session of alice, on every node; one session (the welcome frame's "session").
	_, err = svc.DisconnectUser(ctx, "alice", service.Disconnect{Code: "kicked", Reason: "account closed"})
	fmt.Println("disconnect user:", err)
	_, err = svc.DisconnectSession(ctx, "3f6c9a", service.Disconnect{Reconnect: true})
	fmt.Println("disconnect session:", err)
	// alice's tokens issued until now are refused for a day; one stolen token until its exp.
	_, err = svc.Revoke(ctx, service.Revocation{User: "alice", Until: time.Now().Add(24 * time.Hour)})
	fmt.Println("revoke user:", err)
	_, err = svc.Revoke(ctx, service.Revocation{JTI: "b1946ac9", Until: time.Now().Add(time.Hour)})
	fmt.Println("revoke jti:", err)
	_, err = svc.Revoke(ctx, service.Revocation{User: "alice"}) // no Until
	fmt.Println("invalid:", errors.Is(err, service.ErrInvalid))
	// Output:
	// subscribe: <nil>
	// unsubscribe: <nil>
	// disconnect user: <nil>
	// disconnect session: <nil>
	// revoke user: <nil>
	// revoke jti: <nil>
	// invalid: true
}
