// Package auth verifies the JWT connection tokens of the gateway (PROTOCOL.md
// section 2) and decides which channels a connection may use.
//
// A token carries:
//
//   - sub (required): the user id;
//   - exp (optional): honoured strictly, with no leeway;
//   - nbf, iat (optional): checked with a small clock-skew tolerance;
//   - channels (optional): patterns the connection may subscribe to;
//   - publish (optional): patterns it may publish to.
//
// Algorithms are pinned to the configured key type: HS256 for the shared
// secret; RS256/RS384/RS512, ES256/ES384/ES512 (by curve) or EdDSA for the
// public key. "none" is never accepted, and a token is only ever checked
// against the key of its own algorithm family, so the RS/HS key-confusion
// attack cannot work.
package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is wrapped by every error Verify returns.
var ErrInvalidToken = errors.New("invalid token")

// ErrExpired is wrapped (together with ErrInvalidToken) by the error Verify
// returns for a token whose exp has passed.
var ErrExpired = errors.New("token expired")

// clockSkew is the tolerance for nbf and iat, so that a token issued by a host
// whose clock runs slightly ahead is not refused. exp gets no tolerance.
const clockSkew = 5 * time.Second

// maxTokenBytes bounds the work done on a token before anything is checked.
const maxTokenBytes = 64 << 10

// Claims are what a connection token grants.
type Claims struct {
	User        string    // sub (required, non-empty)
	Channels    []string  // "channels" claim: patterns the connection may subscribe to
	HasChannels bool      // whether the "channels" claim was present (without it, only public channels)
	Publish     []string  // "publish" claim: patterns it may publish to; absent = none
	ExpiresAt   time.Time // zero when the token has no exp
}

// Verifier checks connection tokens. It is immutable once built and safe for
// concurrent use.
type Verifier struct {
	secret  []byte           // HS256 key; nil when not configured
	pub     crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey; nil when not configured
	methods []string         // algorithms accepted, derived from the configured keys
	parser  *jwt.Parser
	now     func() time.Time // replaced in tests
}

// NewVerifier accepts an HS256 secret, a PEM public key (RSA -> RS256/RS384/RS512,
// ECDSA -> ES256/ES384/ES512 by curve, Ed25519 -> EdDSA), or both. At least one
// is required. An empty secret counts as none.
//
// The PEM may hold a "PUBLIC KEY" (PKIX), an "RSA PUBLIC KEY" (PKCS #1) or a
// "CERTIFICATE" block; the first such block is used.
func NewVerifier(secret []byte, publicKeyPEM []byte) (*Verifier, error) {
	v := &Verifier{now: time.Now}
	if len(secret) > 0 {
		v.secret = bytes.Clone(secret)
		v.methods = append(v.methods, jwt.SigningMethodHS256.Alg())
	}
	if len(bytes.TrimSpace(publicKeyPEM)) > 0 {
		if len(secret) > 0 && bytes.Equal(bytes.TrimSpace(secret), bytes.TrimSpace(publicKeyPEM)) {
			// The public key is public: as an HMAC secret it would let anyone sign.
			return nil, errors.New("auth: the JWT secret must not be the public key")
		}
		pub, methods, err := parsePublicKey(publicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.pub = pub
		v.methods = append(v.methods, methods...)
	}
	if len(v.methods) == 0 {
		return nil, errors.New("auth: neither a JWT secret nor a public key is configured")
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithLeeway(clockSkew), // for nbf/iat; exp is re-checked strictly below
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	return v, nil
}

// parsePublicKey finds the first public key in a PEM document and returns it
// with the algorithms it may verify.
func parsePublicKey(data []byte) (crypto.PublicKey, []string, error) {
	var pub any
	for rest := data; pub == nil; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, nil, errors.New("auth: public key: no PEM PUBLIC KEY block found")
		}
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return nil, nil, fmt.Errorf("auth: public key: found a %s; give the public key instead", block.Type)
			}
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("auth: public key: %v", err)
		}
	}

	switch k := pub.(type) {
	case *rsa.PublicKey:
		return k, []string{"RS256", "RS384", "RS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("auth: public key: unsupported ECDSA curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return k, []string{"EdDSA"}, nil
	}
	return nil, nil, fmt.Errorf("auth: public key: unsupported key type %T", pub)
}

// tokenClaims is the wire form of a token's claims. channels and publish are
// kept raw so that absent, null, empty and wrongly typed can be told apart.
type tokenClaims struct {
	jwt.RegisteredClaims
	Channels json.RawMessage `json:"channels,omitempty"`
	Publish  json.RawMessage `json:"publish,omitempty"`
}

// invalid builds the error returned for a refused token. reason is short and
// safe to show a client; it never contains the token.
func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, reason)
}

var errExpired = fmt.Errorf("%w: %w", ErrInvalidToken, ErrExpired)

// keyFor returns the key for the token's algorithm, and refuses any algorithm
// whose family differs from the configured key (belt and braces on top of
// WithValidMethods).
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !slices.Contains(v.methods, alg) {
		return nil, errors.New("algorithm not allowed")
	}
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil && alg == jwt.SigningMethodHS256.Alg() {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA:
		if k, ok := v.pub.(*rsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodECDSA:
		if k, ok := v.pub.(*ecdsa.PublicKey); ok {
			return k, nil
		}
	case *jwt.SigningMethodEd25519:
		if k, ok := v.pub.(ed25519.PublicKey); ok {
			return k, nil
		}
	}
	return nil, errors.New("algorithm not allowed")
}

// Verify parses and checks a token: signature, algorithm (allowed for the
// configured key type only), exp (strictly), nbf and iat when present, sub
// (required, non-empty), and the types of channels and publish (arrays of
// strings when present; null counts as absent). Every error wraps
// ErrInvalidToken, an expired token's also ErrExpired; the message is short
// and safe to show a client.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, invalid("missing")
	}
	if len(token) > maxTokenBytes {
		return nil, invalid("too long")
	}
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyFor)
	if err != nil {
		return nil, v.classify(t, err)
	}
	if !t.Valid {
		return nil, invalid("signature invalid")
	}
	// exp is honoured with no leeway: the token is expired from exp on.
	if tc.ExpiresAt != nil && !v.now().Before(tc.ExpiresAt.Time) {
		return nil, errExpired
	}
	if tc.Subject == "" {
		return nil, invalid("missing sub")
	}
	c := &Claims{User: tc.Subject}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	if c.Channels, c.HasChannels, err = stringArray(tc.Channels); err != nil {
		return nil, invalid("channels claim must be an array of strings")
	}
	if c.Publish, _, err = stringArray(tc.Publish); err != nil {
		return nil, invalid("publish claim must be an array of strings")
	}
	return c, nil
}

// classify turns a jwt error into one of ours. The jwt message is dropped: it
// is detailed and not meant for clients.
func (v *Verifier) classify(t *jwt.Token, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return invalid("malformed")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// Unknown or missing alg, or keyFor refused it.
		return invalid("algorithm not allowed")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		// WithValidMethods reports a refused alg as a signature error.
		if t == nil || t.Method == nil || !slices.Contains(v.methods, t.Method.Alg()) {
			return invalid("algorithm not allowed")
		}
		return invalid("signature invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return errExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid("not valid yet")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid("issued in the future")
	}
	return invalid("invalid claims")
}

// stringArray decodes an optional claim that must be an array of strings.
// Absent and null both report present=false; [] reports an empty, non-nil
// slice with present=true.
func stringArray(raw json.RawMessage) (list []string, present bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	var items []any
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, false, err
	}
	list = make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, false, errors.New("not a string")
		}
		list = append(list, s)
	}
	return list, true, nil
}

// TokenFromRequest returns the token from "Authorization: Bearer <jwt>" (the
// scheme in any case) or the "token" query parameter ("" if none). The header
// wins when both are present.
func TokenFromRequest(r *http.Request) string {
	if scheme, rest, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if tok := strings.TrimSpace(rest); tok != "" {
			return tok
		}
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.Query().Get("token")
}

// Match reports whether channel matches one of patterns: exact match, or an
// entry ending in "*" matches by prefix ("room:*" matches "room:1"; "*"
// matches everything). Only a trailing "*" is a wildcard. Reserved names such
// as "$user" are the caller's business: check them before calling Match.
func Match(patterns []string, channel string) bool {
	for _, p := range patterns {
		if p == channel {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(channel, prefix) {
			return true
		}
	}
	return false
}

// SignHS256 makes an HS256 token (for the development mode and tests) with the
// claims sub, exp (if ttl > 0), channels and publish (each omitted when nil;
// an empty non-nil slice is written as []).
func SignHS256(secret []byte, sub string, ttl time.Duration, channels, publish []string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: empty HS256 secret")
	}
	if sub == "" {
		return "", errors.New("auth: empty sub")
	}
	claims := jwt.MapClaims{"sub": sub}
	if ttl > 0 {
		claims["exp"] = jwt.NewNumericDate(time.Now().Add(ttl))
	}
	if channels != nil {
		claims["channels"] = channels
	}
	if publish != nil {
		claims["publish"] = publish
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
