package service_test

import (
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/clients/go/service"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports/memory"
)

// A node that dies without a word (here: cut off from the broker) publishes no disconnected
// events; Presence makes them up once its heartbeat has been silent for the timeout.
func TestPresenceNoticesADeadNode(t *testing.T) {
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	link := broker.Node("pres")
	url := startNode(t, testConfig(t, "GATEWAY_EVENTS_HEARTBEAT=50ms", "GATEWAY_NODE_ID=doomed"), gateway.WithBroker(link))
	svc, err := service.New(broker.Node("pres"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	events, err := svc.Presence(ctx(t), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := auth.SignHS256([]byte(testSecret), "alice", time.Hour, []string{"*"}, nil)
	_, w := wstest.Dial(t, url, tok)
	session := w.Str("session")
	next := func() *service.Event {
		for {
			e := receive(t, events)
			if e.Type != service.EventNodeAlive {
				return e
			}
		}
	}
	if e := next(); e.Type != service.EventConnected || e.Session != session {
		t.Fatalf("first event %+v", e)
	}
	_ = link.Close() // the node is cut off: no more events, no heartbeat, alice still "connected"
	e := next()
	if e.Type != service.EventDisconnected || e.Session != session || e.User != "alice" || e.Node != "doomed" || e.Reason != service.ReasonNodeLost {
		t.Fatalf("after the node went silent: %+v", e)
	}
}
