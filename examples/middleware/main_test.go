package main

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/memory"
)

func TestCustomMiddleware(t *testing.T) {
	secret := "example-secret-0123456789"
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=" + secret})
	if err != nil {
		t.Fatal(err)
	}
	broker := memory.NewBroker(memory.Config{})
	t.Cleanup(broker.Close)
	g, err := New(cfg, gateway.WithBroker(broker.Node("ex")))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close(); _ = g.Close() })

	svc := broker.Node("ex")
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen, err := svc.Subscribe(ctx, protocol.ChannelTopic("chat"))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := auth.SignHS256([]byte(secret), "alice", time.Hour, []string{"*"}, []string{"*"})
	c, _ := wstest.Dial(t, srv.URL, tok)
	c.Send(`{"type":"publish","id":"bad","channel":"chat","data":"the butler did it: spoiler"}`)
	if f := c.Expect("error"); f.Str("code") != "forbidden" || f.Str("id") != "bad" {
		t.Fatalf("banned word: %v", f)
	}
	c.Publish("chat", "hello", "")
	select {
	case m := <-seen:
		m.Ack()
		if string(m.Payload) != `"hello"` || m.Metadata.Get("policy") != "example-v1" || m.Metadata.Get("received_at") == "" {
			t.Fatalf("service saw %s %v", m.Payload, m.Metadata)
		}
	case <-time.After(wstest.Timeout):
		t.Fatal("nothing reached the broker")
	}
}
