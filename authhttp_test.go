package gateway_test

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/internal/wstest"
)

// answerWait bounds how long a test waits for an answer that must come at once: far above what
// it takes, far below forever (the failure these tests catch is an answer that never comes).
const answerWait = 15 * time.Second

// serveNode runs a node with g.Serve (servedNode: the configured HTTP server, timeouts
// included) and returns its base URL once it is ready.
func serveNode(t *testing.T, cfg *configs.Config) string {
	t.Helper()
	_, addr := servedNode(t, cfg)
	base := "http://" + addr
	waitStatus(t, http.DefaultClient, base+"/readyz", http.StatusOK)
	return base
}

// slowPost sends the headers of a POST announcing a 100,000-byte body, then only its first
// byte, and returns the connection.
func slowPost(t *testing.T, base, path, authorization string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := "POST " + path + " HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
	if authorization != "" {
		head += "Authorization: " + authorization + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n{"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads the response on conn, failing the test when none comes within answerWait.
func readAnswer(t *testing.T, conn net.Conn) *http.Response {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(answerWait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	return resp
}

// TestSlowBodyRefusedWithoutReading: a client that announces a body and sends it slowly gets its
// 401 or 404 at once, with the connection closed, on every POST path: the body is not read.
func TestSlowBodyRefusedWithoutReading(t *testing.T) {
	withAPI := startNode(t, testConfig(t))
	cfg := testConfig(t)
	cfg.API.Key = ""
	noAPI := startNode(t, cfg)
	tests := []struct {
		name, base, path, authorization string
		status                          int
	}{
		{"publish without key", withAPI.URL, "/api/publish", "", 401},
		{"publish wrong key", withAPI.URL, "/api/publish", "Bearer wrong-key-0123456789", 401},
		{"publish basic auth", withAPI.URL, "/api/publish", "Basic dXNlcjpwYXNz", 401},
		{"batch wrong key", withAPI.URL, "/api/batch", "bearer wrong-key-0123456789", 401},
		{"unknown path", withAPI.URL, "/api/nothing", "Bearer " + testAPIKey, 404},
		{"API off", noAPI.URL, "/api/publish", "Bearer " + testAPIKey, 404},
		{"POST to /ws", withAPI.URL, "/ws", "", 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := readAnswer(t, slowPost(t, tc.base, tc.path, tc.authorization))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if !resp.Close {
				t.Fatal("connection kept open with an unread body behind the answer")
			}
		})
	}
}

// TestReadTimeoutCutsSlowBody: with a valid key, a body that does not arrive within
// http.read_timeout is answered 408 (or the connection closed), even while bytes keep trickling.
func TestReadTimeoutCutsSlowBody(t *testing.T) {
	base := serveNode(t, testConfig(t, "GATEWAY_HTTP_READ_TIMEOUT=300ms"))
	for _, path := range []string{"/api/publish", "/api/batch"} {
		t.Run(path, func(t *testing.T) {
			conn := slowPost(t, base, path, "Bearer "+testAPIKey)
			stop := make(chan struct{})
			trickled := make(chan struct{})
			go func() { // one byte every 50ms until the server gives up on the body
				defer close(trickled)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := io.WriteString(conn, " "); err != nil {
							return
						}
					}
				}
			}()
			defer func() { close(stop); <-trickled }()
			_ = conn.SetReadDeadline(time.Now().Add(answerWait))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return // closed without an answer: cut off too
				}
				t.Fatalf("slow body not cut off: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("status %d, want 408", resp.StatusCode)
			}
		})
	}
	// A request that arrives in time is served as before.
	if status, out := apiPublish(t, base, map[string]any{"channel": "news", "data": 1}); status != 200 {
		t.Fatalf("publish: %d %v", status, out)
	}
}

// TestWebSocketOutlivesReadTimeout: http.read_timeout bounds requests, not the WebSocket
// connections they become.
func TestWebSocketOutlivesReadTimeout(t *testing.T) {
	const readTimeout = 200 * time.Millisecond
	base := serveNode(t, testConfig(t, "GATEWAY_HTTP_READ_TIMEOUT="+readTimeout.String()))
	c, _ := wstest.Dial(t, base, allowAll(t, "alice"))
	time.Sleep(5 * readTimeout) // idle past the read timeout: the point of the test
	c.Send(`{"type":"ping","id":"p1"}`)
	if f := c.Expect("pong"); f.Str("id") != "p1" {
		t.Fatalf("pong %v", f)
	}
}

// TestAPIBearerAnyCase: the API accepts the bearer scheme in any case, like /ws (RFC 7235).
func TestAPIBearerAnyCase(t *testing.T) {
	n := startNode(t, testConfig(t))
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		req, _ := http.NewRequest("POST", n.URL+"/api/publish", strings.NewReader(`{"channel":"news","data":1}`))
		req.Header.Set("Authorization", scheme+" "+testAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d, want 200", scheme, resp.StatusCode)
		}
	}
}

// sendReply sends a send frame and returns the reply: "ack" or the error code.
func sendReply(t *testing.T, c *wstest.Client) string {
	t.Helper()
	c.Send(`{"type":"send","id":"s","data":{"q":1}}`)
	for {
		f := c.Next()
		switch f.Str("type") {
		case "ack":
			return "ack"
		case "error":
			return f.Str("code")
		}
	}
}

// TestSendClaim: a client may send to the services when its token says "send": true; without
// the claim only when auth.default_send is set; "send": false never.
func TestSendClaim(t *testing.T) {
	mint := func(user string, opts ...auth.SignOption) string {
		tok, err := auth.SignHS256([]byte(testSecret), user, time.Hour, []string{"*"}, []string{"*"}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	denySend := func(c map[string]any) { c["send"] = false }
	tests := []struct {
		name  string
		env   []string
		token string // "" = anonymous
		want  string
	}{
		{"default: send true", nil, mint("a", auth.AllowSend()), "ack"},
		{"default: no claim", nil, mint("a"), "forbidden"},
		{"default: send false", nil, mint("a", denySend), "forbidden"},
		{"default: anonymous", []string{"GATEWAY_ALLOW_ANONYMOUS=true"}, "", "forbidden"},
		{"default_send: no claim", []string{"GATEWAY_DEFAULT_SEND=true"}, mint("a"), "ack"},
		{"default_send: send false", []string{"GATEWAY_DEFAULT_SEND=true"}, mint("a", denySend), "forbidden"},
		{"default_send: anonymous", []string{"GATEWAY_DEFAULT_SEND=true", "GATEWAY_ALLOW_ANONYMOUS=true"}, "", "ack"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, testConfig(t, tc.env...))
			c, _ := wstest.Dial(t, n.URL, tc.token)
			if got := sendReply(t, c); got != tc.want {
				t.Fatalf("send answered %s, want %s", got, tc.want)
			}
			if tc.token != "" {
				c.Publish("news", 1, "") // publishing is governed by the publish claim alone (Publish expects the ack)
			}
		})
	}
}

// refusal dials with tok and returns the 401 message ("" when the upgrade succeeded).
func refusal(t *testing.T, base, tok string) string {
	t.Helper()
	c, resp, err := wstest.TryDial(t, base, tok, nil)
	if err == nil {
		c.Expect("welcome")
		return ""
	}
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("dial: %v", err)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body.Error.Code != "unauthorized" {
		t.Fatalf("401 body %+v", body)
	}
	return body.Error.Message
}

// TestTokenChecks: a token without exp is refused unless auth.require_exp is false; audience
// and issuer are checked when set.
func TestTokenChecks(t *testing.T) {
	noExp, err := auth.SignHS256([]byte(testSecret), "alice", 0, []string{"*"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, testConfig(t))
	if msg := refusal(t, n.URL, noExp); !strings.Contains(msg, "token has no expiry") {
		t.Fatalf("token without exp: %q", msg)
	}
	lax := startNode(t, testConfig(t, "GATEWAY_REQUIRE_EXP=false"))
	if msg := refusal(t, lax.URL, noExp); msg != "" {
		t.Fatalf("require_exp false: %q", msg)
	}

	strict := startNode(t, testConfig(t, "GATEWAY_AUDIENCE=gateway", "GATEWAY_ISSUER=https://idp.example"))
	mint := func(claims jwt.MapClaims) string {
		claims["sub"], claims["exp"] = "alice", time.Now().Add(time.Hour).Unix()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if msg := refusal(t, strict.URL, mint(jwt.MapClaims{"aud": "gateway", "iss": "https://idp.example"})); msg != "" {
		t.Fatalf("matching aud and iss: %q", msg)
	}
	if msg := refusal(t, strict.URL, mint(jwt.MapClaims{"aud": "other", "iss": "https://idp.example"})); !strings.Contains(msg, "audience") {
		t.Fatalf("wrong aud: %q", msg)
	}
	if msg := refusal(t, strict.URL, mint(jwt.MapClaims{"aud": "gateway"})); !strings.Contains(msg, "issuer") {
		t.Fatalf("no iss: %q", msg)
	}
}

// TestJWKSNode: a node configured with only a JWKS URL accepts its provider's tokens, and a
// token of a rotated-in key without a restart.
func TestJWKSNode(t *testing.T) {
	k1, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var set atomic.Value // []byte
	publishKeys := func(kid string, k *rsa.PrivateKey) {
		b64 := base64.RawURLEncoding.EncodeToString
		b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
			"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}}})
		set.Store(b)
	}
	publishKeys("k1", k1)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set.Load().([]byte))
	}))
	defer idp.Close()
	cfg, err := configs.Load("", []string{"GATEWAY_JWKS_URL=" + idp.URL, "GATEWAY_DRAIN_PERIOD=200ms"})
	if err != nil {
		t.Fatal(err) // the JWKS URL alone is a way to authenticate
	}
	n := startNode(t, cfg)
	mint := func(kid string, k *rsa.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "channels": []string{"*"}})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if msg := refusal(t, n.URL, mint("k1", k1)); msg != "" {
		t.Fatalf("k1: %q", msg)
	}
	publishKeys("k2", k2)
	if msg := refusal(t, n.URL, mint("k2", k2)); msg != "" {
		t.Fatalf("k2 after the rotation: %q", msg)
	}
	if msg := refusal(t, n.URL, mint("k9", k1)); !strings.Contains(msg, "unknown signing key") {
		t.Fatalf("unknown kid: %q", msg)
	}
}

// TestUpgradeWithABodyIsRefused: a handshake that announces a body is refused 400 with the JSON
// error (not 500 because the body check wrapped away the connection's Hijacker).
func TestUpgradeWithABodyIsRefused(t *testing.T) {
	base := serveNode(t, testConfig(t))
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := "GET /ws?token=" + allowAll(t, "body") + " HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\nhello"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	if resp := readAnswer(t, conn); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d (%s), want 400 with the JSON error", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
