package gateway_test

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/transports/nats"
)

func startNATS(t *testing.T, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(wstest.Timeout) {
		t.Fatal("nats-server did not start")
	}
	return s
}

func readyStatus(base string) int {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A broker outage: the node stays up, /readyz says 503, publishes get `unavailable` rather than
// hanging, and everything comes back by itself when the broker does.
func TestBrokerOutage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv := startNATS(t, port)
	t.Cleanup(func() { srv.Shutdown() })

	broker, err := nats.New(nats.Config{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Prefix: "outage", ReconnectWait: 100 * time.Millisecond, ReconnectJitter: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, testConfig(t, "GATEWAY_WS_PUBLISH_TIMEOUT=2s", "GATEWAY_ROUTER_RETRY_MAX_ELAPSED=500ms"), gateway.WithBroker(broker))
	c, _ := wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Subscribe("news")
	c.Send(`{"type":"publish","id":"before","channel":"news","data":1}`)
	last := c.ExpectAll("ack", "message")["message"].Str("position")

	srv.Shutdown()
	srv.WaitForShutdown()
	wstest.WaitFor(t, func() error {
		if s := readyStatus(n.URL); s != 503 {
			return fmt.Errorf("/readyz %d during the outage", s)
		}
		return nil
	})
	// Core NATS drops what is published while a node is cut off, so the node tells its
	// subscribers to resume (they will learn recovered:false) rather than let them miss it.
	if f := c.Expect("disconnect"); f.Str("code") != "resubscribe" || !f.Bool("reconnect") {
		t.Fatalf("subscriber during the outage %v", f)
	}
	c, _ = wstest.Dial(t, n.URL, allowAll(t, "alice"))
	c.Send(`{"type":"publish","id":"during","channel":"news","data":2}`)
	if f := c.Expect("error"); f.Str("code") != "unavailable" || f.Str("id") != "during" {
		t.Fatalf("publish during the outage %v", f)
	}
	c.Send(`{"type":"subscribe","id":"again","channel":"news","since":"` + last + `"}`)
	if f := c.Expect("subscribed"); f.Bool("recovered") {
		t.Fatalf("resubscribe on core NATS claims recovery: %v", f)
	}
	if s := readyStatus(n.URL); s != 503 {
		t.Fatalf("/readyz %d", s)
	}

	srv = startNATS(t, port)
	wstest.WaitFor(t, func() error {
		if s := readyStatus(n.URL); s != 200 {
			return fmt.Errorf("/readyz %d after the broker came back", s)
		}
		return nil
	})
	c.Send(`{"type":"publish","id":"after","channel":"news","data":3}`)
	got := c.ExpectAll("ack", "message")
	if got["message"].Data() != "3" {
		t.Fatalf("after the outage %v", got)
	}
}
