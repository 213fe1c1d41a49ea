package hookbus_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/hookbus"
	"github.com/wsgateway/gateway/transports/memory"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// serveEcho serves b with a handler answering every request {"data":"ok"}, with now as the
// service's clock.
func serveEcho(t *testing.T, b transports.Broker, now func() time.Time) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, err := hookbus.Serve(ctx, hookbus.ServeConfig{Broker: b, Now: now,
		Handler: func(context.Context, *protocol.HookRequest) (protocol.HookReply, error) {
			return protocol.HookReply{Data: []byte(`"ok"`)}, nil
		}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done })
}

// request publishes a request with payload, operation id op, for node "n", with deadline.
func request(t *testing.T, b transports.Broker, op, payload string, deadline time.Time) {
	t.Helper()
	m := transporttest.NewMessage(payload, protocol.MetaOperationID, op, protocol.MetaReplyNode, "n",
		protocol.MetaHook, protocol.HookRPC, protocol.MetaDeadline, strconv.FormatInt(deadline.UnixMilli(), 10))
	if err := b.Publish(protocol.TopicHooks, m); err != nil {
		t.Fatal(err)
	}
}

func replies(t *testing.T, b transports.Broker) <-chan *message.Message {
	t.Helper()
	ch, err := b.Subscribe(t.Context(), protocol.TopicReplies)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestServeAnswersUndecodable: a request whose payload is not a HookRequest is answered with
// the error metadata (the node's call fails at once), not dropped.
func TestServeAnswersUndecodable(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	b := broker.Node("p")
	out := replies(t, b)
	serveEcho(t, b, nil)
	request(t, b, "op-1", `not json`, time.Now().Add(time.Minute))
	m := transporttest.Receive(t, out, 1, 10*time.Second)[0]
	if m.Metadata.Get(protocol.MetaOperationID) != "op-1" || m.Metadata.Get(protocol.MetaReplyNode) != "n" ||
		m.Metadata.Get(protocol.MetaHookHasError) != "1" || m.Metadata.Get(protocol.MetaHookError) == "" {
		t.Fatalf("reply metadata %v: want the operation, the node and the error", m.Metadata)
	}
}

// TestServeClockSkew: a service whose clock is ahead of the node's by less than the tolerated
// skew answers a request the node still waits for; one past its deadline by more is dropped.
func TestServeClockSkew(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	b := broker.Node("p")
	out := replies(t, b)
	ahead := hookbus.DefaultClockSkew / 2
	serveEcho(t, b, func() time.Time { return time.Now().Add(ahead) })
	node := time.Now()
	request(t, b, "stale", `{"hook":"rpc","id":"stale","method":"m"}`, node.Add(-hookbus.DefaultClockSkew))
	request(t, b, "live", `{"hook":"rpc","id":"live","method":"m"}`, node.Add(ahead/2)) // past by the service's clock only
	m := transporttest.Receive(t, out, 1, 10*time.Second)[0]
	if op := m.Metadata.Get(protocol.MetaOperationID); op != "live" || m.Metadata.Get(protocol.MetaHookHasError) != "0" {
		t.Fatalf("reply to %s (%v): want the live request's, answered", op, m.Metadata)
	}
}
