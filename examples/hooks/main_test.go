package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/wstest"
	"github.com/wsgateway/gateway/protocol"
)

const hooksSecret = "example-hooks-secret-0123"

// syncBuffer is a bytes.Buffer safe for the command's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// command runs the hooks command until the test ends; it returns the addresses ready reported.
func command(t *testing.T, args []string, env ...string) addrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	readyc := make(chan addrs, 1)
	exited := make(chan struct{})
	code := -1
	go func() {
		defer close(exited)
		code = run(ctx, args, env, &logs, func(a addrs) { readyc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
			if code != 0 {
				t.Errorf("hooks exited with %d\n%s", code, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("hooks did not stop in time\n%s", logs.String())
		}
	})
	select {
	case a := <-readyc:
		return a
	case <-exited:
		t.Fatalf("hooks exited with %d before it was ready\n%s", code, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("hooks not ready in time\n%s", logs.String())
	}
	return addrs{}
}

func dialCookie(t *testing.T, base, user string) (*wstest.Client, wstest.Frame) {
	t.Helper()
	c, _, err := wstest.TryDial(t, base, "", http.Header{"Cookie": {"user=" + user}})
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c, c.Expect("welcome")
}

// TestHooksEmbedded runs the command with its own node on the memory broker and checks each of
// the five hooks, answered over the broker, from a client's side.
func TestHooksEmbedded(t *testing.T) {
	const session = 2 * time.Second
	a := command(t, []string{"-embedded", "-session", session.String(), "-trial", "1s"}, "GATEWAY_ADDR=127.0.0.1:0")
	base := "http://" + a.gateway

	t.Run("Connect", func(t *testing.T) {
		for cookie, code := range map[string]string{"": "login_required", "user=mallory": "banned"} {
			_, resp, err := wstest.TryDial(t, base, "", http.Header{"Cookie": {cookie}})
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("cookie %q: %v %v, want 403", cookie, err, resp)
			}
			var body struct{ Error protocol.Error }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if body.Error.Code != code {
				t.Errorf("cookie %q: refusal %+v, want %s", cookie, body, code)
			}
		}
		_, w := dialCookie(t, base, "alice")
		if w.Str("user") != "alice" || w.Data() != `{"hello":"alice"}` {
			t.Errorf("welcome %v", w)
		}
	})

	t.Run("Subscribe", func(t *testing.T) {
		alice, _ := dialCookie(t, base, "alice")
		bob, _ := dialCookie(t, base, "bob")
		alice.Send(`{"type":"subscribe","id":"1","channel":"room:closed"}`)
		if e := alice.Expect("error"); e.Str("code") != "room_closed" {
			t.Errorf("closed room: %v", e)
		}
		if s := alice.Subscribe("room:lobby"); s.Data() != `{"topic":"welcome to room:lobby"}` {
			t.Errorf("subscribed %v", s)
		}
		bob.Subscribe("room:lobby")
		bob.Send(`{"type":"presence","id":"p","channel":"room:lobby"}`)
		p := bob.Expect("presence")
		if b, _ := json.Marshal(p["members"]); !strings.Contains(string(b), `"info":{"name":"alice"}`) {
			t.Errorf("presence %s: want alice's info", b)
		}
		if s := alice.Subscribe("room:trial"); s["expires"] == nil {
			t.Errorf("trial subscribed %v: want expires", s)
		}
		if u := alice.Expect("unsubscribed"); u.Str("channel") != "room:trial" || u.Str("reason") != protocol.UnsubscribeExpired {
			t.Errorf("trial: %v, want unsubscribed expired", u)
		}
	})

	t.Run("Publish", func(t *testing.T) {
		alice, _ := dialCookie(t, base, "alice")
		alice.Subscribe("room:mod")
		alice.Send(`{"type":"publish","id":"1","channel":"room:mod","data":42}`)
		if e := alice.Expect("error"); e.Str("code") != "bad_message" {
			t.Errorf("not a text: %v", e)
		}
		alice.Send(`{"type":"publish","id":"2","channel":"room:mod","data":{"text":"what the heck, Darn it"}}`)
		got := alice.ExpectAll("ack", "message")
		if m := got["message"]; m.Data() != `{"moderated":true,"text":"what the ****, **** it"}` {
			t.Errorf("moderated message %v", m)
		}
		alice.Send(`{"type":"publish","id":"3","channel":"room:mod","data":{"text":"hello"}}`)
		if m := alice.ExpectAll("ack", "message")["message"]; m.Data() != `{"text":"hello"}` {
			t.Errorf("clean message %v", m)
		}
	})

	t.Run("RPC", func(t *testing.T) {
		alice, _ := dialCookie(t, base, "alice")
		for _, tc := range []struct{ frame, typ, want string }{
			{`{"type":"rpc","id":"1","method":"add","data":{"a":1,"b":2}}`, "rpc_result", `{"sum":3}`},
			{`{"type":"rpc","id":"2","method":"whoami"}`, "rpc_result", `{"info":{"name":"alice"},"user":"alice"}`},
			{`{"type":"rpc","id":"3","method":"add","data":{"a":1}}`, "error", "bad_params"},
			{`{"type":"rpc","id":"4","method":"nope"}`, "error", "unknown_method"},
		} {
			alice.Send(tc.frame)
			f := alice.Expect(tc.typ)
			if got := f.Data(); tc.typ == "error" {
				got = f.Str("code")
				if got != tc.want {
					t.Errorf("%s: %v", tc.frame, f)
				}
			} else if got != tc.want {
				t.Errorf("%s: %v", tc.frame, f)
			}
		}
		alice.Send(`{"type":"rpc","id":"5","method":"time"}`)
		if r := alice.Expect("rpc_result"); !strings.Contains(r.Data(), `"now"`) {
			t.Errorf("time: %v", r)
		}
	})

	t.Run("Refresh", func(t *testing.T) {
		alice, _ := dialCookie(t, base, "alice")
		alice.Send(`{"type":"refresh","id":"r"}`)
		r := alice.Expect("refreshed")
		if exp := int64(r["expires"].(float64)); exp < time.Now().Unix() || exp > time.Now().Add(session+time.Second).Unix() {
			t.Errorf("refreshed %v: want about %v from now", r, session)
		}
		// The session's first expiry passes: the node asked the refresh hook before it.
		<-time.After(session + time.Second)
		alice.Send(`{"type":"ping","id":"alive"}`)
		alice.Expect("pong")
	})
}

// sign is the X-Gateway-Signature of body, as a node signs it.
func sign(body []byte) string {
	t := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(hooksSecret))
	mac.Write([]byte(t + "." + string(body)))
	return "t=" + t + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// TestHooksHTTP: with -http-addr the same hooks answer signed POSTs, and refuse unsigned ones;
// a node with hooks via http uses them.
func TestHooksHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port, for the node's rpc hook url
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	a := command(t, []string{"-embedded", "-http-addr", httpAddr}, "GATEWAY_ADDR=127.0.0.1:0", "GATEWAY_HOOKS_SECRET="+hooksSecret,
		"GATEWAY_HOOKS_RPC_VIA=http", "GATEWAY_HOOKS_RPC_URL=http://"+httpAddr+"/hooks/rpc")
	post := func(hook string, body []byte, signed bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+a.http+"/hooks/"+hook, bytes.NewReader(body))
		if signed {
			req.Header.Set(protocol.WebhookSignatureHeader, sign(body))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	body := []byte(`{"hook":"rpc","id":"1","node":"n","user":"alice","session":"s","transport":"websocket","method":"add","data":{"a":2,"b":3}}`)
	if status, got := post("rpc", body, true); status != 200 || got != `{"data":{"sum":5}}` {
		t.Errorf("signed rpc: %d %s", status, got)
	}
	if status, _ := post("rpc", body, false); status != http.StatusUnauthorized {
		t.Errorf("unsigned rpc: %d, want 401", status)
	}
	sub := []byte(`{"hook":"subscribe","id":"2","node":"n","user":"alice","session":"s","transport":"websocket","channel":"room:closed"}`)
	if status, got := post("subscribe", sub, true); status != 200 || got != `{"deny":{"code":"room_closed","message":"this room is closed"}}` {
		t.Errorf("signed subscribe: %d %s", status, got)
	}
	if status, _ := post("nothing", sub, true); status != http.StatusNotFound {
		t.Errorf("unknown hook: %d, want 404", status)
	}

	// The embedded node calls its rpc hook over HTTP (the connect hook still over the broker).
	alice, _ := dialCookie(t, "http://"+a.gateway, "alice")
	alice.Send(`{"type":"rpc","id":"1","method":"add","data":{"a":20,"b":22}}`)
	if r := alice.Expect("rpc_result"); r.Data() != `{"sum":42}` {
		t.Errorf("rpc over http: %v", r)
	}
}
