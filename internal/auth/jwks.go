package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// jwksMethods are the algorithms a JWKS key may verify (an identity provider's
// asymmetric keys; "oct" keys of a JWKS are never used).
var jwksMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// errUnknownKey is returned by keyFor when no JWKS key verifies the token: its
// kid is unknown even after a refresh, or the key set cannot be fetched.
var errUnknownKey = errors.New("unknown signing key")

// JWKSConfig is a JWKS URL whose keys verify tokens (an identity provider's,
// such as Keycloak, Auth0 or Cognito).
type JWKSConfig struct {
	URL string // http or https
	// Refresh is how often the key set is fetched again in the background.
	Refresh time.Duration
	// Timeout bounds one fetch, and the wait of a token with an unknown kid.
	Timeout time.Duration
	// UnknownKIDEvery is the least time between two fetches caused by tokens
	// with a kid that is not in the set (a rotation); beyond, such tokens are
	// refused at once without a fetch.
	UnknownKIDEvery time.Duration
	Log             *slog.Logger // nil: discarded
}

func (c JWKSConfig) check() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("auth: JWKS URL %q is not an http(s) URL", c.URL)
	}
	if c.Refresh <= 0 || c.Timeout <= 0 || c.UnknownKIDEvery <= 0 {
		return errors.New("auth: the JWKS refresh, timeout and unknown-kid interval must be positive")
	}
	return nil
}

// jwks caches the keys of a JWKS URL (github.com/MicahParks/keyfunc). Its
// refresh goroutine belongs to it and ends on close; it is safe for
// concurrent use.
type jwks struct {
	kf     keyfunc.Keyfunc
	cancel context.CancelFunc
}

// newJWKS fetches the key set once (waiting at most c.Timeout; a failure is
// logged and tokens are refused until a later fetch succeeds) and starts the
// refresh goroutine.
func newJWKS(c JWKSConfig) *jwks {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	noErrorFirst := true
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{c.URL}, keyfunc.Override{
		Client:                    &http.Client{Timeout: c.Timeout},
		HTTPTimeout:               c.Timeout,
		NoErrorReturnFirstHTTPReq: &noErrorFirst,
		RefreshInterval:           c.Refresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(c.UnknownKIDEvery), 1),
		// A token with an unknown kid waits at most this long for the rate limit and the fetch;
		// a wait longer than it is refused at once.
		RateLimitWaitMax: c.Timeout,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				log.Warn("cannot fetch the JWKS; tokens signed with keys not cached are refused", "url", safeURL(u), "error", err)
			}
		},
	})
	if err != nil {
		// Only a URL that does not parse fails here, and check refused it before.
		log.Error("JWKS not usable", "url", safeURL(c.URL), "error", err)
		cancel()
		return &jwks{cancel: cancel}
	}
	return &jwks{kf: kf, cancel: cancel}
}

// key is the jwt.Keyfunc of the cached key set, refreshing it (rate limited)
// for an unknown kid. Its errors wrap errUnknownKey.
func (j *jwks) key(t *jwt.Token) (any, error) {
	if j.kf == nil {
		return nil, errUnknownKey
	}
	k, err := j.kf.Keyfunc(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnknownKey, err)
	}
	if set, ok := k.(jwt.VerificationKeySet); ok && len(set.Keys) == 0 {
		return nil, errUnknownKey // a token without kid, and no key (yet)
	}
	return k, nil
}

func (j *jwks) close() { j.cancel() }

// safeURL is u for a log line: without user info and query, which may hold credentials.
func safeURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
