// Package auth verifies the JWT connection tokens of the gateway (PROTOCOL.md
// section 2) and decides which channels a connection may use.
//
// A token carries:
//
//   - sub (required): the user id;
//   - exp (required unless RequireExp(false)): honoured strictly, with no leeway;
//   - nbf, iat (optional): checked with a small clock-skew tolerance;
//   - aud, iss: checked when an Audience or Issuer option is given;
//   - channels (optional): patterns the connection may subscribe to;
//   - publish (optional): patterns it may publish to;
//   - send (optional): true or false, whether it may send to the services.
//
// Algorithms are pinned to the configured key type: HS256 for the shared
// secret; RS256/RS384/RS512, ES256/ES384/ES512 (by curve) or EdDSA for the
// public key; RS*, PS*, ES* and EdDSA for the keys of a JWKS URL. "none" is
// never accepted, and a token is only ever checked against a key of its own
// algorithm family, so the RS/HS key-confusion attack cannot work.
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

// ErrNoExpiry is wrapped (together with ErrInvalidToken) by the error Verify
// returns for a token without exp when exp is required.
var ErrNoExpiry = errors.New("token has no expiry")

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
	Send        bool      // "send" claim: whether it may send to the services
	HasSend     bool      // whether the "send" claim was present (without it, the node's default)
	ExpiresAt   time.Time // zero when the token has no exp
	IssuedAt    time.Time // zero when the token has no iat
	JTI         string    // the jti claim, "" when absent (revocation by jti)
	// Info is the "info" claim, a JSON object (nil when absent or null): what the connection's
	// presence entry shows others (protocol.Member.Info). Nothing else goes there.
	Info json.RawMessage
}

// Verifier checks connection tokens. Its settings are fixed once built; it is
// safe for concurrent use. Close stops the JWKS refresh, if any.
type Verifier struct {
	secret     []byte           // HS256 key; nil when not configured
	pub        crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey; nil when not configured
	jwks       *jwks            // keys of a JWKS URL; nil when not configured
	methods    []string         // algorithms accepted, derived from the configured keys
	requireExp bool
	parser     *jwt.Parser
	now        func() time.Time // replaced in tests
}

// Option sets a Verifier's checks beyond its keys.
type Option func(*verifierOptions)

type verifierOptions struct {
	requireExp bool
	audience   []string
	issuer     string
	jwks       *JWKSConfig
}

// RequireExp says whether tokens without exp are refused (ErrNoExpiry); the
// default is true.
func RequireExp(require bool) Option {
	return func(o *verifierOptions) { o.requireExp = require }
}

// Audience refuses tokens whose aud claim holds none of aud (no aud at all
// included). Without it, aud is not checked.
func Audience(aud ...string) Option {
	return func(o *verifierOptions) { o.audience = aud }
}

// Issuer refuses tokens whose iss claim is not iss (no iss at all included).
// Without it (or with ""), iss is not checked.
func Issuer(iss string) Option {
	return func(o *verifierOptions) { o.issuer = iss }
}

// JWKS adds the keys of a JWKS URL (see JWKSConfig).
func JWKS(c JWKSConfig) Option {
	return func(o *verifierOptions) { o.jwks = &c }
}

// NewVerifier accepts an HS256 secret, a PEM public key (RSA -> RS256/RS384/RS512,
// ECDSA -> ES256/ES384/ES512 by curve, Ed25519 -> EdDSA), the JWKS option, or
// any of them together. At least one is required. An empty secret counts as
// none.
//
// The PEM may hold a "PUBLIC KEY" (PKIX), an "RSA PUBLIC KEY" (PKCS #1) or a
// "CERTIFICATE" block; the first such block is used.
//
// With the JWKS option NewVerifier fetches the key set once (a failure is
// logged, not returned: tokens are refused until a fetch succeeds) and starts
// its refresh, which Close stops.
func NewVerifier(secret []byte, publicKeyPEM []byte, opts ...Option) (*Verifier, error) {
	o := verifierOptions{requireExp: true}
	for _, opt := range opts {
		opt(&o)
	}
	v := &Verifier{now: time.Now, requireExp: o.requireExp}
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
	if o.jwks != nil {
		if err := o.jwks.check(); err != nil {
			return nil, err
		}
		for _, m := range jwksMethods {
			if !slices.Contains(v.methods, m) {
				v.methods = append(v.methods, m)
			}
		}
	}
	if len(v.methods) == 0 {
		return nil, errors.New("auth: neither a JWT secret, a public key nor a JWKS URL is configured")
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithLeeway(clockSkew), // for nbf/iat; exp is re-checked strictly below
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	if len(o.audience) > 0 {
		popts = append(popts, jwt.WithAudience(o.audience...))
	}
	if o.issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.issuer))
	}
	v.parser = jwt.NewParser(popts...)
	if o.jwks != nil {
		v.jwks = newJWKS(*o.jwks) // last: nothing to stop when an earlier check fails
	}
	return v, nil
}

// Close stops the JWKS refresh (nothing to do without a JWKS URL). Tokens
// whose key is not cached any more are refused after it.
func (v *Verifier) Close() {
	if v != nil && v.jwks != nil {
		v.jwks.close()
	}
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
	Send     json.RawMessage `json:"send,omitempty"`
	Info     json.RawMessage `json:"info,omitempty"`
}

// invalid builds the error returned for a refused token. reason is short and
// safe to show a client; it never contains the token.
func invalid(reason string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, reason)
}

var (
	errExpired  = fmt.Errorf("%w: %w", ErrInvalidToken, ErrExpired)
	errNoExpiry = fmt.Errorf("%w: %w", ErrInvalidToken, ErrNoExpiry)
)

// keyFor returns the key for the token's algorithm, and refuses any algorithm
// whose family differs from the configured key (belt and braces on top of
// WithValidMethods).
//
// An asymmetric token is checked against the configured public key when its
// type fits and the token has no kid (or no JWKS URL is configured), and
// against the JWKS keys otherwise. HMAC tokens never reach the JWKS.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if !slices.Contains(v.methods, alg) {
		return nil, errors.New("algorithm not allowed")
	}
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		if v.secret != nil && alg == jwt.SigningMethodHS256.Alg() {
			return v.secret, nil
		}
		return nil, errors.New("algorithm not allowed")
	}
	_, hasKID := t.Header["kid"]
	if k := v.staticKey(t.Method); k != nil && (v.jwks == nil || !hasKID) {
		return k, nil
	}
	if v.jwks != nil && slices.Contains(jwksMethods, alg) {
		return v.jwks.key(t)
	}
	return nil, errors.New("algorithm not allowed")
}

// staticKey is the configured public key when its type fits method, else nil.
func (v *Verifier) staticKey(method jwt.SigningMethod) any {
	switch method.(type) {
	case *jwt.SigningMethodRSA:
		if k, ok := v.pub.(*rsa.PublicKey); ok {
			return k
		}
	case *jwt.SigningMethodECDSA:
		if k, ok := v.pub.(*ecdsa.PublicKey); ok {
			return k
		}
	case *jwt.SigningMethodEd25519:
		if k, ok := v.pub.(ed25519.PublicKey); ok {
			return k
		}
	}
	return nil
}

// Verify parses and checks a token: signature, algorithm (allowed for the
// configured key type only), exp (strictly; required unless RequireExp(false)),
// nbf and iat when present, aud and iss when configured, sub (required,
// non-empty), and the types of channels and publish (arrays of strings when
// present; null counts as absent) and send (a boolean). Every error wraps
// ErrInvalidToken, an expired token's also ErrExpired, a token without exp
// ErrNoExpiry; the message is short and safe to show a client.
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
	if tc.ExpiresAt == nil && v.requireExp {
		return nil, errNoExpiry
	}
	if tc.Subject == "" {
		return nil, invalid("missing sub")
	}
	c := &Claims{User: tc.Subject}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	if tc.IssuedAt != nil {
		c.IssuedAt = tc.IssuedAt.Time
	}
	c.JTI = tc.ID
	if c.Channels, c.HasChannels, err = stringArray(tc.Channels); err != nil {
		return nil, invalid("channels claim must be an array of strings")
	}
	if c.Publish, _, err = stringArray(tc.Publish); err != nil {
		return nil, invalid("publish claim must be an array of strings")
	}
	if info := bytes.TrimSpace(tc.Info); len(info) > 0 && string(info) != "null" {
		if info[0] != '{' {
			return nil, invalid("info claim must be an object")
		}
		c.Info = json.RawMessage(info)
	}
	switch string(bytes.TrimSpace(tc.Send)) {
	case "", "null":
	case "true":
		c.Send, c.HasSend = true, true
	case "false":
		c.HasSend = true
	default:
		return nil, invalid("send claim must be true or false")
	}
	return c, nil
}

// classify turns a jwt error into one of ours. The jwt message is dropped: it
// is detailed and not meant for clients.
func (v *Verifier) classify(t *jwt.Token, err error) error {
	switch {
	case errors.Is(err, errUnknownKey):
		return invalid("unknown signing key")
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
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(err.Error(), "aud claim"):
		return invalid("audience not accepted")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && strings.Contains(err.Error(), "iss claim"):
		return invalid("issuer not accepted")
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
	if tok := BearerToken(r.Header); tok != "" {
		return tok
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.Query().Get("token")
}

// BearerToken returns the credentials of "Authorization: Bearer <token>", the
// scheme in any case (RFC 7235), or "" when the header is absent or of another
// scheme.
func BearerToken(h http.Header) string {
	if scheme, rest, ok := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(rest)
	}
	return ""
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

// SignOption adds a claim to a token made by SignHS256.
type SignOption func(claims map[string]any)

// AllowSend writes the claim "send": true.
func AllowSend() SignOption {
	return func(c map[string]any) { c["send"] = true }
}

// WithInfo adds the "info" claim (a JSON object).
func WithInfo(info json.RawMessage) SignOption {
	return func(claims map[string]any) { claims["info"] = info }
}

// IssuedAt writes the claim "iat".
func IssuedAt(t time.Time) SignOption {
	return func(c map[string]any) { c["iat"] = jwt.NewNumericDate(t) }
}

// WithJTI writes the claim "jti".
func WithJTI(id string) SignOption {
	return func(c map[string]any) { c["jti"] = id }
}

// SignHS256 makes an HS256 token (for the development mode and tests) with the
// claims sub, exp (if ttl > 0), channels and publish (each omitted when nil;
// an empty non-nil slice is written as []), and those of opts.
func SignHS256(secret []byte, sub string, ttl time.Duration, channels, publish []string, opts ...SignOption) (string, error) {
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
	for _, o := range opts {
		o(claims)
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
