package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
)

const testSecret = "chat-test-secret-0123456789"

func newTestServer(t *testing.T, now func() time.Time) *httptest.Server {
	t.Helper()
	client := fstest.MapFS{"index.js": {Data: []byte("export class Client {}\n")}}
	h, err := newHandler([]byte(testSecret), []string{"ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws"}, nil, client, now,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// The token is one the gateway accepts: signed with its secret, for the user, allowed on chat
// rooms and $user, publishing to chat rooms only, expiring in an hour.
func TestTokenIsAcceptedByTheGateway(t *testing.T) {
	srv := newTestServer(t, time.Now)
	resp, body := get(t, srv.URL+"/token?user=alice.b-1_")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	var got struct {
		Token     string    `json:"token"`
		User      string    `json:"user"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if got.User != "alice.b-1_" {
		t.Errorf("user %q", got.User)
	}
	if d := time.Until(got.ExpiresAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("expires_at %v is not an hour away", got.ExpiresAt)
	}

	v, err := auth.NewVerifier([]byte(testSecret), nil)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(got.Token)
	if err != nil {
		t.Fatalf("the gateway refuses the token: %v", err)
	}
	if claims.User != "alice.b-1_" {
		t.Errorf("sub %q", claims.User)
	}
	if d := time.Until(claims.ExpiresAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("exp %v is not an hour away", claims.ExpiresAt)
	}
	if !claims.HasChannels || strings.Join(claims.Channels, ",") != "chat:*,$user" {
		t.Errorf("channels %v", claims.Channels)
	}
	if strings.Join(claims.Publish, ",") != "chat:*" {
		t.Errorf("publish %v", claims.Publish)
	}

	other, _ := auth.NewVerifier([]byte("another-secret-0123456789"), nil)
	if _, err := other.Verify(got.Token); err == nil {
		t.Error("a gateway with another secret accepts the token")
	}
}

func TestTokenExpires(t *testing.T) {
	srv := newTestServer(t, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	_, body := get(t, srv.URL+"/token?user=bob")
	var got struct{ Token string }
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	v, _ := auth.NewVerifier([]byte(testSecret), nil)
	if _, err := v.Verify(got.Token); err == nil {
		t.Fatal("a token minted two hours ago is still accepted")
	}
}

func TestTokenRefusesBadUsers(t *testing.T) {
	srv := newTestServer(t, time.Now)
	for _, query := range []string{
		"", "?user=", "?user=a%20b", "?user=" + strings.Repeat("x", 33), "?user=%24user", "?user=a*",
		"?user=al%C3%AFce", "?user=a&user=b", "?name=alice",
	} {
		resp, body := get(t, srv.URL+"/token"+query)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/token%s: status %d, want 400", query, resp.StatusCode)
			continue
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "bad_request" || e.Error.Message == "" {
			t.Errorf("/token%s: body %s, want an error with code bad_request and a message", query, body)
		}
	}
	resp, err := http.Post(srv.URL+"/token?user=alice", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /token: status %d, want 405", resp.StatusCode)
	}
}

func TestServesPageClientAndConfig(t *testing.T) {
	srv := newTestServer(t, time.Now)
	for path, want := range map[string]string{
		"/":                `<script type="module" src="app.js">`,
		"/app.js":          `from '/client/index.js'`,
		"/style.css":       `#messages`,
		"/client/index.js": `export class Client`,
		"/config":          `{"nodes":["ws://127.0.0.1:1/ws","ws://127.0.0.1:2/ws"]}`,
	} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: status %d, body %.200q; want 200 with %q", path, resp.StatusCode, body, want)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff header", path)
		}
	}
	resp, _ := get(t, srv.URL+"/app.js")
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("app.js served as %q: browsers refuse a module that is not JavaScript", ct)
	}
	if resp, _ := get(t, srv.URL+"/client/missing.js"); resp.StatusCode != 404 {
		t.Errorf("missing client file: status %d", resp.StatusCode)
	}
}

func TestParseNodes(t *testing.T) {
	nodes, err := parseNodes(" ws://a:1/ws, wss://b/ws ,")
	if err != nil || strings.Join(nodes, " ") != "ws://a:1/ws wss://b/ws" {
		t.Fatalf("got %v, %v", nodes, err)
	}
	for _, bad := range []string{"", " , ", "http://a/ws", "a:1", "ws:///ws", "ws://a/ws,ftp://b"} {
		if _, err := parseNodes(bad); err == nil {
			t.Errorf("parseNodes(%q) accepted", bad)
		}
	}
}

// The command refuses to start without the secret of the nodes it is given, with bad nodes or
// without the built client, saying why, and serves until its context ends otherwise.
func TestRun(t *testing.T) {
	dist := t.TempDir()
	if err := os.WriteFile(filepath.Join(dist, "index.js"), []byte("export class Client {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(secret string) func(string) string {
		return func(k string) string {
			if k == "GATEWAY_JWT_SECRET" {
				return secret
			}
			return ""
		}
	}
	for _, c := range []struct {
		name   string
		args   []string
		secret string
		want   string
	}{
		{"no secret", []string{"-client", dist, "-nodes", "ws://127.0.0.1:1/ws"}, "", "GATEWAY_JWT_SECRET"},
		{"short secret", []string{"-client", dist, "-nodes", "ws://127.0.0.1:1/ws"}, "short", "GATEWAY_JWT_SECRET"},
		{"short secret, embedded node", []string{"-client", dist}, "short", "GATEWAY_JWT_SECRET"},
		{"bad nodes", []string{"-client", dist, "-nodes", "http://x/ws"}, testSecret, "-nodes"},
		{"no client", []string{"-client", t.TempDir()}, testSecret, "npm run build"},
		{"stray argument", []string{"-client", dist, "extra"}, testSecret, "unexpected argument"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), c.args, env(c.secret), &stderr, nil); code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 mentioning %q", c.name, code, stderr.String(), c.want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-client", dist, "-nodes", "ws://127.0.0.1:1/ws"}, env(testSecret), &stderr, func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("exited %d before listening: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("not listening after 10s")
	}
	if resp, body := get(t, "http://"+addr+"/token?user=carol"); resp.StatusCode != 200 {
		t.Fatalf("/token: %d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after the context ended", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after the context ended")
	}
}

// Without -nodes the command runs a gateway node of its own (memory broker) at /ws on its own
// address, offered by /config, accepting the tokens of /token (a secret made up when none is
// set), with presence and joins and leaves on the chat rooms; it stops cleanly with its context.
func TestEmbeddedNode(t *testing.T) {
	dist := t.TempDir()
	if err := os.WriteFile(filepath.Join(dist, "index.js"), []byte("export class Client {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	var stderr syncBuffer
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-client", dist}, func(string) string { return "" }, &stderr, func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case code := <-done:
		t.Fatalf("exited %d before listening: %s", code, stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("not listening after 20s")
	}
	base := "http://" + addr

	_, body := get(t, base+"/config")
	if want := `{"nodes":["ws://` + addr + `/ws"]}`; strings.TrimSpace(string(body)) != want {
		t.Errorf("/config: %s, want %s", body, want)
	}
	tokenFor := func(user string) string {
		t.Helper()
		resp, body := get(t, base+"/token?user="+user)
		var tok struct{ Token string }
		if resp.StatusCode != 200 || json.Unmarshal(body, &tok) != nil {
			t.Fatalf("/token: %d %s", resp.StatusCode, body)
		}
		return tok.Token
	}

	alice, w := wstest.Dial(t, base, tokenFor("alice"))
	if w.Str("node") != embeddedNodeID || w.Str("user") != "alice" {
		t.Fatalf("welcome %v", w)
	}
	alice.Subscribe("chat:lobby")
	if j := alice.Expect("join"); member(j)["user"] != "alice" || member(j)["session"] != w.Str("session") {
		t.Fatalf("alice's own join: %v", j)
	}
	bob, wb := wstest.Dial(t, base, tokenFor("bob"))
	bob.Subscribe("chat:lobby")
	if j := alice.Expect("join"); member(j)["user"] != "bob" || member(j)["node"] != embeddedNodeID {
		t.Fatalf("bob's join at alice: %v", j)
	}
	bob.Expect("join") // his own
	alice.Send(map[string]any{"type": "presence", "id": "p", "channel": "chat:lobby"})
	p := alice.Expect("presence")
	ms, _ := p["members"].([]any)
	if len(ms) != 2 {
		t.Fatalf("presence: %v, want alice and bob", p)
	}
	alice.Send(map[string]any{"type": "presence_stats", "id": "s", "channel": "chat:lobby"})
	if st := alice.Expect("presence_stats"); st["connections"] != 2.0 || st["users"] != 2.0 {
		t.Fatalf("presence_stats: %v", st)
	}
	bob.Conn.Close()
	if l := alice.Expect("leave"); member(l)["session"] != wb.Str("session") {
		t.Fatalf("bob's leave at alice: %v", l)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after the context ended: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15s after the context ended")
	}
	if f, err := alice.Read(wstest.Timeout); err != nil || f.Str("type") != "disconnect" || f.Str("code") != "shutdown" {
		t.Errorf("alice after the stop: %v, %v; want a disconnect frame with code shutdown", f, err)
	}
}

func member(f wstest.Frame) map[string]any {
	m, _ := f["member"].(map[string]any)
	return m
}

// syncBuffer is a bytes.Buffer the command's logger and the test may use at once.
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
