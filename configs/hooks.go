package configs

import (
	"net/http"
	"net/url"
	"time"
)

// Defaults of the hooks (docs/hooks.md, Hooks).
const (
	// DefaultHookTimeout bounds one hook call, its HTTP retries included: a client's frame is
	// never held longer.
	DefaultHookTimeout = 2 * time.Second
	// DefaultHookRetries is how many times an HTTP hook's POST is tried again after a failure
	// (within the timeout).
	DefaultHookRetries = 2
	// DefaultHookBreakerFailures is how many HTTP hook calls in a row must fail for the hook's
	// circuit breaker to open.
	DefaultHookBreakerFailures = 5
	// DefaultHookBreakerOpenFor is how long an open breaker fails calls at once before it lets
	// one through to try.
	DefaultHookBreakerOpenFor = 5 * time.Second
	// DefaultHookCacheSize is the most decisions a hook's cache keeps (least recently used
	// go first).
	DefaultHookCacheSize = 100000
	// MinHooksSecret is the shortest hooks.secret.
	MinHooksSecret = 16
)

// Ways a hook is called (HookConfig.Via).
const (
	HookViaBroker = "broker" // Watermill request/reply over the node's broker (any replica of the service answers)
	HookViaHTTP   = "http"   // an HTTP POST to HookConfig.URL
)

// Fail modes of a hook (HookConfig.Fail): what a call that failed (timeout, breaker open, an
// answer that is not valid) means.
const (
	HookFailClosed = "closed" // the client gets unavailable (a connect: HTTP 503)
	HookFailOpen   = "open"   // as if no hook covered the frame
)

// DefaultHookHeaders are the upgrade request's headers the connect hook is given.
func DefaultHookHeaders() []string { return []string{"Cookie", "Origin", "User-Agent"} }

// HooksConfig sets the hooks: the backend answers a client's connect, subscribe, publish,
// refresh and rpc (docs/hooks.md). Each hook is off while its via is empty.
type HooksConfig struct {
	// Secret is the HMAC-SHA256 key of the X-Gateway-Signature header of HTTP hook requests
	// (signed like webhooks); required when a hook's via is http.
	Secret string `yaml:"secret" env:"SECRET"`
	// BreakerFailures: HTTP calls of one hook failed in a row that open its circuit breaker
	// (calls then fail at once, following the hook's fail mode); default 5.
	BreakerFailures int `yaml:"breaker_failures" env:"BREAKER_FAILURES"`
	// BreakerOpenFor is how long an open breaker stays open before one call tries; default 5s.
	BreakerOpenFor time.Duration `yaml:"breaker_open_for" env:"BREAKER_OPEN_FOR"`
	// CacheSize bounds each cache of subscribe and publish decisions (entries); default 100000.
	CacheSize int `yaml:"cache_size" env:"CACHE_SIZE"`

	Connect   ConnectHookConfig `yaml:"connect" envPrefix:"CONNECT_"`
	Subscribe ChannelHookConfig `yaml:"subscribe" envPrefix:"SUBSCRIBE_"`
	Publish   ChannelHookConfig `yaml:"publish" envPrefix:"PUBLISH_"`
	Refresh   HookConfig        `yaml:"refresh" envPrefix:"REFRESH_"`
	RPC       RPCHookConfig     `yaml:"rpc" envPrefix:"RPC_"`
}

// HookConfig is how one hook is called.
type HookConfig struct {
	Via string `yaml:"via" env:"VIA"` // broker or http; empty: the hook is off
	URL string `yaml:"url" env:"URL"` // http:// or https:// URL POSTed to (via http)
	// Timeout bounds a call, retries included; default 2s.
	Timeout time.Duration `yaml:"timeout" env:"TIMEOUT"`
	// Retries: POSTs tried again after a failure (via http), within the timeout; default 2, -1: none.
	Retries int    `yaml:"retries" env:"RETRIES"`
	Fail    string `yaml:"fail" env:"FAIL"` // closed (default: the client gets unavailable) or open (as if no hook)
}

// Enabled reports whether the hook is on.
func (h HookConfig) Enabled() bool { return h.Via != "" }

// RetryCount is retries with -1 (none) applied.
func (h HookConfig) RetryCount() int { return max(h.Retries, 0) }

// FailOpen reports whether a failed call counts as no hook.
func (h HookConfig) FailOpen() bool { return h.Fail == HookFailOpen }

// ConnectHookConfig is the connect hook: called at the upgrade, after the token is verified.
type ConnectHookConfig struct {
	HookConfig `yaml:",inline"`
	// Headers are the upgrade request's headers passed to the hook; default Cookie, Origin, User-Agent.
	Headers []string `yaml:"headers" env:"HEADERS"`
}

// ChannelHookConfig is the subscribe or publish hook: called for the channels it covers, for
// which it is the authority (the token's channels and publish claims are not consulted).
type ChannelHookConfig struct {
	HookConfig `yaml:",inline"`
	// Channels are the patterns covered (as in auth.public_channels); empty: every channel.
	Channels []string `yaml:"channels" env:"CHANNELS"`
	// Cache keeps a decision per (user, channel) this long (a publish answer that replaces the
	// data excepted); 0: no cache.
	Cache time.Duration `yaml:"cache" env:"CACHE"`
}

// RPCHookConfig is the rpc hook: it answers the rpc frames of the methods it covers.
type RPCHookConfig struct {
	HookConfig `yaml:",inline"`
	// Methods are the method patterns covered (a name, a prefix ending in *, or *); empty: every method.
	Methods []string `yaml:"methods" env:"METHODS"`
}

func (h *HooksConfig) setDefaults() {
	setDefault(&h.BreakerFailures, DefaultHookBreakerFailures)
	setDefault(&h.BreakerOpenFor, DefaultHookBreakerOpenFor)
	setDefault(&h.CacheSize, DefaultHookCacheSize)
	for _, hc := range h.all() {
		setDefault(&hc.Timeout, DefaultHookTimeout)
		setDefault(&hc.Retries, DefaultHookRetries)
		setDefault(&hc.Fail, HookFailClosed)
	}
	if h.Connect.Headers == nil {
		h.Connect.Headers = DefaultHookHeaders()
	}
}

// ViaBroker reports whether some hook is called over the broker.
func (h *HooksConfig) ViaBroker() bool {
	for _, hc := range h.all() {
		if hc.Via == HookViaBroker {
			return true
		}
	}
	return false
}

// all are the five hooks' common settings.
func (h *HooksConfig) all() []*HookConfig {
	return []*HookConfig{&h.Connect.HookConfig, &h.Subscribe.HookConfig, &h.Publish.HookConfig, &h.Refresh, &h.RPC.HookConfig}
}

// validate checks the hooks' settings; each rule names its key.
func (h *HooksConfig) validate(v *validator) {
	anyHTTP := false
	for _, hc := range h.all() {
		switch hc.Via {
		case "", HookViaBroker:
			v.check(&hc.URL, hc.URL == "" || hc.Via != "", "is set but %s is empty: the hook is off", v.key(&hc.Via))
		case HookViaHTTP:
			anyHTTP = true
			u, err := url.Parse(hc.URL)
			v.check(&hc.URL, hc.URL != "", "is required when %s is http", v.key(&hc.Via))
			v.check(&hc.URL, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "",
				"%q is not an http:// or https:// URL", hc.URL)
		default:
			v.check(&hc.Via, false, "%q is not broker or http (empty: off)", hc.Via)
		}
		v.check(&hc.Timeout, hc.Timeout >= time.Millisecond, "must be positive")
		v.check(&hc.Retries, hc.Retries >= NoLimit && hc.Retries <= 10, "must be between 0 and 10, or -1 for none")
		v.check(&hc.Fail, hc.Fail == HookFailClosed || hc.Fail == HookFailOpen, "%q is not closed or open", hc.Fail)
	}
	if anyHTTP {
		v.check(&h.Secret, len(h.Secret) >= MinHooksSecret, "must be at least %d bytes when a hook's via is http", MinHooksSecret)
	}
	v.check(&h.BreakerFailures, h.BreakerFailures >= 1, "must be at least 1")
	v.check(&h.BreakerOpenFor, h.BreakerOpenFor >= time.Millisecond, "must be positive")
	v.check(&h.CacheSize, h.CacheSize >= 1, "must be at least 1")
	for _, c := range []*ChannelHookConfig{&h.Subscribe, &h.Publish} {
		for _, p := range c.Channels {
			v.check(&c.Channels, validPattern(p), "%q is not a channel name or a prefix ending in *", p)
		}
		v.check(&c.Cache, c.Cache >= 0, "must not be negative (0: no cache)")
	}
	for _, m := range h.RPC.Methods {
		v.check(&h.RPC.Methods, validMethodPattern(m), "%q is not a method name or a prefix ending in * (at most 128 characters)", m)
	}
	for _, name := range h.Connect.Headers {
		v.check(&h.Connect.Headers, name != "" && validHeaderName(name), "%q is not a header name", name)
	}
}

// validMethodPattern reports whether p is a method, or a prefix of one followed by '*'.
func validMethodPattern(p string) bool {
	return p != "" && len(p) <= 128
}

// validHeaderName reports whether name is a token (RFC 9110), as header names are.
func validHeaderName(name string) bool {
	for _, r := range name {
		if r > 127 || r <= ' ' || r == ':' || r == '(' || r == ')' || r == ',' || r == '"' || r == '/' || r == '[' || r == ']' || r == '?' || r == '=' || r == '{' || r == '}' || r == '\\' || r == ';' || r == '<' || r == '>' || r == '@' {
			return false
		}
	}
	return http.CanonicalHeaderKey(name) != ""
}
