package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestBareMelody: a connection is welcomed, subscribes, and receives what POST /api/publish
// sends to its channel and nothing sent to another; a publish without the key is refused. The
// same with -watermill (through a Watermill router), with and without -middleware, and with
// -broker gochannel and -broker redis (two trips through the router, a broker between them).
func TestBareMelody(t *testing.T) {
	for _, mode := range []string{"plain", "watermill", "watermill+middleware", "gochannel", "redis"} {
		t.Run(mode, func(t *testing.T) {
			s := newServer("k")
			if mode == "gochannel" || mode == "redis" {
				b, err := newBroker(mode, redisAddr())
				if err != nil {
					t.Fatal(err)
				}
				s.broker = b
			}
			if mode != "plain" {
				if err := s.startWatermill(mode == "watermill+middleware"); err != nil {
					t.Fatal(err)
				}
				if s.pubsub == nil {
					t.Fatal("no pub/sub: publish would not go through the router")
				}
			}
			defer s.close()
			testServer(t, s)
		})
	}
}

// redisAddr is the Redis of the tests (GATEWAY_REDIS_ADDR, as the gateway's own tests use).
func redisAddr() string {
	if a := os.Getenv("GATEWAY_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func testServer(t *testing.T, s *server) {
	srv := httptest.NewServer(s.mux())
	defer srv.Close()
	dial := func(channel string) *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		expect(t, ws, `{"type":"welcome"}`)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1","channel":"`+channel+`"}`)); err != nil {
			t.Fatal(err)
		}
		expect(t, ws, `{"type":"subscribed","id":"1","channel":"`+channel+`"}`)
		return ws
	}
	a, b := dial("a"), dial("b")
	defer a.Close()
	defer b.Close()
	publish := func(key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := publish("wrong", `{"channel":"a","data":1}`); code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", code)
	}
	if code := publish("k", `{"channel":"a"}`); code != http.StatusBadRequest {
		t.Fatalf("no data: %d", code)
	}
	if code := publish("k", `{"channel":"b","data":{"n":1}}`); code != http.StatusOK {
		t.Fatalf("publish: %d", code)
	}
	if code := publish("k", `{"channel":"a","data":{"n":2}}`); code != http.StatusOK {
		t.Fatalf("publish: %d", code)
	}
	expect(t, a, `{"type":"message","channel":"a","data":{"n":2}}`) // not b's message first
	expect(t, b, `{"type":"message","channel":"b","data":{"n":1}}`)
}

func expect(t *testing.T, ws *websocket.Conn, want string) {
	t.Helper()
	_, p, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != want {
		t.Fatalf("got %s, want %s", p, want)
	}
}
