package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/clients/go/wsclient"
	"github.com/wsgateway/gateway/internal/poll"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// TestHooksOverTheBroker: with via broker and no WithHookBroker, the node calls the hooks over
// its own broker (transports/hookbus), and a service's OnHooks answers them.
func TestHooksOverTheBroker(t *testing.T) {
	shared := memory.NewBroker(memory.Config{})
	prefix := transporttest.Prefix(t)
	cfg := testConfig(t, "GATEWAY_HOOKS_RPC_VIA=broker", "GATEWAY_HOOKS_SUBSCRIBE_VIA=broker", "GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*")
	n := startNode(t, cfg, gateway.WithBroker(shared.Node(prefix)))
	svc, err := service.New(shared.Node(prefix), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	err = svc.OnHooks(t.Context(), service.HookHandlers{
		RPC: func(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			return protocol.HookReply{Data: json.RawMessage(`{"echo":` + string(req.Data) + `,"user":"` + req.User + `"}`)}, nil
		},
		Subscribe: func(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.Channel == "room:closed" {
				return protocol.HookReply{Deny: &protocol.HookDeny{Code: "room_closed", Message: "closed for today"}}, nil
			}
			return protocol.HookReply{Data: json.RawMessage(`{"topic":"welcome"}`)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", time.Hour, nil, nil))
	c.Send(`{"type":"rpc","id":"1","method":"echo","data":{"x":1}}`)
	if r := c.Expect("rpc_result"); r.Data() != `{"echo":{"x":1},"user":"alice"}` {
		t.Errorf("rpc_result %v", r)
	}
	c.Send(`{"type":"subscribe","id":"2","channel":"room:closed"}`)
	if e := c.Expect("error"); e.Str("code") != "room_closed" {
		t.Errorf("denied subscribe: %v", e)
	}
	c.Send(`{"type":"subscribe","id":"3","channel":"room:open"}`)
	if s := c.Expect("subscribed"); s.Data() != `{"topic":"welcome"}` {
		t.Errorf("subscribed %v", s)
	}
}

// TestClientRPCAndRefresh: the Go client's RPC and Refresh against a node whose rpc and refresh
// hooks a service answers over the broker; the connection outlives its first token.
func TestClientRPCAndRefresh(t *testing.T) {
	shared := memory.NewBroker(memory.Config{})
	prefix := transporttest.Prefix(t)
	cfg := testConfig(t, "GATEWAY_HOOKS_RPC_VIA=broker", "GATEWAY_HOOKS_REFRESH_VIA=broker")
	n := startNode(t, cfg, gateway.WithBroker(shared.Node(prefix)))
	svc, err := service.New(shared.Node(prefix), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	later := time.Now().Add(time.Hour).Unix()
	err = svc.OnHooks(t.Context(), service.HookHandlers{
		RPC: func(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.Method != "sum" {
				return protocol.HookReply{Deny: &protocol.HookDeny{Code: "no_such_method"}}, nil
			}
			var xs []int
			if err := json.Unmarshal(req.Data, &xs); err != nil {
				return protocol.HookReply{}, err
			}
			total := 0
			for _, x := range xs {
				total += x
			}
			return protocol.HookReply{Data: json.RawMessage(strconv.Itoa(total))}, nil
		},
		Refresh: func(_ context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			return protocol.HookReply{Expires: later}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := wsclient.Dial(ctx, wsclient.Options{URL: n.URL, Token: token(t, "alice", 3*time.Second, nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.RPC(ctx, "sum", []int{1, 2, 3})
	if err != nil || string(got) != "6" {
		t.Fatalf("RPC sum: %s, %v", got, err)
	}
	var werr *wsclient.Error
	if _, err := c.RPC(ctx, "nope", nil); !errors.As(err, &werr) || werr.Code != "no_such_method" {
		t.Fatalf("RPC nope: %v, want the hook's no_such_method", err)
	}
	exp, err := c.Refresh(ctx, "") // the refresh hook decides
	if err != nil || exp.Unix() != later {
		t.Fatalf("Refresh: %v, %v; want %d", exp, err, later)
	}
	exp, err = c.Refresh(ctx, token(t, "alice", 2*time.Hour, nil, nil)) // a new token of the same user
	if err != nil || exp.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("Refresh with a token: %v, %v", exp, err)
	}
	// Past the first token's expiry, the same connection (the same session) still answers.
	session, firstExpiry := c.Session(), time.Now().Add(4*time.Second)
	poll.Until(t, 10*time.Second, func() error {
		if time.Now().Before(firstExpiry) {
			return errors.New("the first token has not expired yet")
		}
		return nil
	})
	if got, err := c.RPC(ctx, "sum", []int{4}); err != nil || string(got) != "4" || c.Session() != session {
		t.Fatalf("after the first expiry: %s, %v, session %s (was %s)", got, err, c.Session(), session)
	}
}
