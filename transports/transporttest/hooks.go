package transporttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/requestreply"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/hookbus"
)

// HookFeatures says how RunHookCalls runs on the broker under test.
type HookFeatures struct {
	// Timeout bounds each wait (default 20 s).
	Timeout time.Duration
	// RestartBroker stops and starts the broker the nodes talk to; nil skips the restart test.
	RestartBroker func(t *testing.T)
}

// RunHookCalls is the conformance suite of hook calls over the broker (transports/hookbus): two
// service replicas answer in group protocol.HooksGroup, two nodes ask. newNode must give nodes
// whose SubscribeGroup on TopicHooks can hand messages to two members at once (on Kafka: two
// service partitions at least).
func RunHookCalls(t *testing.T, f HookFeatures, newNode NewNode) {
	if f.Timeout == 0 {
		f.Timeout = 20 * time.Second
	}
	h := &hookSuite{f: f, newNode: func(t *testing.T, prefix string) transports.Broker {
		t.Helper()
		b := newNode(t, prefix)
		t.Cleanup(func() { _ = b.Close() })
		WaitFor(t, f.Timeout, func() error { return b.Ping(t.Context()) })
		return b
	}}
	t.Run("AnsweredOnceByOneReplica", h.testAnsweredOnce)
	t.Run("HandlerError", h.testHandlerError)
	t.Run("NoService", h.testNoService)
	t.Run("LateServiceSkipsExpired", h.testLateService)
	t.Run("BrokerRestart", h.testRestart)
}

type hookSuite struct {
	f       HookFeatures
	newNode NewNode
}

// replica is one service replica: what it handled, by request id.
type replica struct {
	name    string
	release chan struct{} // closed by free: "slow" calls answer
	freed   sync.Once
	mu      sync.Mutex
	handled map[string]int
}

func (r *replica) free() { r.freed.Do(func() { close(r.release) }) }

func (r *replica) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled[id]
}

func (r *replica) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.handled {
		n += c
	}
	return n
}

// echo is the reply data of method "echo".
type echo struct {
	ID string `json:"id"`
	By string `json:"by"`
}

// serve starts a replica on b until the test ends or stop is called; stop waits until every
// handler returned. Methods: "echo" answers echo{id, replica}; "fail" returns an error; "invalid"
// answers a deny with a bad code; "slow" answers once the test released it (release).
func (h *hookSuite) serve(t *testing.T, b transports.Broker, name string) (*replica, func()) {
	t.Helper()
	r := &replica{name: name, handled: map[string]int{}, release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	// One clock for the node and the replicas: no skew tolerated, so a request past its deadline
	// is dropped at once (testLateService).
	done, err := hookbus.Serve(ctx, hookbus.ServeConfig{Broker: b, ClockSkew: -1, Handler: func(ctx context.Context, req *protocol.HookRequest) (protocol.HookReply, error) {
		r.mu.Lock()
		r.handled[req.ID]++
		r.mu.Unlock()
		switch req.Method {
		case "echo":
			data, _ := json.Marshal(echo{ID: req.ID, By: name})
			return protocol.HookReply{Data: data}, nil
		case "fail":
			return protocol.HookReply{}, errors.New("refused by the test handler")
		case "invalid":
			return protocol.HookReply{Deny: &protocol.HookDeny{Code: "Not A Code"}}, nil
		case "slow":
			<-r.release
			return protocol.HookReply{Data: json.RawMessage(`"late"`)}, nil
		}
		return protocol.HookReply{}, fmt.Errorf("unknown method %q", req.Method)
	}})
	if err != nil {
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	t.Cleanup(r.free) // first: a "slow" handler must not hold stop
	return r, stop
}

func (h *hookSuite) caller(t *testing.T, b transports.Broker, node string) *hookbus.Caller {
	t.Helper()
	c, err := hookbus.NewCaller(hookbus.CallerConfig{Broker: b, NodeID: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Caller.Start: %v", err)
	}
	return c
}

func call(c *hookbus.Caller, timeout time.Duration, id, method string) (protocol.HookReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Call(ctx, protocol.HookRequest{Hook: protocol.HookRPC, ID: id, User: "u", Transport: "websocket", Method: method})
}

// echoCall calls method echo and checks that the reply is this call's.
func echoCall(c *hookbus.Caller, timeout time.Duration, id string) (echo, error) {
	rep, err := call(c, timeout, id, "echo")
	if err != nil {
		return echo{}, err
	}
	var e echo
	if err := json.Unmarshal(rep.Data, &e); err != nil {
		return echo{}, fmt.Errorf("reply data %s: %w", rep.Data, err)
	}
	if e.ID != id {
		return e, fmt.Errorf("call %s got the reply of %s", id, e.ID)
	}
	return e, nil
}

// warm waits until every replica answered a call of c: all members of the group are consuming.
func (h *hookSuite) warm(t *testing.T, c *hookbus.Caller, rs ...*replica) {
	t.Helper()
	n := 0
	WaitFor(t, h.f.Timeout, func() error {
		n++
		if _, err := echoCall(c, 2*time.Second, fmt.Sprintf("warm-%d", n)); err != nil {
			return err
		}
		for _, r := range rs {
			if r.total() == 0 {
				return fmt.Errorf("replica %s answered nothing yet", r.name)
			}
		}
		return nil
	})
}

// testAnsweredOnce: calls from two nodes at once are each answered once, by one of the two
// replicas, and each reply reaches the call that asked, on the node that asked.
func (h *hookSuite) testAnsweredOnce(t *testing.T) {
	prefix := Prefix(t)
	r1, _ := h.serve(t, h.newNode(t, prefix), "replica-1")
	r2, _ := h.serve(t, h.newNode(t, prefix), "replica-2")
	ask := []*hookbus.Caller{h.caller(t, h.newNode(t, prefix), "node-1"), h.caller(t, h.newNode(t, prefix), "node-2")}
	h.warm(t, ask[0], r1, r2)
	h.warm(t, ask[1], r1, r2)

	const perNode = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	for n, c := range ask {
		for i := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("call-%d-%d", n, i)
				if _, err := echoCall(c, h.f.Timeout, id); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for n := range ask {
		for i := range perNode {
			id := fmt.Sprintf("call-%d-%d", n, i)
			if got := r1.count(id) + r2.count(id); got != 1 {
				t.Errorf("%s handled %d times (replica-1 %d, replica-2 %d), want once", id, got, r1.count(id), r2.count(id))
			}
		}
	}
	for _, c := range ask {
		if w := c.Waiting(); w != 0 {
			t.Errorf("%d calls still registered after all returned", w)
		}
	}
}

// testHandlerError: a handler's error, and a reply that fails HookReply.Check, come back as
// errors before the deadline, not as timeouts; a slow handler's call fails by its deadline.
func (h *hookSuite) testHandlerError(t *testing.T) {
	prefix := Prefix(t)
	r, _ := h.serve(t, h.newNode(t, prefix), "replica")
	c := h.caller(t, h.newNode(t, prefix), "node")
	h.warm(t, c, r)

	_, err := call(c, time.Hour, "fail-1", "fail")
	var he requestreply.CommandHandlerError
	if !errors.Is(err, hookbus.ErrHandler) || !errors.As(err, &he) || !strings.Contains(err.Error(), "refused by the test handler") {
		t.Errorf("handler error: got %v, want ErrHandler with the handler's text", err)
	}
	if errors.Is(err, hookbus.ErrNoReply) {
		t.Errorf("handler error reported as a timeout: %v", err)
	}

	_, err = call(c, time.Hour, "invalid-1", "invalid")
	if !errors.Is(err, hookbus.ErrInvalidReply) || !strings.Contains(err.Error(), "deny.code") {
		t.Errorf("invalid reply: got %v, want ErrInvalidReply naming deny.code", err)
	}

	_, err = call(c, 500*time.Millisecond, "slow-1", "slow")
	var te requestreply.ReplyTimeoutError
	if !errors.Is(err, hookbus.ErrNoReply) || !errors.As(err, &te) {
		t.Errorf("slow handler: got %v, want ErrNoReply with a ReplyTimeoutError", err)
	}
	// The slow handler's reply comes after the call gave up: it is dropped, and the next call
	// gets its own reply.
	r.free()
	WaitFor(t, h.f.Timeout, func() error {
		_, err := echoCall(c, 2*time.Second, "after-slow")
		return err
	})
	if w := c.Waiting(); w != 0 {
		t.Errorf("%d calls still registered", w)
	}
	if r.count("slow-1") != 1 {
		t.Errorf("the slow request was handled %d times, want once", r.count("slow-1"))
	}
}

// testNoService: with no service subscribed, a call fails by its deadline with ErrNoReply.
func (h *hookSuite) testNoService(t *testing.T) {
	c := h.caller(t, h.newNode(t, Prefix(t)), "node")
	_, err := call(c, time.Second, "nobody", "echo")
	var te requestreply.ReplyTimeoutError
	if !errors.Is(err, hookbus.ErrNoReply) || !errors.As(err, &te) {
		t.Fatalf("got %v, want ErrNoReply with a ReplyTimeoutError", err)
	}
	if !strings.Contains(err.Error(), "no reply") {
		t.Errorf("error %q does not say there was no reply", err)
	}
}

// testLateService: a request published while the group had no member (it had one before, so
// brokers that keep group messages keep this one) is not answered by a member that subscribes
// after its deadline.
func (h *hookSuite) testLateService(t *testing.T) {
	prefix := Prefix(t)
	first, stopFirst := h.serve(t, h.newNode(t, prefix), "first")
	c := h.caller(t, h.newNode(t, prefix), "node")
	h.warm(t, c, first)
	stopFirst()

	if _, err := call(c, time.Second, "expired", "echo"); !errors.Is(err, hookbus.ErrNoReply) {
		t.Fatalf("call with no member: got %v, want ErrNoReply", err)
	}
	late, _ := h.serve(t, h.newNode(t, prefix), "late")
	n := 0
	WaitFor(t, h.f.Timeout, func() error {
		n++
		_, err := echoCall(c, 2*time.Second, fmt.Sprintf("fresh-%d", n))
		return err
	})
	// More calls, so that on brokers with several partitions one follows the expired request.
	for i := range 8 {
		if _, err := echoCall(c, h.f.Timeout, fmt.Sprintf("more-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := late.count("expired") + first.count("expired"); got != 0 {
		t.Fatalf("the request past its deadline was handled %d times", got)
	}
}

// testRestart: after the broker restarted, calls are answered again (the Caller's replies
// subscription and the service's hooks subscription come back, however the broker ended them).
func (h *hookSuite) testRestart(t *testing.T) {
	if h.f.RestartBroker == nil {
		t.Skip("the broker cannot be restarted here")
	}
	prefix := Prefix(t)
	r, _ := h.serve(t, h.newNode(t, prefix), "replica")
	c := h.caller(t, h.newNode(t, prefix), "node")
	h.warm(t, c, r)
	h.f.RestartBroker(t)
	n := 0
	WaitFor(t, h.f.Timeout, func() error {
		n++
		_, err := echoCall(c, 2*time.Second, fmt.Sprintf("after-restart-%d", n))
		return err
	})
}
