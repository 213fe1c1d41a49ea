package auth

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestAudienceIssuer: with Audience and Issuer set, a token must name one of the audiences and
// the issuer; without them neither claim is looked at.
func TestAudienceIssuer(t *testing.T) {
	v, err := NewVerifier(hsSecret, nil, Audience("gateway", "gw2"), Issuer("https://idp.example"))
	if err != nil {
		t.Fatal(err)
	}
	plain := newVerifier(t, hsSecret, nil)
	exp := time.Now().Add(time.Hour).Unix()
	tok := func(extra jwt.MapClaims) string {
		c := jwt.MapClaims{"sub": "alice", "exp": exp}
		for k, val := range extra {
			c[k] = val
		}
		return sign(t, jwt.SigningMethodHS256, hsSecret, c)
	}
	iss := "https://idp.example"
	tests := []struct {
		name   string
		token  string
		reason string // "" = accepted
	}{
		{"both match", tok(jwt.MapClaims{"aud": "gateway", "iss": iss}), ""},
		{"aud list with a match", tok(jwt.MapClaims{"aud": []string{"other", "gw2"}, "iss": iss}), ""},
		{"wrong aud", tok(jwt.MapClaims{"aud": "other", "iss": iss}), "audience not accepted"},
		{"no aud", tok(jwt.MapClaims{"iss": iss}), "audience not accepted"},
		{"wrong iss", tok(jwt.MapClaims{"aud": "gateway", "iss": "https://evil.example"}), "issuer not accepted"},
		{"no iss", tok(jwt.MapClaims{"aud": "gateway"}), "issuer not accepted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if tc.reason == "" {
				if err != nil || c.User != "alice" {
					t.Fatalf("Verify = %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Verify error %v, want %q", err, tc.reason)
			}
			// Without the options the same token is fine.
			if _, err := plain.Verify(tc.token); err != nil {
				t.Fatalf("without audience/issuer: %v", err)
			}
		})
	}
}

// TestSendClaim: send is true, false or absent; anything else refuses the token.
func TestSendClaim(t *testing.T) {
	v := newVerifier(t, hsSecret, nil)
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name          string
		send          any // nil: absent
		want, present bool
		reason        string
	}{
		{"absent", nil, false, false, ""},
		{"true", true, true, true, ""},
		{"false", false, false, true, ""},
		{"a string", "yes", false, false, "send claim must be true or false"},
		{"a list", []string{"*"}, false, false, "send claim must be true or false"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := jwt.MapClaims{"sub": "alice", "exp": exp}
			if tc.send != nil {
				c["send"] = tc.send
			}
			got, err := v.Verify(sign(t, jwt.SigningMethodHS256, hsSecret, c))
			if tc.reason != "" {
				if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("Verify error %v, want %q", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Send != tc.want || got.HasSend != tc.present {
				t.Fatalf("Send=%v HasSend=%v, want %v %v", got.Send, got.HasSend, tc.want, tc.present)
			}
		})
	}
	tok, err := SignHS256(hsSecret, "alice", time.Hour, nil, nil, AllowSend())
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(tok); err != nil || !c.Send || !c.HasSend {
		t.Fatalf("SignHS256 with AllowSend: %+v, %v", c, err)
	}
}

// TestBearerToken: the scheme is case-insensitive (RFC 7235), as for the API key.
func TestBearerToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer k": "k", "bearer k": "k", "BEARER k": "k", "bEaReR  k ": "k",
		"Basic k": "", "Bearerk": "", "": "", "Bearer": "",
	} {
		h := http.Header{}
		if header != "" {
			h.Set("Authorization", header)
		}
		if got := BearerToken(h); got != want {
			t.Errorf("BearerToken(%q) = %q, want %q", header, got, want)
		}
	}
}

// jwksServer serves a JWK Set that the test can rotate, take down (500) or hang.
type jwksServer struct {
	*httptest.Server
	set     atomic.Pointer[[]byte]
	fetches atomic.Int64
	down    atomic.Bool
	hang    chan struct{} // non-nil: requests wait until it is closed
}

func newJWKSServer(t *testing.T, hang bool) *jwksServer {
	s := &jwksServer{}
	if hang {
		s.hang = make(chan struct{})
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.hang != nil {
			select {
			case <-s.hang:
			case <-r.Context().Done():
			}
			return
		}
		if s.down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.set.Load())
	}))
	t.Cleanup(func() {
		if s.hang != nil {
			close(s.hang)
		}
		s.Close()
	})
	return s
}

// serve sets the published keys: kid -> RSA key.
func (s *jwksServer) serve(t *testing.T, keys map[string]*rsa.PrivateKey) {
	type jwk struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Alg string `json:"alg"`
		N   string `json:"n"`
		E   string `json:"e"`
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	b64u := base64.RawURLEncoding.EncodeToString
	for kid, k := range keys {
		set.Keys = append(set.Keys, jwk{Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256",
			N: b64u(k.N.Bytes()), E: b64u(big.NewInt(int64(k.E)).Bytes())})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	s.set.Store(&b)
}

func jwksVerifier(t *testing.T, url string, timeout, unknownEvery time.Duration) *Verifier {
	t.Helper()
	v, err := NewVerifier(nil, nil, JWKS(JWKSConfig{URL: url, Refresh: time.Hour, Timeout: timeout, UnknownKIDEvery: unknownEvery}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func rsToken(t *testing.T, key *rsa.PrivateKey, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantRefused(t *testing.T, v *Verifier, tok, reason string) {
	t.Helper()
	if c, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("Verify = %+v, %v; want refused with %q", c, err, reason)
	}
}

// TestJWKSRotation: keys come from the JWKS URL; after the provider rotates its key, a token of
// the new key is accepted without a new verifier (a refresh on its unknown kid), the old key is
// gone, and a kid in neither set is refused.
func TestJWKSRotation(t *testing.T) {
	keys(t)
	srv := newJWKSServer(t, false)
	srv.serve(t, map[string]*rsa.PrivateKey{"k1": rsaKey})
	v := jwksVerifier(t, srv.URL, 5*time.Second, time.Millisecond)

	if c, err := v.Verify(rsToken(t, rsaKey, "k1")); err != nil || c.User != "alice" {
		t.Fatalf("k1 token: %+v, %v", c, err)
	}
	srv.serve(t, map[string]*rsa.PrivateKey{"k2": rsaKey2})
	if c, err := v.Verify(rsToken(t, rsaKey2, "k2")); err != nil || c.User != "alice" {
		t.Fatalf("k2 token after the rotation: %+v, %v", c, err)
	}
	wantRefused(t, v, rsToken(t, rsaKey, "k1"), "unknown signing key") // rotated out
	before := srv.fetches.Load()
	wantRefused(t, v, rsToken(t, rsaKey, "k3"), "unknown signing key")
	if srv.fetches.Load() == before {
		t.Fatal("an unknown kid did not refresh the key set")
	}
	// A token of a known kid signed by another key is not let through either.
	wantRefused(t, v, rsToken(t, rsaKey, "k2"), "signature invalid")
	// A token without kid is tried against every key of the set.
	if _, err := v.Verify(rsToken(t, rsaKey2, "")); err != nil {
		t.Fatalf("token without kid: %v", err)
	}
	wantRefused(t, v, rsToken(t, rsaKey, ""), "signature invalid")
	// An HS256 token never reaches the JWKS keys.
	wantRefused(t, v, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()}), "algorithm not allowed")
}

// TestJWKSUnknownKIDRateLimited: tokens with unknown kids refresh the set at most once per
// UnknownKIDEvery; beyond, they are refused without a fetch.
func TestJWKSUnknownKIDRateLimited(t *testing.T) {
	keys(t)
	srv := newJWKSServer(t, false)
	srv.serve(t, map[string]*rsa.PrivateKey{"k1": rsaKey})
	v := jwksVerifier(t, srv.URL, 5*time.Second, time.Hour)
	wantRefused(t, v, rsToken(t, rsaKey, "x1"), "unknown signing key") // uses the one refresh
	before := srv.fetches.Load()
	for i := range 5 {
		wantRefused(t, v, rsToken(t, rsaKey, "x"+string(rune('2'+i))), "unknown signing key")
	}
	if n := srv.fetches.Load() - before; n != 0 {
		t.Fatalf("%d fetches within the rate limit", n)
	}
	if _, err := v.Verify(rsToken(t, rsaKey, "k1")); err != nil {
		t.Fatalf("the cached key: %v", err)
	}
}

// TestJWKSDown: a JWKS server that answers 500, is gone, or never answers makes tokens refused
// (401 for the node), not a hang; the fetch is bounded by the timeout.
func TestJWKSDown(t *testing.T) {
	keys(t)
	t.Run("500", func(t *testing.T) {
		srv := newJWKSServer(t, false)
		srv.down.Store(true)
		v := jwksVerifier(t, srv.URL, 5*time.Second, time.Millisecond)
		wantRefused(t, v, rsToken(t, rsaKey, "k1"), "unknown signing key")
	})
	t.Run("gone", func(t *testing.T) {
		srv := newJWKSServer(t, false)
		srv.serve(t, map[string]*rsa.PrivateKey{"k1": rsaKey})
		v := jwksVerifier(t, srv.URL, 5*time.Second, time.Millisecond)
		srv.Close()
		if _, err := v.Verify(rsToken(t, rsaKey, "k1")); err != nil {
			t.Fatalf("cached key while the server is gone: %v", err)
		}
		wantRefused(t, v, rsToken(t, rsaKey2, "k2"), "unknown signing key")
	})
	t.Run("500, token without kid", func(t *testing.T) {
		srv := newJWKSServer(t, false)
		srv.down.Store(true)
		v := jwksVerifier(t, srv.URL, 5*time.Second, time.Millisecond)
		wantRefused(t, v, rsToken(t, rsaKey, ""), "unknown signing key")
	})
	t.Run("hangs", func(t *testing.T) {
		srv := newJWKSServer(t, true)
		v := jwksVerifier(t, srv.URL, 200*time.Millisecond, time.Millisecond)
		wantRefused(t, v, rsToken(t, rsaKey, "k1"), "unknown signing key")
	})
}

// TestJWKSConfig: only http(s) URLs, and positive durations.
func TestJWKSConfig(t *testing.T) {
	for _, u := range []string{"file:///etc/jwks.json", "ftp://idp/jwks", "idp.example/jwks", "https://", ""} {
		if _, err := NewVerifier(nil, nil, JWKS(JWKSConfig{URL: u, Refresh: time.Hour, Timeout: time.Second, UnknownKIDEvery: time.Second})); err == nil {
			t.Errorf("JWKS URL %q accepted", u)
		}
	}
	if _, err := NewVerifier(nil, nil, JWKS(JWKSConfig{URL: "https://idp.example/jwks"})); err == nil {
		t.Error("zero durations accepted")
	}
}

// TestJWKSCloseStopsRefresh: the periodic refresh runs until Close, and not after it.
func TestJWKSCloseStopsRefresh(t *testing.T) {
	keys(t)
	srv := newJWKSServer(t, false)
	srv.serve(t, map[string]*rsa.PrivateKey{"k1": rsaKey})
	const every = 20 * time.Millisecond
	v, err := NewVerifier(nil, nil, JWKS(JWKSConfig{URL: srv.URL, Refresh: every, Timeout: time.Second, UnknownKIDEvery: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); srv.fetches.Load() < 3; time.Sleep(every) {
		if time.Now().After(deadline) {
			v.Close()
			t.Fatalf("%d fetches: the refresh does not run", srv.fetches.Load())
		}
	}
	v.Close()
	closed := srv.fetches.Load()
	time.Sleep(20 * every)                       // ten times as long as it took for three fetches before Close
	if n := srv.fetches.Load() - closed; n > 1 { // one may have been under way
		t.Fatalf("%d fetches after Close", n)
	}
}
