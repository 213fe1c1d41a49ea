package hookbus_test

import (
	"context"
	"errors"
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

func newCaller(t *testing.T, b transports.Broker, node string) *hookbus.Caller {
	t.Helper()
	c, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: b, NodeID: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// requests subscribes to TopicHooks as the services' group would, to see the requests.
func requests(t *testing.T, b transports.Broker) <-chan *message.Message {
	t.Helper()
	ch, err := b.SubscribeGroup(t.Context(), protocol.TopicHooks, protocol.HooksGroup)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func reply(t *testing.T, b transports.Broker, node, op, data string) {
	t.Helper()
	m := transporttest.NewMessage(`{"data":`+data+`}`, protocol.MetaReplyNode, node, protocol.MetaOperationID, op)
	if err := b.Publish(protocol.TopicReplies, m); err != nil {
		t.Fatal(err)
	}
}

type result struct {
	rep protocol.HookReply
	err error
}

// TestCallRequestAndReplies: the request carries the hook, node, deadline and operation id; a
// reply addressed to another node is not the call's; the node's reply is.
func TestCallRequestAndReplies(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	b := broker.Node("p")
	reqs := requests(t, b)
	c := newCaller(t, b, "node-1")
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deadline, _ := ctx.Deadline()
	done := make(chan result, 1)
	go func() {
		rep, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookSubscribe, ID: "r1", Channel: "news"})
		done <- result{rep, err}
	}()
	m := transporttest.Receive(t, reqs, 1, 10*time.Second)[0]
	md := m.Metadata
	if md.Get(protocol.MetaHook) != protocol.HookSubscribe || md.Get(protocol.MetaReplyNode) != "node-1" ||
		md.Get(protocol.MetaDeadline) != strconv.FormatInt(deadline.UnixMilli(), 10) || md.Get(protocol.MetaOperationID) == "" {
		t.Fatalf("request metadata %v", md)
	}
	if string(m.Payload) != `{"hook":"subscribe","id":"r1","node":"node-1","user":"","transport":"","channel":"news"}` {
		t.Fatalf("request payload %s", m.Payload)
	}
	op := md.Get(protocol.MetaOperationID)
	reply(t, b, "node-2", op, `"wrong"`) // same operation id, another node: not this call's
	reply(t, b, "node-1", op, `"right"`)
	r := <-done
	if r.err != nil || string(r.rep.Data) != `"right"` {
		t.Fatalf("call: %s, %v; want the reply addressed to node-1", r.rep.Data, r.err)
	}
	// A second reply to the same call, late: dropped.
	reply(t, b, "node-1", op, `"again"`)
	if w := c.Waiting(); w != 0 {
		t.Fatalf("%d calls registered", w)
	}
}

// TestCallerLifecycle: Call before Start and after Close fails; Close fails a waiting call at
// once; Close is safe twice and before Start.
func TestCallerLifecycle(t *testing.T) {
	if _, err := hookbus.NewCaller(hookbus.CallerConfig{NodeID: "n"}); err == nil {
		t.Fatal("NewCaller without a broker")
	}
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	b := broker.Node("p")
	if _, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: b}); err == nil {
		t.Fatal("NewCaller without a node id")
	}
	unstarted := newCaller(t, b, "n")
	if _, err := unstarted.Call(t.Context(), protocol.HookRequest{Hook: protocol.HookRPC}); !errors.Is(err, transports.ErrNotStarted) {
		t.Fatalf("Call before Start: %v", err)
	}
	_ = unstarted.Close()
	_ = unstarted.Close()

	reqs := requests(t, b)
	c := newCaller(t, b, "n")
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		_, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC})
		done <- err
	}()
	transporttest.Receive(t, reqs, 1, 10*time.Second) // the call is waiting
	_ = c.Close()
	if err := <-done; !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("waiting call at Close: %v, want ErrClosed", err)
	}
	if _, err := c.Call(t.Context(), protocol.HookRequest{Hook: protocol.HookRPC}); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}
	if err := c.Start(t.Context()); !errors.Is(err, transports.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	_ = c.Close()
}

// stuck is a broker whose Publish on TopicHooks waits until release is closed.
type stuck struct {
	transports.Broker
	release chan struct{}
}

func (s *stuck) Publish(topic string, msgs ...*message.Message) error {
	if topic == protocol.TopicHooks {
		<-s.release
	}
	return s.Broker.Publish(topic, msgs...)
}

// TestCallBoundedByDeadline: a publish that does not return in time does not hold the call past
// its deadline; the error is ErrNoReply, and matches context.DeadlineExceeded.
func TestCallBoundedByDeadline(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	b := &stuck{Broker: broker.Node("p"), release: make(chan struct{})}
	c := newCaller(t, b, "n")
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, protocol.HookRequest{Hook: protocol.HookConnect})
	if !errors.Is(err, hookbus.ErrNoReply) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrNoReply and DeadlineExceeded", err)
	}
	close(b.release) // the publish ends; Close waits for it
	_ = c.Close()
	// A call whose context already ended publishes nothing.
	if _, err := newCallerStarted(t, broker.Node("p")).Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC}); !errors.Is(err, hookbus.ErrNoReply) {
		t.Fatalf("call past its deadline: %v", err)
	}
}

func newCallerStarted(t *testing.T, b transports.Broker) *hookbus.Caller {
	t.Helper()
	c := newCaller(t, b, "n2")
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}
