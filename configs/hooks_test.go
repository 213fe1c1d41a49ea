package configs

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestHooksDefaults: every hook is off, with its documented defaults.
func TestHooksDefaults(t *testing.T) {
	cfg, err := Load("", []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hooks
	for _, hc := range h.all() {
		if hc.Enabled() || hc.Timeout != DefaultHookTimeout || hc.RetryCount() != DefaultHookRetries || hc.FailOpen() {
			t.Errorf("hook %+v: want off, timeout 2s, 2 retries, fail closed", *hc)
		}
	}
	if !reflect.DeepEqual(h.Connect.Headers, DefaultHookHeaders()) || h.BreakerFailures != 5 || h.BreakerOpenFor != 5*time.Second ||
		h.Subscribe.Cache != 0 || h.CacheSize != DefaultHookCacheSize {
		t.Errorf("defaults %+v", h)
	}
}

// TestHooksSettings: the variables reach their settings (the embedded common settings too).
func TestHooksSettings(t *testing.T) {
	cfg, err := Load("", []string{secret,
		"GATEWAY_HOOKS_SECRET=hooks-secret-0123456789",
		"GATEWAY_HOOKS_SUBSCRIBE_VIA=http", "GATEWAY_HOOKS_SUBSCRIBE_URL=http://127.0.0.1:9/sub",
		"GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=room:*, chat", "GATEWAY_HOOKS_SUBSCRIBE_CACHE=30s",
		"GATEWAY_HOOKS_SUBSCRIBE_RETRIES=-1", "GATEWAY_HOOKS_SUBSCRIBE_FAIL=open",
		"GATEWAY_HOOKS_RPC_VIA=broker", "GATEWAY_HOOKS_RPC_METHODS=orders.*", "GATEWAY_HOOKS_RPC_TIMEOUT=500ms",
		"GATEWAY_HOOKS_CONNECT_HEADERS=Cookie",
	})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Hooks.Subscribe
	if s.Via != HookViaHTTP || s.URL != "http://127.0.0.1:9/sub" || !reflect.DeepEqual(s.Channels, []string{"room:*", "chat"}) ||
		s.Cache != 30*time.Second || s.RetryCount() != 0 || !s.FailOpen() {
		t.Errorf("subscribe %+v", s)
	}
	r := cfg.Hooks.RPC
	if r.Via != HookViaBroker || !reflect.DeepEqual(r.Methods, []string{"orders.*"}) || r.Timeout != 500*time.Millisecond {
		t.Errorf("rpc %+v", r)
	}
	if !reflect.DeepEqual(cfg.Hooks.Connect.Headers, []string{"Cookie"}) {
		t.Errorf("connect headers %v", cfg.Hooks.Connect.Headers)
	}
}

// TestHooksValidation: each wrong hook setting is refused under its own key.
func TestHooksValidation(t *testing.T) {
	const sec = "GATEWAY_HOOKS_SECRET=hooks-secret-0123456789"
	for _, tt := range []struct {
		env []string
		key string
	}{
		{[]string{sec, "GATEWAY_HOOKS_CONNECT_VIA=http"}, "hooks.connect.url"},
		{[]string{sec, "GATEWAY_HOOKS_PUBLISH_VIA=http", "GATEWAY_HOOKS_PUBLISH_URL=ftp://x"}, "hooks.publish.url"},
		{[]string{"GATEWAY_HOOKS_RPC_VIA=http", "GATEWAY_HOOKS_RPC_URL=http://127.0.0.1:9/"}, "hooks.secret"},
		{[]string{"GATEWAY_HOOKS_REFRESH_VIA=grpc"}, "hooks.refresh.via"},
		{[]string{"GATEWAY_HOOKS_REFRESH_URL=http://127.0.0.1:9/"}, "hooks.refresh.url"},
		{[]string{"GATEWAY_HOOKS_SUBSCRIBE_FAIL=maybe"}, "hooks.subscribe.fail"},
		{[]string{"GATEWAY_HOOKS_SUBSCRIBE_TIMEOUT=-1s"}, "hooks.subscribe.timeout"},
		{[]string{"GATEWAY_HOOKS_RPC_RETRIES=-2"}, "hooks.rpc.retries"},
		{[]string{"GATEWAY_HOOKS_SUBSCRIBE_CHANNELS=a*b"}, "hooks.subscribe.channels"},
		{[]string{"GATEWAY_HOOKS_PUBLISH_CACHE=-1s"}, "hooks.publish.cache"},
		{[]string{"GATEWAY_HOOKS_CONNECT_HEADERS=Bad Header"}, "hooks.connect.headers"},
		{[]string{"GATEWAY_HOOKS_BREAKER_FAILURES=-1"}, "hooks.breaker_failures"},
		{[]string{"GATEWAY_HOOKS_CACHE_SIZE=-1"}, "hooks.cache_size"},
	} {
		_, err := Load("", append([]string{secret}, tt.env...))
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tt.key {
			t.Errorf("%v: %v, want a *KeyError naming %s", tt.env, err, tt.key)
		}
	}
}
