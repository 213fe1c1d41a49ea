package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// fakeCentrifugo speaks the subset of Centrifugo's JSON protocol v2 and HTTP API that
// -server centrifugo uses, strictly: a connect command with a valid token first, then a
// subscribe; it pings every connection once and counts the pongs, and sends publications two
// to a frame (one per line) when it can.
type fakeCentrifugo struct {
	t      *testing.T
	secret string
	apiKey string

	mu    sync.Mutex
	conns map[string][]*fakeConn // by channel
	pongs int
}

type fakeConn struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func (f *fakeCentrifugo) fail(format string, args ...any) { f.t.Errorf(format, args...) }

func (f *fakeCentrifugo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/connection/websocket":
		f.serveWS(w, r)
	case "/api/publish":
		f.publish(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeCentrifugo) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	c := &fakeConn{ws: ws}
	send := func(s string) { c.mu.Lock(); _ = ws.WriteMessage(websocket.TextMessage, []byte(s)); c.mu.Unlock() }
	var cmd struct {
		ID      int `json:"id"`
		Connect *struct {
			Token string `json:"token"`
		} `json:"connect"`
		Subscribe *struct {
			Channel string `json:"channel"`
		} `json:"subscribe"`
	}
	_, p, err := ws.ReadMessage()
	if err != nil || json.Unmarshal(p, &cmd) != nil || cmd.ID != 1 || cmd.Connect == nil {
		f.fail("first command %q, want connect with id 1", p)
		return
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(cmd.Connect.Token, claims, func(*jwt.Token) (any, error) { return []byte(f.secret), nil }); err != nil {
		send(`{"id":1,"error":{"code":101,"message":"unauthorized"}}`)
		return
	}
	if _, ok := claims["channels"]; ok {
		f.fail("token has a channels claim (server-side subscriptions in Centrifugo)")
	}
	send(`{"id":1,"connect":{"client":"c","version":"6.9.1","ping":25,"pong":true}}` + "\n{}") // reply and a ping in one frame
	pinged := false
	for {
		_, p, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if string(p) == "{}" {
			if !pinged {
				pinged = true
				f.mu.Lock()
				f.pongs++
				f.mu.Unlock()
			}
			continue
		}
		cmd.Subscribe = nil
		if json.Unmarshal(p, &cmd) != nil || cmd.Subscribe == nil || cmd.ID != 2 {
			f.fail("command %q, want subscribe with id 2", p)
			return
		}
		f.mu.Lock()
		f.conns[cmd.Subscribe.Channel] = append(f.conns[cmd.Subscribe.Channel], c)
		f.mu.Unlock()
		send(`{"id":2,"subscribe":{}}`)
	}
}

func (f *fakeCentrifugo) publish(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-API-Key") != f.apiKey {
		_, _ = io.WriteString(w, `{"error":{"code":103,"message":"permission denied"}}`)
		return
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		f.fail("publish body: %v", err)
		return
	}
	push := `{"push":{"channel":"` + req.Channel + `","pub":{"data":` + string(bytes.TrimSpace(req.Data)) + `,"offset":1}}}`
	f.mu.Lock()
	conns := f.conns[req.Channel]
	f.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		_ = c.ws.WriteMessage(websocket.TextMessage, []byte(push))
		c.mu.Unlock()
	}
	_, _ = io.WriteString(w, `{"result":{}}`)
}

// TestCentrifugo: -server centrifugo connects with the token in the connect command (no
// channels claim), answers the server's ping, subscribes, publishes with X-API-Key and counts
// every publication; a wrong key shows as publish errors (Centrifugo answers 200 with an error).
func TestCentrifugo(t *testing.T) {
	const secret, apiKey = "centrifugo-test-secret-0123456789", "centrifugo-api-key"
	f := &fakeCentrifugo{t: t, secret: secret, apiKey: apiKey, conns: map[string][]*fakeConn{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	o := defaults()
	o.URL, o.Secret, o.APIKey, o.Server = srv.URL, secret, apiKey, serverCentrifugo
	o.Conns, o.Channels, o.Rate, o.Duration = 12, 3, 60, time.Second
	rep, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Subscribed != 12 || rep.Failed != 0 || rep.SubscribeFailed != 0 || rep.PublishErrors != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Published == 0 || rep.Lost != 0 || rep.Received != 4*rep.Published {
		t.Fatalf("published %d, received %d (want 4 per message), lost %d", rep.Published, rep.Received, rep.Lost)
	}
	f.mu.Lock()
	pongs := f.pongs
	f.mu.Unlock()
	if pongs != 12 {
		t.Fatalf("%d connections answered the ping, want 12", pongs)
	}

	o.APIKey = "wrong"
	o.Conns, o.Channels = 2, 1
	rep, err = run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Published != 0 || rep.PublishErrors == 0 {
		t.Fatalf("wrong key: published %d, errors %d", rep.Published, rep.PublishErrors)
	}

	o.Secret, o.APIKey = "another-secret-0123456789abcdef", apiKey
	rep, err = run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Subscribed != 0 || rep.ConnectErrors["connect refused: 101"] != 2 {
		t.Fatalf("bad token: subscribed %d, errors %v", rep.Subscribed, rep.ConnectErrors)
	}
}

// TestCentrifugoFlags: -server takes gateway or centrifugo; centrifugo only over WebSocket,
// publishing through its HTTP API.
func TestCentrifugoFlags(t *testing.T) {
	base := []string{"-secret", "s", "-api-key", "k", "-rate", "1"}
	for _, tc := range []struct {
		args []string
		want string // part of the error; "" for none
	}{
		{[]string{"-server", "centrifugo"}, ""},
		{[]string{"-server", "gateway"}, ""},
		{[]string{"-server", "nchan"}, "-server must be gateway or centrifugo"},
		{[]string{"-server", "centrifugo", "-transport", "sse"}, "-transport websocket only"},
		{[]string{"-server", "centrifugo", "-publish", "broker"}, "HTTP API only"},
		{[]string{"-server", "centrifugo", "-compression"}, "-compression is not supported"},
		{[]string{"-broker-pid", "-1"}, "-broker-pid must be a process id"},
	} {
		_, err := parseFlags(append(tc.args, base...), io.Discard)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
