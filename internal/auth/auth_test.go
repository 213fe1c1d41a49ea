package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// keys generated once for the whole test binary (RSA generation is slow under -race).
var (
	keysOnce                       sync.Once
	rsaKey, rsaKey2                *rsa.PrivateKey
	ecKey, ecKey2, ec384Key        *ecdsa.PrivateKey
	edPub                          ed25519.PublicKey
	edKey, edKey2                  ed25519.PrivateKey
	rsaPEM, ecPEM, ec384PEM, edPEM []byte
)

func keys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		check := func(err error) {
			if err != nil {
				panic(err)
			}
		}
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		check(err)
		rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048)
		check(err)
		ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		check(err)
		ecKey2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		check(err)
		ec384Key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		check(err)
		edPub, edKey, err = ed25519.GenerateKey(rand.Reader)
		check(err)
		_, edKey2, err = ed25519.GenerateKey(rand.Reader)
		check(err)
		rsaPEM, err = pkixPEM(&rsaKey.PublicKey)
		check(err)
		ecPEM, err = pkixPEM(&ecKey.PublicKey)
		check(err)
		ec384PEM, err = pkixPEM(&ec384Key.PublicKey)
		check(err)
		edPEM, err = pkixPEM(edPub)
		check(err)
	})
}

func pkixPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

var hsSecret = []byte("a-long-enough-test-secret-0123456789")

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// rawHS256 signs an arbitrary header and payload with HMAC-SHA256, bypassing the library.
func rawHS256(secret []byte, header, payload string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(header + "." + payload))
	return header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func newVerifier(t *testing.T, secret, pemKey []byte) *Verifier {
	t.Helper()
	v, err := NewVerifier(secret, pemKey)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func TestVerify(t *testing.T) {
	keys(t)
	hsV := newVerifier(t, hsSecret, nil)
	hsNoExpV, err := NewVerifier(hsSecret, nil, RequireExp(false))
	if err != nil {
		t.Fatal(err)
	}
	rsV := newVerifier(t, nil, rsaPEM)
	esV := newVerifier(t, nil, ecPEM)
	es384V := newVerifier(t, nil, ec384PEM)
	edV := newVerifier(t, nil, edPEM)
	bothV := newVerifier(t, hsSecret, rsaPEM)
	// The key-confusion setup: the operator's HMAC secret is (wrongly) the PEM text.
	pemSecretV := newVerifier(t, rsaPEM, nil)

	future := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	ok := jwt.MapClaims{"sub": "alice", "exp": future}

	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice"})
	payload := b64(map[string]any{"sub": "alice"})
	hsTok := sign(t, jwt.SigningMethodHS256, hsSecret, ok)
	hsParts := strings.Split(hsTok, ".")

	type want struct {
		err         error  // nil, ErrInvalidToken or ErrExpired
		reason      string // substring of the error message
		user        string
		channels    []string
		hasChannels bool
		publish     []string
		exp         bool // ExpiresAt set
	}
	tests := []struct {
		name  string
		v     *Verifier
		token string
		want  want
	}{
		// Accepted, per key type.
		{"HS256 ok", hsV, hsTok, want{user: "alice", exp: true}},
		{"RS256 ok", rsV, sign(t, jwt.SigningMethodRS256, rsaKey, ok), want{user: "alice", exp: true}},
		{"RS384 ok", rsV, sign(t, jwt.SigningMethodRS384, rsaKey, ok), want{user: "alice", exp: true}},
		{"RS512 ok", rsV, sign(t, jwt.SigningMethodRS512, rsaKey, ok), want{user: "alice", exp: true}},
		{"ES256 ok", esV, sign(t, jwt.SigningMethodES256, ecKey, ok), want{user: "alice", exp: true}},
		{"ES384 ok with P-384 key", es384V, sign(t, jwt.SigningMethodES384, ec384Key, ok), want{user: "alice", exp: true}},
		{"EdDSA ok", edV, sign(t, jwt.SigningMethodEdDSA, edKey, ok), want{user: "alice", exp: true}},
		{"both keys: HS256 ok", bothV, hsTok, want{user: "alice", exp: true}},
		{"both keys: RS256 ok", bothV, sign(t, jwt.SigningMethodRS256, rsaKey, ok), want{user: "alice", exp: true}},
		{"no exp ok when not required, ExpiresAt zero", hsNoExpV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "bob"}), want{user: "bob"}},
		{"no exp refused (required by default)", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "bob"}), want{err: ErrNoExpiry, reason: "token has no expiry"}},
		{"no exp refused (RS256)", rsV, sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "bob"}), want{err: ErrNoExpiry, reason: "token has no expiry"}},

		// alg none and friends.
		{"alg none refused (HS verifier)", hsV, noneTok, want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"alg none refused (RS verifier)", rsV, noneTok, want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"alg none refused (both)", bothV, noneTok, want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"alg None refused", hsV, b64(map[string]string{"alg": "None", "typ": "JWT"}) + "." + payload + ".", want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"alg none with HS signature refused", hsV, rawHS256(hsSecret, b64(map[string]string{"alg": "none"}), payload), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"alg missing refused", hsV, rawHS256(hsSecret, b64(map[string]string{"typ": "JWT"}), payload), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"HS384 refused (only HS256)", hsV, sign(t, jwt.SigningMethodHS384, hsSecret, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"PS256 refused", rsV, sign(t, jwt.SigningMethodPS256, rsaKey, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"ES384 refused by P-256 verifier", esV, sign(t, jwt.SigningMethodES384, ec384Key, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"ES256 refused by RSA verifier", rsV, sign(t, jwt.SigningMethodES256, ecKey, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"EdDSA refused by ECDSA verifier", esV, sign(t, jwt.SigningMethodEdDSA, edKey, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},

		// Expiry and times.
		{"expired refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "alice", "exp": past}), want{err: ErrExpired, reason: "expired"}},
		{"expired refused (RS256)", rsV, sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "alice", "exp": past}), want{err: ErrExpired, reason: "expired"}},
		{"nbf in future refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "alice", "nbf": future}), want{err: ErrInvalidToken, reason: "not valid yet"}},
		{"nbf in past ok", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "alice", "nbf": past}), want{user: "alice", exp: true}},
		{"iat in future refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "alice", "iat": future}), want{err: ErrInvalidToken, reason: "issued in the future"}},
		{"iat in past ok", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "alice", "iat": past}), want{user: "alice", exp: true}},
		{"exp not a number refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "alice", "exp": "tomorrow"}), want{err: ErrInvalidToken, reason: "malformed"}},

		// Wrong keys.
		{"HS256 wrong secret", hsV, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), ok), want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"RS256 wrong key", rsV, sign(t, jwt.SigningMethodRS256, rsaKey2, ok), want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"ES256 wrong key", esV, sign(t, jwt.SigningMethodES256, ecKey2, ok), want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"EdDSA wrong key", edV, sign(t, jwt.SigningMethodEdDSA, edKey2, ok), want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"payload tampered", hsV, hsParts[0] + "." + b64(map[string]any{"sub": "mallory", "exp": future}) + "." + hsParts[2], want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"signature stripped", hsV, hsParts[0] + "." + hsParts[1] + ".", want{err: ErrInvalidToken, reason: "signature invalid"}},

		// Malformed.
		{"empty", hsV, "", want{err: ErrInvalidToken, reason: "missing"}},
		{"garbage", hsV, "garbage", want{err: ErrInvalidToken, reason: "malformed"}},
		{"two parts", hsV, hsParts[0] + "." + hsParts[1], want{err: ErrInvalidToken, reason: "malformed"}},
		{"four parts", hsV, hsTok + ".x", want{err: ErrInvalidToken, reason: "malformed"}},
		{"bad base64", hsV, "!!!.@@@.###", want{err: ErrInvalidToken, reason: "malformed"}},
		{"bad base64 signature", hsV, hsParts[0] + "." + hsParts[1] + ".***", want{err: ErrInvalidToken, reason: "malformed"}},
		{"header not JSON", hsV, rawHS256(hsSecret, base64.RawURLEncoding.EncodeToString([]byte("{nope")), payload), want{err: ErrInvalidToken, reason: "malformed"}},
		{"payload not JSON", hsV, rawHS256(hsSecret, hsParts[0], base64.RawURLEncoding.EncodeToString([]byte("[1,2]"))), want{err: ErrInvalidToken, reason: "malformed"}},
		{"too long", hsV, strings.Repeat("a", maxTokenBytes+1), want{err: ErrInvalidToken, reason: "too long"}},

		// Algorithm / key-type confusion.
		{"HS256 refused with only a public key", rsV, hsTok, want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"RS256 refused with only a secret", hsV, sign(t, jwt.SigningMethodRS256, rsaKey, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"key confusion: RS256 token, HS secret = PEM", pemSecretV, sign(t, jwt.SigningMethodRS256, rsaKey, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"key confusion: HS256 signed with PEM, RSA verifier", rsV, sign(t, jwt.SigningMethodHS256, rsaPEM, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"key confusion: HS256 signed with PEM, both keys", bothV, sign(t, jwt.SigningMethodHS256, rsaPEM, ok), want{err: ErrInvalidToken, reason: "signature invalid"}},
		{"key confusion: HS256 signed with EC PEM, EC verifier", esV, sign(t, jwt.SigningMethodHS256, ecPEM, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},
		{"key confusion: HS256 signed with Ed PEM, Ed verifier", edV, sign(t, jwt.SigningMethodHS256, edPEM, ok), want{err: ErrInvalidToken, reason: "algorithm not allowed"}},

		// sub.
		{"missing sub", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future}), want{err: ErrInvalidToken, reason: "missing sub"}},
		{"empty sub", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "", "exp": future}), want{err: ErrInvalidToken, reason: "missing sub"}},
		{"sub not a string", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": 42}), want{err: ErrInvalidToken, reason: "malformed"}},

		// channels / publish.
		{"channels absent", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a"}), want{user: "a", exp: true}},
		{"channels null = absent", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": nil}), want{user: "a", exp: true}},
		{"channels empty", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": []string{}}), want{user: "a", channels: []string{}, hasChannels: true, exp: true}},
		{"channels list", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": []string{"room:*", "news"}}), want{user: "a", channels: []string{"room:*", "news"}, hasChannels: true, exp: true}},
		{"channels a string refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": "room:*"}), want{err: ErrInvalidToken, reason: "channels claim must be an array of strings"}},
		{"channels an object refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": map[string]any{"room": true}}), want{err: ErrInvalidToken, reason: "channels claim"}},
		{"channels a number refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": 1}), want{err: ErrInvalidToken, reason: "channels claim"}},
		{"channels with a number refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": []any{"room", 1}}), want{err: ErrInvalidToken, reason: "channels claim"}},
		{"channels with a null refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "channels": []any{"room", nil}}), want{err: ErrInvalidToken, reason: "channels claim"}},
		{"publish list", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "publish": []string{"chat:*"}}), want{user: "a", publish: []string{"chat:*"}, exp: true}},
		{"publish empty", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "publish": []string{}}), want{user: "a", publish: []string{}, exp: true}},
		{"publish not an array refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "publish": "chat:*"}), want{err: ErrInvalidToken, reason: "publish claim must be an array of strings"}},
		{"publish with a bool refused", hsV, sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"exp": future, "sub": "a", "publish": []any{true}}), want{err: ErrInvalidToken, reason: "publish claim"}},
		{"channels and publish", rsV, sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "a", "exp": future, "channels": []string{"*"}, "publish": []string{"x"}}), want{user: "a", channels: []string{"*"}, hasChannels: true, publish: []string{"x"}, exp: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.v.Verify(tc.token)
			if tc.want.err != nil {
				if err == nil {
					t.Fatalf("Verify accepted the token: %+v", c)
				}
				if c != nil {
					t.Errorf("claims returned with an error: %+v", c)
				}
				if !errors.Is(err, ErrInvalidToken) {
					t.Errorf("error %q does not wrap ErrInvalidToken", err)
				}
				if !errors.Is(err, tc.want.err) {
					t.Errorf("error %q does not wrap %q", err, tc.want.err)
				}
				if tc.want.err != ErrExpired && errors.Is(err, ErrExpired) {
					t.Errorf("error %q wraps ErrExpired", err)
				}
				if !strings.Contains(err.Error(), tc.want.reason) {
					t.Errorf("error %q, want it to say %q", err, tc.want.reason)
				}
				if !strings.HasPrefix(err.Error(), "invalid token: ") {
					t.Errorf("error %q lacks the invalid token prefix", err)
				}
				if len(tc.token) > 8 && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error message leaks the token")
				}
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) > 8 && strings.Contains(err.Error(), part) {
						t.Errorf("error message leaks a token segment")
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.User != tc.want.user {
				t.Errorf("User = %q, want %q", c.User, tc.want.user)
			}
			if c.HasChannels != tc.want.hasChannels {
				t.Errorf("HasChannels = %v, want %v", c.HasChannels, tc.want.hasChannels)
			}
			if !slices.Equal(c.Channels, tc.want.channels) || (c.Channels == nil) != (tc.want.channels == nil) {
				t.Errorf("Channels = %#v, want %#v", c.Channels, tc.want.channels)
			}
			if !slices.Equal(c.Publish, tc.want.publish) || (c.Publish == nil) != (tc.want.publish == nil) {
				t.Errorf("Publish = %#v, want %#v", c.Publish, tc.want.publish)
			}
			if tc.want.exp {
				if d := c.ExpiresAt.Unix() - future; d != 0 {
					t.Errorf("ExpiresAt = %v, want unix %d", c.ExpiresAt, future)
				}
			} else if !c.ExpiresAt.IsZero() {
				t.Errorf("ExpiresAt = %v, want zero", c.ExpiresAt)
			}
		})
	}
}

// TestVerifyTimeBoundaries pins the clock: exp has no leeway, nbf/iat have a small one.
func TestVerifyTimeBoundaries(t *testing.T) {
	v := newVerifier(t, hsSecret, nil)
	base := time.Unix(1_800_000_000, 0)
	tok := func(c jwt.MapClaims) string {
		c["sub"] = "alice"
		return sign(t, jwt.SigningMethodHS256, hsSecret, c)
	}
	tests := []struct {
		name  string
		now   time.Time
		token string
		want  error
	}{
		{"1ns before exp ok", base.Add(-time.Nanosecond), tok(jwt.MapClaims{"exp": base.Unix()}), nil},
		{"at exp expired", base, tok(jwt.MapClaims{"exp": base.Unix()}), ErrExpired},
		{"1s after exp expired (no leeway)", base.Add(time.Second), tok(jwt.MapClaims{"exp": base.Unix()}), ErrExpired},
		{"1 day after exp expired", base.Add(24 * time.Hour), tok(jwt.MapClaims{"exp": base.Unix()}), ErrExpired},
		{"nbf 2s ahead tolerated", base, tok(jwt.MapClaims{"exp": base.Add(time.Hour).Unix(), "nbf": base.Add(2 * time.Second).Unix()}), nil},
		{"nbf 1m ahead refused", base, tok(jwt.MapClaims{"nbf": base.Add(time.Minute).Unix()}), ErrInvalidToken},
		{"iat 2s ahead tolerated", base, tok(jwt.MapClaims{"exp": base.Add(time.Hour).Unix(), "iat": base.Add(2 * time.Second).Unix()}), nil},
		{"iat 1m ahead refused", base, tok(jwt.MapClaims{"iat": base.Add(time.Minute).Unix()}), ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v.now = func() time.Time { return tc.now }
			c, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.User != "alice" {
					t.Fatalf("User = %q", c.User)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == ErrInvalidToken && errors.Is(err, ErrExpired) {
				t.Fatalf("err = %v wraps ErrExpired", err)
			}
		})
	}
}

func TestNewVerifier(t *testing.T) {
	keys(t)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224PEM, err := pkixPEM(&p224.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1PEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	privDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, edPub, edKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	// A leading non-key block (as some tools write) is skipped.
	withParams := append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42}}), ecPEM...)

	tests := []struct {
		name     string
		secret   []byte
		pem      []byte
		ok       bool
		wantAlgs []string
	}{
		{"nothing", nil, nil, false, nil},
		{"empty secret and blank PEM", []byte{}, []byte(" \n"), false, nil},
		{"secret", hsSecret, nil, true, []string{"HS256"}},
		{"RSA PKIX", nil, rsaPEM, true, []string{"RS256", "RS384", "RS512"}},
		{"RSA PKCS1", nil, pkcs1PEM, true, []string{"RS256", "RS384", "RS512"}},
		{"EC P-256", nil, ecPEM, true, []string{"ES256"}},
		{"EC P-384", nil, ec384PEM, true, []string{"ES384"}},
		{"EC after EC PARAMETERS", nil, withParams, true, []string{"ES256"}},
		{"Ed25519", nil, edPEM, true, []string{"EdDSA"}},
		{"Ed25519 certificate", nil, certPEM, true, []string{"EdDSA"}},
		{"both", hsSecret, edPEM, true, []string{"HS256", "EdDSA"}},
		{"not PEM", nil, []byte("not a pem"), false, nil},
		{"corrupt PEM body", nil, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), false, nil},
		{"private key", nil, privPEM, false, nil},
		{"unsupported curve", nil, p224PEM, false, nil},
		{"bad PEM with a good secret", hsSecret, []byte("junk"), false, nil},
		{"secret equal to the public key", rsaPEM, rsaPEM, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.secret, tc.pem)
			if !tc.ok {
				if err == nil {
					t.Fatalf("NewVerifier accepted it: methods %v", v.methods)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			if !slices.Equal(v.methods, tc.wantAlgs) {
				t.Errorf("methods = %v, want %v", v.methods, tc.wantAlgs)
			}
		})
	}

	// The verifier keeps its own copy of the secret.
	secret := []byte("mutable-secret-mutable-secret-000")
	v := newVerifier(t, secret, nil)
	tok, err := SignHS256(secret, "alice", time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	secret[0] ^= 0xff
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify after the caller changed its secret slice: %v", err)
	}

	// A verifier built from a PKCS1 key or a certificate really verifies.
	for name, tcase := range map[string]struct {
		pem []byte
		tok string
	}{
		"PKCS1":       {pkcs1PEM, sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})},
		"certificate": {certPEM, sign(t, jwt.SigningMethodEdDSA, edKey, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})},
	} {
		if _, err := newVerifier(t, nil, tcase.pem).Verify(tcase.tok); err != nil {
			t.Errorf("%s: Verify: %v", name, err)
		}
	}
}

func TestSignHS256(t *testing.T) {
	v, err := NewVerifier(hsSecret, nil, RequireExp(false)) // SignHS256 writes no exp when ttl is 0
	if err != nil {
		t.Fatal(err)
	}
	payloadOf := func(tok string) map[string]json.RawMessage {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("token has %d parts", len(parts))
		}
		hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]any
		if err := json.Unmarshal(hdr, &h); err != nil || h["alg"] != "HS256" {
			t.Fatalf("header %s", hdr)
		}
		raw, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	tests := []struct {
		name              string
		ttl               time.Duration
		channels, publish []string
		wantKeys          []string
	}{
		{"sub only", 0, nil, nil, []string{"sub"}},
		{"with ttl", time.Hour, nil, nil, []string{"exp", "sub"}},
		{"empty lists kept", 0, []string{}, []string{}, []string{"channels", "publish", "sub"}},
		{"lists", time.Minute, []string{"room:*"}, []string{"room:1"}, []string{"channels", "exp", "publish", "sub"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			tok, err := SignHS256(hsSecret, "alice", tc.ttl, tc.channels, tc.publish)
			if err != nil {
				t.Fatal(err)
			}
			keys := make([]string, 0)
			for k := range payloadOf(tok) {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.wantKeys) {
				t.Errorf("claims %v, want %v", keys, tc.wantKeys)
			}
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.User != "alice" || c.HasChannels != (tc.channels != nil) ||
				!slices.Equal(c.Channels, tc.channels) || !slices.Equal(c.Publish, tc.publish) {
				t.Errorf("claims %+v", c)
			}
			if tc.ttl > 0 {
				lo, hi := before.Add(tc.ttl-time.Second), time.Now().Add(tc.ttl)
				if c.ExpiresAt.Before(lo) || c.ExpiresAt.After(hi) {
					t.Errorf("ExpiresAt %v not in [%v, %v]", c.ExpiresAt, lo, hi)
				}
			} else if !c.ExpiresAt.IsZero() {
				t.Errorf("ExpiresAt = %v, want zero", c.ExpiresAt)
			}
		})
	}

	if _, err := SignHS256(nil, "alice", 0, nil, nil); err == nil {
		t.Error("empty secret accepted")
	}
	if _, err := SignHS256(hsSecret, "", 0, nil, nil); err == nil {
		t.Error("empty sub accepted")
	}
	tok, err := SignHS256([]byte("some-other-secret-some-other-secr"), "alice", 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("token signed with another secret: err = %v", err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		header string
		want   string
	}{
		{"none", "/ws", "", ""},
		{"header", "/ws", "Bearer abc.def.ghi", "abc.def.ghi"},
		{"lowercase bearer", "/ws", "bearer abc.def.ghi", "abc.def.ghi"},
		{"uppercase bearer", "/ws", "BEARER abc.def.ghi", "abc.def.ghi"},
		{"extra spaces", "/ws", "  Bearer   abc.def.ghi  ", "abc.def.ghi"},
		{"query", "/ws?token=q.r.s", "", "q.r.s"},
		{"query escaped", "/ws?x=1&token=a%2Eb.c", "", "a.b.c"},
		{"both: header wins", "/ws?token=q.r.s", "Bearer abc.def.ghi", "abc.def.ghi"},
		{"basic auth falls back to query", "/ws?token=q.r.s", "Basic dXNlcjpwYXNz", "q.r.s"},
		{"basic auth alone", "/ws", "Basic dXNlcjpwYXNz", ""},
		{"bearer without token falls back to query", "/ws?token=q.r.s", "Bearer ", "q.r.s"},
		{"scheme only", "/ws", "Bearer", ""},
		{"Bearerabc is not bearer", "/ws", "Bearerabc", ""},
		{"empty query token", "/ws?token=", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := TokenFromRequest(r); got != tc.want {
				t.Errorf("TokenFromRequest = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		channel  string
		want     bool
	}{
		{"exact", []string{"news"}, "news", true},
		{"exact among several", []string{"a", "news", "b"}, "news", true},
		{"exact no match", []string{"news"}, "news2", false},
		{"exact is not prefix", []string{"room"}, "room:1", false},
		{"prefix", []string{"room:*"}, "room:1", true},
		{"prefix deep", []string{"room:*"}, "room:1:2", true},
		{"prefix matches bare prefix", []string{"room:*"}, "room:", true},
		{"room:* vs room", []string{"room:*"}, "room", false},
		{"prefix other", []string{"room:*"}, "chat:1", false},
		{"star matches all", []string{"*"}, "anything.at_all", true},
		{"star matches empty", []string{"*"}, "", true},
		{"inner star is literal", []string{"a*b"}, "axxb", false},
		{"inner star exact", []string{"a*b"}, "a*b", true},
		{"case sensitive", []string{"Room:*"}, "room:1", false},
		{"empty patterns", []string{}, "news", false},
		{"nil patterns", nil, "news", false},
		{"empty pattern string", []string{""}, "news", false},
		{"second pattern matches", []string{"chat:*", "room:*"}, "room:9", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Match(tc.patterns, tc.channel); got != tc.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tc.patterns, tc.channel, got, tc.want)
			}
		})
	}
}

// TestVerifyConcurrent runs verifications in parallel (meaningful under -race).
func TestVerifyConcurrent(t *testing.T) {
	keys(t)
	v := newVerifier(t, hsSecret, edPEM)
	exp := time.Now().Add(time.Hour).Unix()
	good := []string{
		sign(t, jwt.SigningMethodHS256, hsSecret, jwt.MapClaims{"sub": "h", "exp": exp, "channels": []string{"a"}}),
		sign(t, jwt.SigningMethodEdDSA, edKey, jwt.MapClaims{"sub": "e", "exp": exp, "publish": []string{"b"}}),
	}
	bad := sign(t, jwt.SigningMethodEdDSA, edKey2, jwt.MapClaims{"sub": "x", "exp": exp})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			for j := range 50 {
				if _, err := v.Verify(good[(i+j)%2]); err != nil {
					errs <- err
					return
				}
				if _, err := v.Verify(bad); err == nil {
					errs <- errors.New("bad token accepted")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestInfoClaim: the info claim is kept as given when it is an object, absent when missing or
// null, and any other type refuses the token.
func TestInfoClaim(t *testing.T) {
	v, err := NewVerifier(hsSecret, nil, RequireExp(false))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		info any
		want string // "" : no info; "!" : refused
	}{
		{nil, ""},
		{map[string]any{"name": "Ann"}, `{"name":"Ann"}`},
		{"Ann", "!"},
		{[]int{1}, "!"},
		{7, "!"},
	} {
		claims := jwt.MapClaims{"sub": "ann"}
		if tc.info != nil {
			claims["info"] = tc.info
		}
		c, err := v.Verify(sign(t, jwt.SigningMethodHS256, hsSecret, claims))
		switch {
		case tc.want == "!":
			if err == nil || !strings.Contains(err.Error(), "info claim") {
				t.Errorf("info %v: err %v, want the info claim refused", tc.info, err)
			}
		case err != nil:
			t.Errorf("info %v: %v", tc.info, err)
		case string(c.Info) != tc.want:
			t.Errorf("info %v: Info %s, want %q", tc.info, c.Info, tc.want)
		}
	}
}
