package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/internal/nodetest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/hookbus"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/redis"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// hookCaller is a node's side of hook calls (hookbus.Caller) on b, started.
func hookCaller(t *testing.T, b transports.Broker, node string) *hookbus.Caller {
	t.Helper()
	c, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: b, NodeID: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

func callHook(c *hookbus.Caller, timeout time.Duration, req protocol.HookRequest) (protocol.HookReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Call(ctx, req)
}

// runOnHooks: the handler of each hook answers it, a hook without a handler fails at once with
// the service's error, and several requests are handled at once.
func runOnHooks(t *testing.T, svcBroker, nodeBroker transports.Broker) {
	svc, err := service.New(svcBroker, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	const parallel = 3
	var arrived sync.WaitGroup
	arrived.Add(parallel)
	err = svc.OnHooks(t.Context(), service.HookHandlers{
		Connect: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			if req.Headers["Cookie"] == "session=alice" {
				return protocol.HookReply{User: "alice", Info: json.RawMessage(`{"name":"Alice"}`)}, nil
			}
			return protocol.HookReply{Deny: &protocol.HookDeny{Code: "no_cookie", Message: "log in first"}}, nil
		},
		RPC: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
			switch req.Method {
			case "sum":
				var xs []int
				if err := json.Unmarshal(req.Data, &xs); err != nil {
					return protocol.HookReply{}, err
				}
				sum := 0
				for _, x := range xs {
					sum += x
				}
				return protocol.HookReply{Data: json.RawMessage(fmt.Sprint(sum))}, nil
			case "together":
				// Returns only once parallel requests are all in a handler: fails (by the
				// deadline) if the service handled them one at a time.
				arrived.Done()
				waited := make(chan struct{})
				go func() { arrived.Wait(); close(waited) }()
				select {
				case <-waited:
					return protocol.HookReply{Data: json.RawMessage(`"together"`)}, nil
				case <-ctx.Done():
					return protocol.HookReply{}, ctx.Err()
				}
			}
			return protocol.HookReply{Deny: &protocol.HookDeny{Code: "unknown_method"}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := hookCaller(t, nodeBroker, "node-1")

	// The first answer shows the service consuming (a real broker may still be connecting).
	transporttest.WaitFor(t, wait, func() error {
		rep, err := callHook(c, 2*time.Second, protocol.HookRequest{Hook: protocol.HookRPC, ID: "1", Method: "sum", Data: json.RawMessage(`[1,2,3]`)})
		if err != nil {
			return err
		}
		if string(rep.Data) != "6" {
			return fmt.Errorf("sum: got %s, want 6", rep.Data)
		}
		return nil
	})

	rep, err := callHook(c, wait, protocol.HookRequest{Hook: protocol.HookConnect, ID: "2", Headers: map[string]string{"Cookie": "session=alice"}})
	if err != nil || rep.User != "alice" || string(rep.Info) != `{"name":"Alice"}` {
		t.Fatalf("connect: %+v, %v", rep, err)
	}
	rep, err = callHook(c, wait, protocol.HookRequest{Hook: protocol.HookConnect, ID: "3"})
	if err != nil || rep.Err() == nil || rep.Err().Code != "no_cookie" {
		t.Fatalf("connect without cookie: %+v, %v; want the deny no_cookie", rep, err)
	}

	// No subscribe handler: an error at once, long before the hour.
	_, err = callHook(c, time.Hour, protocol.HookRequest{Hook: protocol.HookSubscribe, ID: "4", Channel: "news"})
	if !errors.Is(err, hookbus.ErrHandler) || !strings.Contains(err.Error(), `no "subscribe" hook handler`) {
		t.Fatalf("hook without a handler: %v, want ErrHandler naming the hook", err)
	}

	var wg sync.WaitGroup
	errs := make([]error, parallel)
	for i := range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := callHook(c, wait, protocol.HookRequest{Hook: protocol.HookRPC, ID: fmt.Sprint("t", i), Method: "together"})
			if err == nil && string(rep.Data) != `"together"` {
				err = fmt.Errorf("got %s", rep.Data)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent call %d: %v", i, err)
		}
	}
}

func TestOnHooksMemory(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	node := broker.Node("hooks")
	t.Cleanup(func() { _ = node.Close() })
	runOnHooks(t, broker.Node("hooks"), node)
}

func TestOnHooksRedis(t *testing.T) {
	const addr = "127.0.0.1:6379"
	if !nodetest.Reachable(addr) {
		t.Skipf("no redis server on %s", addr)
	}
	prefix := nodetest.SharedPrefix(t)
	mk := func() transports.Broker {
		b, err := redis.New(redis.Config{Addr: addr, Prefix: prefix, BlockTimeout: time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	node := mk()
	t.Cleanup(func() { _ = node.Close() })
	if err := node.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	runOnHooks(t, mk(), node)
}

// TestOnHooksArguments: OnHooks needs a handler, and fails after Close.
func TestOnHooksArguments(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	svc, err := service.New(broker.Node("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.OnHooks(t.Context(), service.HookHandlers{}); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("no handlers: %v, want ErrInvalid", err)
	}
	_ = svc.Close()
	rpc := func(context.Context, *protocol.HookRequest) (protocol.HookReply, error) {
		return protocol.HookReply{}, nil
	}
	if err := svc.OnHooks(t.Context(), service.HookHandlers{RPC: rpc}); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}
