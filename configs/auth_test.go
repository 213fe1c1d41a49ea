package configs_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/configs"
)

// TestTokenSettingsDefaults: exp required, no audience or issuer, no default send, JWKS off with
// its refresh and timeout, and a 30s read timeout.
func TestTokenSettingsDefaults(t *testing.T) {
	cfg, err := configs.Load("", []string{jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Auth
	if !a.ExpRequired() || a.Audience != nil || a.Issuer != "" || a.DefaultSend || a.JWKSURL != "" ||
		a.JWKSRefresh != time.Hour || a.JWKSTimeout != 5*time.Second {
		t.Fatalf("auth defaults %+v", a)
	}
	if cfg.HTTP.ReadTimeout != 30*time.Second {
		t.Fatalf("http.read_timeout defaults to %v, want 30s", cfg.HTTP.ReadTimeout)
	}
}

// TestTokenSettings: every new setting from the environment and from a file.
func TestTokenSettings(t *testing.T) {
	check := func(t *testing.T, cfg *configs.Config) {
		t.Helper()
		a := cfg.Auth
		if a.ExpRequired() || !slices.Equal(a.Audience, []string{"gw", "gw2"}) || a.Issuer != "https://idp.example" ||
			!a.DefaultSend || a.JWKSURL != "https://idp.example/certs" || a.JWKSRefresh != 10*time.Minute ||
			a.JWKSTimeout != 2*time.Second || cfg.HTTP.ReadTimeout != 7*time.Second {
			t.Fatalf("auth %+v, http %+v", a, cfg.HTTP)
		}
	}
	t.Run("Env", func(t *testing.T) {
		cfg, err := configs.Load("", []string{"GATEWAY_REQUIRE_EXP=false", "GATEWAY_AUDIENCE=gw, gw2",
			"GATEWAY_ISSUER=https://idp.example", "GATEWAY_DEFAULT_SEND=true", "GATEWAY_JWKS_URL=https://idp.example/certs",
			"GATEWAY_JWKS_REFRESH=10m", "GATEWAY_JWKS_TIMEOUT=2s", "GATEWAY_HTTP_READ_TIMEOUT=7s"})
		if err != nil {
			t.Fatal(err) // the JWKS URL alone is a way to authenticate
		}
		if cfg.Development {
			t.Fatal("development mode with a JWKS URL configured")
		}
		check(t, cfg)
	})
	t.Run("File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gateway.yaml")
		yaml := "auth:\n  require_exp: false\n  audience: [gw, gw2]\n  issuer: https://idp.example\n  default_send: true\n" +
			"  jwks_url: https://idp.example/certs\n  jwks_refresh: 10m\n  jwks_timeout: 2s\nhttp:\n  read_timeout: 7s\n"
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := configs.Load(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		check(t, cfg)
	})
	t.Run("RequireExpExplicitTrue", func(t *testing.T) {
		cfg, err := configs.Load("", []string{jwtSecret, "GATEWAY_REQUIRE_EXP=true"})
		if err != nil || !cfg.Auth.ExpRequired() {
			t.Fatalf("%v, %+v", err, cfg)
		}
	})
}

// TestTokenSettingsInvalid: each wrong setting is refused naming its key.
func TestTokenSettingsInvalid(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		key  string
	}{
		{"jwks url not http", []string{"GATEWAY_JWKS_URL=file:///etc/jwks.json"}, "auth.jwks_url"},
		{"jwks url without scheme", []string{"GATEWAY_JWKS_URL=idp.example/certs"}, "auth.jwks_url"},
		{"jwks url without host", []string{"GATEWAY_JWKS_URL=https://"}, "auth.jwks_url"},
		{"jwks refresh too short", []string{"GATEWAY_JWKS_REFRESH=10ms"}, "auth.jwks_refresh"},
		{"jwks timeout negative", []string{"GATEWAY_JWKS_TIMEOUT=-1s"}, "auth.jwks_timeout"},
		{"require exp not a bool", []string{"GATEWAY_REQUIRE_EXP=maybe"}, "auth.require_exp"},
		{"empty audience entry", []string{"GATEWAY_AUDIENCE=gw,,x"}, "auth.audience"},
		{"issuer with spaces", []string{"GATEWAY_ISSUER= https://idp.example"}, "auth.issuer"},
		{"negative read timeout", []string{"GATEWAY_HTTP_READ_TIMEOUT=-1s"}, "http.read_timeout"},
		{"read timeout not a duration", []string{"GATEWAY_HTTP_READ_TIMEOUT=30"}, "http.read_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configs.Load("", append([]string{jwtSecret}, tt.env...))
			var ke *configs.KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key {
				t.Fatalf("Load: %v, want a *KeyError naming %s", err, tt.key)
			}
		})
	}
	// Without any way to authenticate, the error mentions the JWKS URL as one.
	_, err := configs.Load("", []string{"GATEWAY_BROKER=redis"})
	var ke *configs.KeyError
	if !errors.As(err, &ke) || ke.Key != "auth.jwt_secret" || !strings.Contains(ke.Reason, "GATEWAY_JWKS_URL") {
		t.Fatalf("no auth: %v", err)
	}
}

// TestConfigured: each way to authenticate counts, the JWKS URL included.
func TestConfigured(t *testing.T) {
	for _, a := range []configs.AuthConfig{{JWTSecret: "s"}, {JWTPublicKey: "p"}, {JWKSURL: "https://idp/certs"}, {AllowAnonymous: true}} {
		if !a.Configured() {
			t.Errorf("%+v cannot authenticate", a)
		}
	}
	if (configs.AuthConfig{Audience: []string{"x"}, Issuer: "y"}).Configured() {
		t.Error("audience and issuer alone count as a way to authenticate")
	}
}
