package configs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wsgateway/gateway/internal/natsurl"
	"github.com/wsgateway/gateway/protocol"
)

// KeyError is a setting that is not valid: Key is its YAML path, Env its variable.
type KeyError struct {
	Key, Env, Reason string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("invalid setting %s (%s): %s", e.Key, e.Env, e.Reason)
}

// bad is a *KeyError for field, a pointer to a field of c; its key and variable come from the
// struct tags (settingOf).
func (c *Config) bad(field any, format string, args ...any) *KeyError {
	s := c.settingOf(field)
	return &KeyError{Key: s.key, Env: s.env, Reason: fmt.Sprintf(format, args...)}
}

// validator keeps the first rule that fails; the rules after it are not checked, so Validate
// names the first wrong setting in the order of the rules.
type validator struct {
	c   *Config
	err error
}

// check fails field, a pointer to a field of the Config, with the reason format when ok is
// false and no rule failed before.
func (v *validator) check(field any, ok bool, format string, args ...any) {
	if v.err == nil && !ok {
		v.err = v.c.bad(field, format, args...)
	}
}

// failed reports whether a rule failed; rules that read files check it first.
func (v *validator) failed() bool { return v.err != nil }

// key is the YAML key of field, for reasons that name another setting.
func (v *validator) key(field any) string { return v.c.settingOf(field).key }

// Validate checks every setting and returns the first that is wrong, as a *KeyError naming its
// key and variable. The settings of the broker sections that only the broker uses (shards,
// partitions, retention, ...) are left to the broker package's Config check, which
// gateway.Check and gateway.New run.
func (c *Config) Validate() error {
	v := &validator{c: c}
	c.validateNode(v)
	c.validateBroker(v)
	c.Auth.validate(v, c.Development)
	v.check(&c.API.Key, c.API.Key == "" || len(c.API.Key) >= 16, "must be at least 16 characters")
	c.WebSocket.validate(v)
	c.History.validate(v)
	c.Router.validate(v)
	c.Limits.validate(v)
	c.Events.validate(v)
	c.Presence.validate(v)
	c.Webhooks.validate(v, c.Events.Disabled)
	c.Hooks.validate(v)
	c.Pusher.validate(v)
	v.check(&c.Drain.Period, c.Drain.Period >= 0, "must not be negative")
	c.Log.validate(v)
	c.validateServer(v)
	return v.err
}

// validateNode checks the settings of the node itself: its address, id, broker and topic prefix.
func (c *Config) validateNode(v *validator) {
	v.check(&c.Addr, hostPort(c.Addr), "%q is not host:port", c.Addr)
	v.check(&c.NodeID, c.NodeID != "" && len(c.NodeID) <= 64 && !strings.ContainsAny(c.NodeID, " \t\n"),
		"must be 1 to 64 characters without spaces")
	switch c.Broker {
	case BrokerMemory, BrokerNATS, BrokerJetStream, BrokerRedis, BrokerKafka:
	default:
		v.check(&c.Broker, false, "%q is not one of memory, nats, jetstream, redis, kafka", c.Broker)
	}
	v.check(&c.BrokerConnectTimeout, c.BrokerConnectTimeout >= 0, "must not be negative (0 waits for ever)")
	v.check(&c.TopicPrefix, c.TopicPrefix != "" && len(c.TopicPrefix) <= 32 &&
		strings.Trim(c.TopicPrefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == "",
		"%q must be 1 to 32 of [A-Za-z0-9-]", c.TopicPrefix)
}

// validateBroker checks the addresses of the configured broker, which the node also uses
// outside the broker (the dedupe store, the log while it waits for the broker). The broker
// package checks the rest of its section.
func (c *Config) validateBroker(v *validator) {
	switch c.Broker {
	case BrokerNATS, BrokerJetStream:
		v.check(&c.NATS.URL, strings.TrimSpace(c.NATS.URL) != "", "must not be empty")
		if err := natsurl.Check(c.NATS.URL); err != nil {
			v.check(&c.NATS.URL, false, "%v", err)
		}
	case BrokerRedis:
		if c.Redis.Mode == DefaultRedisMode {
			v.check(&c.Redis.Addr, hostPort(c.Redis.Addr), "%q is not host:port", c.Redis.Addr)
		}
	case BrokerKafka:
		for _, b := range c.Kafka.Brokers {
			v.check(&c.Kafka.Brokers, hostPort(strings.TrimSpace(b)), "%q is not host:port", b)
		}
	}
}

// validate checks the ways to authenticate clients and the channel patterns. Without a way to
// authenticate, only development mode is accepted.
func (a *AuthConfig) validate(v *validator, development bool) {
	v.check(&a.JWTSecret, a.JWTSecret == "" || len(a.JWTSecret) >= 16, "must be at least 16 bytes")
	if a.JWTPublicKey != "" && !v.failed() {
		_, err := os.Stat(a.JWTPublicKey)
		v.check(&a.JWTPublicKey, err == nil, "cannot read %q: %v", a.JWTPublicKey, errors.Unwrap(err))
	}
	a.validateTokens(v)
	if !a.Configured() && !development {
		v.check(&a.JWTSecret, false, "%s", v.c.noAuthReason())
	}
	for _, p := range a.PublicChannels {
		v.check(&a.PublicChannels, validPattern(p), "%q is not a channel name or a prefix ending in *", p)
	}
	for _, p := range a.AnonymousPublish {
		v.check(&a.AnonymousPublish, validPattern(p), "%q is not a channel name or a prefix ending in *", p)
	}
}

// noAuthReason says why a node without a way to authenticate clients is refused, and what to set.
func (c *Config) noAuthReason() string {
	a := &c.Auth
	return fmt.Sprintf("no way to authenticate clients: set %s, %s, %s or %s=true); development mode, which makes up "+
		"a secret, runs only on the embedded memory broker (%s=%s), since nodes sharing a broker would each make up their own",
		c.settingOf(&a.JWTSecret).name(), c.settingOf(&a.JWTPublicKey).name(), c.settingOf(&a.JWKSURL).name(),
		strings.TrimSuffix(c.settingOf(&a.AllowAnonymous).name(), ")"), c.settingOf(&c.Broker).env, BrokerMemory)
}

// validateTokens checks the token settings: the JWKS URL and its durations, audience, issuer.
func (a *AuthConfig) validateTokens(v *validator) {
	if a.JWKSURL != "" {
		u, err := url.Parse(a.JWKSURL)
		v.check(&a.JWKSURL, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "",
			"%q is not an http:// or https:// URL", a.JWKSURL)
	}
	v.check(&a.JWKSRefresh, a.JWKSRefresh >= time.Second, "must be at least 1s")
	v.check(&a.JWKSTimeout, a.JWKSTimeout >= time.Millisecond, "must be positive")
	for _, aud := range a.Audience {
		v.check(&a.Audience, aud != "", "entries must not be empty")
	}
	v.check(&a.Issuer, strings.TrimSpace(a.Issuer) == a.Issuer, "%q has spaces around it", a.Issuer)
}

// validate checks the client connections' settings.
func (w *WebSocketConfig) validate(v *validator) {
	for _, o := range w.AllowedOrigins {
		v.check(&w.AllowedOrigins, o == "*" || strings.Contains(o, "://"), "%q must be * or an origin like https://example.com", o)
	}
	v.check(&w.MaxFrameSize, w.MaxFrameSize >= 1024 && w.MaxFrameSize <= 64<<20, "must be between 1024 and 67108864 bytes")
	v.check(&w.SendBuffer, w.SendBuffer >= 8 && w.SendBuffer <= 1<<16, "must be between 8 and 65536 frames")
	v.check(&w.WriteTimeout, w.WriteTimeout >= time.Millisecond, "must be positive")
	v.check(&w.LatencyBudget, w.Budget() >= 0 && w.Budget() <= time.Second, "must be between 0 and 1s (0: every frame written at once)")
	v.check(&w.WriteDelay, w.WriteDelay == 0, "was replaced by websocket.latency_budget (GATEWAY_WS_LATENCY_BUDGET, default %s): "+
		"frames now wait only while the node is busy, at most the budget; remove write_delay and set latency_budget instead", DefaultLatencyBudget)
	v.check(&w.CompressionLevel, w.CompressionLevel >= 1 && w.CompressionLevel <= 9, "must be a flate level, 1 (fastest) to 9 (smallest)")
	v.check(&w.PingInterval, w.PingInterval >= 100*time.Millisecond, "must be at least 100ms")
	v.check(&w.PublishTimeout, w.PublishTimeout >= time.Millisecond, "must be positive")
}

// validate checks the history bounds and the per-channel rules.
func (h *HistoryConfig) validate(v *validator) {
	v.check(&h.Size, h.Size >= 0, "must not be negative")
	v.check(&h.TTL, h.TTL >= 0, "must not be negative")
	v.check(&h.MaxReplay, h.MaxReplay >= 1, "must be at least 1")
	v.check(&h.MaxBytes, h.MaxBytes >= -1, "must be a number of bytes, or -1 for no bound")
	for i, r := range h.Channels {
		if reason := r.problem(); reason != "" {
			v.check(&h.Channels, false, "rule %d (%q): %s", i+1, r.Pattern, reason)
		}
	}
}

// validate checks the router's middleware settings.
func (r *RouterConfig) validate(v *validator) {
	v.check(&r.DedupeWindow, r.DedupeWindow >= time.Second, "must be at least 1s")
	switch r.DedupeStore {
	case "auto", "memory", "redis":
	default:
		v.check(&r.DedupeStore, false, "%q is not auto, memory or redis", r.DedupeStore)
	}
	v.check(&r.Timeout, r.Timeout >= time.Millisecond, "must be positive")
	v.check(&r.BreakerFailures, r.BreakerFailures >= 1, "must be at least 1")
	v.check(&r.PoisonTopic, r.PoisonTopic == "" || protocol.ValidChannel(r.PoisonTopic), "%q must match [A-Za-z0-9_:.-]{1,128}", r.PoisonTopic)
	for _, k := range r.SigningKeys {
		id, secret, ok := strings.Cut(k, ":")
		v.check(&r.SigningKeys, ok && id != "" && len(secret) >= 16, "entries must be id:secret with a secret of at least 16 bytes")
	}
	v.check(&r.RequireSignature, !r.RequireSignature || len(r.SigningKeys) > 0, "needs %s", v.key(&r.SigningKeys))
	v.check(&r.RetryAttempts, r.RetryAttempts >= 0 && r.RetryAttempts <= 100, "must be between 0 and 100")
}

// validate checks the limits: no negative value but -1 (NoLimit) where it turns a limit off, and
// a subscribe burst that lets a client resubscribe everything it may hold at once. Each rule
// names its own key.
func (l *LimitsConfig) validate(v *validator) {
	offOrPositive := func(x float64) bool { return x == NoLimit || x > 0 }
	v.check(&l.PublishRate, offOrPositive(l.PublishRate), "must be positive, or -1 for no limit")
	v.check(&l.PublishBurst, l.PublishBurst >= 0, "must not be negative")
	v.check(&l.UserPublishRate, l.UserPublishRate >= 0 || l.UserPublishRate == NoLimit, "must not be negative (0 or -1: no limit)")
	v.check(&l.UserPublishBurst, l.UserPublishBurst >= 0, "must not be negative")
	v.check(&l.ConnectionsPerNode, l.ConnectionsPerNode >= 0, "must not be negative (0: no limit)")
	v.check(&l.ConnectionsPerUser, l.ConnectionsPerUser >= 0, "must not be negative (0: no limit)")
	v.check(&l.SubscriptionsPerConnection, offOrPositive(float64(l.SubscriptionsPerConnection)), "must be positive, or -1 for no limit")
	v.check(&l.SubscribeRate, offOrPositive(l.SubscribeRate), "must be positive, or -1 for no limit")
	v.check(&l.SubscribeBurst, l.SubscribeBurst >= 1, "must be positive")
	v.check(&l.SubscribeBurst, l.SubscribeRate <= 0 || l.SubscriptionsPerConnection <= 0 || l.SubscribeBurst >= l.SubscriptionsPerConnection,
		"%d is below %s (%d): a reconnecting client could not resubscribe everything at once",
		l.SubscribeBurst, v.key(&l.SubscriptionsPerConnection), l.SubscriptionsPerConnection)
	v.check(&l.RPCRate, offOrPositive(l.RPCRate), "must be positive, or -1 for no limit")
	v.check(&l.RPCBurst, l.RPCBurst >= 0, "must not be negative")
	v.check(&l.RateLimitedDisconnect, offOrPositive(float64(l.RateLimitedDisconnect)), "must be positive, or -1 to never disconnect")
	v.check(&l.RateLimitedWindow, l.RateLimitedWindow >= time.Millisecond, "must be positive")
}

// validate checks the lifecycle events' settings.
func (e *EventsConfig) validate(v *validator) {
	v.check(&e.Heartbeat, e.Heartbeat >= 10*time.Millisecond, "must be at least 10ms")
	v.check(&e.Queue, e.Queue >= 1 && e.Queue <= 1<<20, "must be between 1 and 1048576")
}

// validate checks the presence settings. Whether the broker keeps presence is checked by the
// gateway (gateway.Check and New), which knows the broker packages.
func (p *PresenceConfig) validate(v *validator) {
	for _, c := range p.Channels {
		v.check(&p.Channels, validPattern(c), "%q is not a channel name or a prefix ending in *", c)
	}
	for _, c := range p.JoinLeave {
		v.check(&p.JoinLeave, validPattern(c), "%q is not a channel name or a prefix ending in *", c)
	}
	v.check(&p.JoinLeave, len(p.JoinLeave) == 0 || len(p.Channels) > 0, "needs %s: join and leave are sent on presence channels only", v.key(&p.Channels))
	v.check(&p.MaxMembers, p.MaxMembers >= 1 || p.MaxMembers == NoLimit, "must be positive, or -1 for no cap")
	v.check(&p.Heartbeat, p.Heartbeat >= 10*time.Millisecond, "must be at least 10ms")
	v.check(&p.Coalesce, p.CoalesceWindow() >= 0, "must not be negative (0: no coalescing)")
}

// validate checks the log's level and format.
func (l *LogConfig) validate(v *validator) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		v.check(&l.Level, false, "%q is not one of debug, info, warn, error", l.Level)
	}
	switch l.Format {
	case "text", "json":
	default:
		v.check(&l.Format, false, "%q is not text or json", l.Format)
	}
}

// validateServer checks the listener's settings: TLS, HTTP timeouts and the admin listener.
func (c *Config) validateServer(v *validator) {
	c.TLS.validate(v)
	h := &c.HTTP
	v.check(&h.ReadHeaderTimeout, h.ReadHeaderTimeout >= time.Millisecond, "must be positive")
	v.check(&h.IdleTimeout, h.IdleTimeout >= time.Millisecond, "must be positive")
	v.check(&h.ReadTimeout, h.ReadTimeout >= time.Millisecond, "must be positive")
	v.check(&c.Stream.Heartbeat, c.Stream.Heartbeat >= time.Millisecond, "must be positive")
	v.check(&c.Stream.MaxChannels, c.Stream.MaxChannels >= 1 && c.Stream.MaxChannels <= 1024, "must be between 1 and 1024")
	if c.Admin.Addr != "" {
		v.check(&c.Admin.Addr, hostPort(c.Admin.Addr), "%q is not host:port", c.Admin.Addr)
		v.check(&c.Admin.Addr, !sameListener(c.Admin.Addr, c.Addr),
			"%q is the main listener's address %q: the admin listener must have a port of its own", c.Admin.Addr, c.Addr)
	}
}

// validate checks that the certificate and key are both set or both empty, readable, and a pair.
func (t *TLSConfig) validate(v *validator) {
	if t.CertFile == "" && t.KeyFile == "" {
		return
	}
	v.check(&t.KeyFile, t.KeyFile != "", "must be set together with %s", v.key(&t.CertFile))
	v.check(&t.CertFile, t.CertFile != "", "must be set together with %s", v.key(&t.KeyFile))
	if v.failed() {
		return
	}
	certPEM, err := os.ReadFile(t.CertFile)
	v.check(&t.CertFile, err == nil, "cannot read %q: %v", t.CertFile, errors.Unwrap(err))
	if v.failed() {
		return
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	v.check(&t.KeyFile, err == nil, "cannot read %q: %v", t.KeyFile, errors.Unwrap(err))
	if v.failed() {
		return
	}
	if _, err := LoadCertificate(certPEM, keyPEM); err != nil {
		v.err = err
	}
}

// tlsFiles are the settings of the certificate and its key, for LoadCertificate's errors.
var tlsFiles = func() (cert, key setting) {
	var c Config
	return c.settingOf(&c.TLS.CertFile), c.settingOf(&c.TLS.KeyFile)
}

// LoadCertificate parses a PEM certificate chain and its private key; the error is a *KeyError
// naming tls.cert_file or tls.key_file.
func LoadCertificate(certPEM, keyPEM []byte) (tls.Certificate, error) {
	certFile, keyFile := tlsFiles()
	bad := func(s setting, format string, args ...any) error {
		return &KeyError{Key: s.key, Env: s.env, Reason: fmt.Sprintf(format, args...)}
	}
	var certs int
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return tls.Certificate{}, bad(certFile, "certificate %d: %v", certs+1, err)
		}
		certs++
	}
	if certs == 0 {
		return tls.Certificate{}, bad(certFile, "holds no PEM CERTIFICATE block")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, bad(keyFile, "not the private key of %s: %v", certFile.key, err)
	}
	return cert, nil
}

// sameListener reports whether listening on a would take b's port: the same port (0 excepted,
// a random one) on the same host or on all interfaces.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return false
	}
	na, err1 := net.LookupPort("tcp", pa)
	nb, err2 := net.LookupPort("tcp", pb)
	if err1 != nil || err2 != nil || na != nb || na == 0 {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return wildcard(ha) || wildcard(hb) || strings.EqualFold(ha, hb)
}

// hostPort reports whether s is host:port with a port that is a number from 0 to 65535 or a
// service name, so a wrong port is refused here rather than when the node listens or dials.
func hostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// validPattern reports whether p is a channel name, or a prefix of one followed by '*'.
func validPattern(p string) bool {
	name := strings.TrimSuffix(p, "*")
	if name == "" {
		return p == "*"
	}
	return protocol.ValidChannel(name) || name == protocol.UserChannel
}
