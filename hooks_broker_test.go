package gateway_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
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
	c, _ := wstest.Dial(t, n.URL, token(t, "alice", 3600e9, nil, nil))
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
