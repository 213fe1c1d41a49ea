package configs_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsgateway/gateway/configs"
	"github.com/wsgateway/gateway/internal/testcert"
)

const jwtSecret = "GATEWAY_JWT_SECRET=0123456789abcdef"

func TestServerDefaults(t *testing.T) {
	cfg, err := configs.Load("", []string{jwtSecret})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.ReadHeaderTimeout != 10*time.Second || cfg.HTTP.IdleTimeout != 120*time.Second {
		t.Errorf("http timeouts %v, %v; want 10s, 120s", cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.IdleTimeout)
	}
	if cfg.Admin.Addr != "" {
		t.Errorf("admin.addr defaults to %q, want empty (off)", cfg.Admin.Addr)
	}
	if cfg.TLS != (configs.TLSConfig{}) {
		t.Errorf("tls defaults to %+v, want none", cfg.TLS)
	}
}

func TestServerSettings(t *testing.T) {
	cert := testcert.New(t)
	t.Run("Env", func(t *testing.T) {
		cfg, err := configs.Load("", []string{jwtSecret,
			"GATEWAY_TLS_CERT_FILE=" + cert.CertFile, "GATEWAY_TLS_KEY_FILE=" + cert.KeyFile,
			"GATEWAY_HTTP_READ_HEADER_TIMEOUT=3s", "GATEWAY_HTTP_IDLE_TIMEOUT=1m", "GATEWAY_ADMIN_ADDR=127.0.0.1:6060"})
		if err != nil {
			t.Fatal(err)
		}
		want := configs.TLSConfig{CertFile: cert.CertFile, KeyFile: cert.KeyFile}
		if cfg.TLS != want || cfg.HTTP.ReadHeaderTimeout != 3*time.Second || cfg.HTTP.IdleTimeout != time.Minute || cfg.Admin.Addr != "127.0.0.1:6060" {
			t.Fatalf("got tls %+v, http %+v, admin %+v", cfg.TLS, cfg.HTTP, cfg.Admin)
		}
	})
	t.Run("File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gateway.yaml")
		yaml := "tls:\n  cert_file: " + cert.CertFile + "\n  key_file: " + cert.KeyFile +
			"\nhttp:\n  read_header_timeout: 2s\n  idle_timeout: 30s\nadmin:\n  addr: \"127.0.0.1:6061\"\n"
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := configs.Load(path, []string{jwtSecret})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLS.CertFile != cert.CertFile || cfg.HTTP.ReadHeaderTimeout != 2*time.Second || cfg.HTTP.IdleTimeout != 30*time.Second || cfg.Admin.Addr != "127.0.0.1:6061" {
			t.Fatalf("got tls %+v, http %+v, admin %+v", cfg.TLS, cfg.HTTP, cfg.Admin)
		}
	})
}

// TestServerSettingsInvalid: every wrong server setting is refused naming its key and variable.
func TestServerSettingsInvalid(t *testing.T) {
	cert := testcert.New(t)
	other := testcert.New(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	pair := func(c, k string) []string {
		return []string{"GATEWAY_TLS_CERT_FILE=" + c, "GATEWAY_TLS_KEY_FILE=" + k}
	}
	tests := []struct {
		name string
		env  []string
		key  string
	}{
		{"cert without key", []string{"GATEWAY_TLS_CERT_FILE=" + cert.CertFile}, "tls.key_file"},
		{"key without cert", []string{"GATEWAY_TLS_KEY_FILE=" + cert.KeyFile}, "tls.cert_file"},
		{"cert missing", pair(missing, cert.KeyFile), "tls.cert_file"},
		{"key missing", pair(cert.CertFile, missing), "tls.key_file"},
		{"cert not PEM", pair(garbage, cert.KeyFile), "tls.cert_file"},
		{"key not PEM", pair(cert.CertFile, garbage), "tls.key_file"},
		{"key of another certificate", pair(cert.CertFile, other.KeyFile), "tls.key_file"},
		{"key given as certificate", pair(cert.KeyFile, cert.KeyFile), "tls.cert_file"},
		{"negative read header timeout", []string{"GATEWAY_HTTP_READ_HEADER_TIMEOUT=-1s"}, "http.read_header_timeout"},
		{"read header timeout not a duration", []string{"GATEWAY_HTTP_READ_HEADER_TIMEOUT=10"}, "http.read_header_timeout"},
		{"negative idle timeout", []string{"GATEWAY_HTTP_IDLE_TIMEOUT=-5s"}, "http.idle_timeout"},
		{"idle timeout not a duration", []string{"GATEWAY_HTTP_IDLE_TIMEOUT=abc"}, "http.idle_timeout"},
		{"admin not host:port", []string{"GATEWAY_ADMIN_ADDR=localhost"}, "admin.addr"},
		{"admin on the main port", []string{"GATEWAY_ADDR=:8080", "GATEWAY_ADMIN_ADDR=:8080"}, "admin.addr"},
		{"admin on the main port, one host", []string{"GATEWAY_ADDR=:8080", "GATEWAY_ADMIN_ADDR=127.0.0.1:8080"}, "admin.addr"},
		{"admin on the main port by name", []string{"GATEWAY_ADDR=127.0.0.1:80", "GATEWAY_ADMIN_ADDR=127.0.0.1:http"}, "admin.addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := configs.Load("", append([]string{jwtSecret}, tt.env...))
			var ke *configs.KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("Load: %v, want a *KeyError naming %s", err, tt.key)
			}
			if ke.Key != tt.key {
				t.Fatalf("error names %s (%v), want %s", ke.Key, err, tt.key)
			}
		})
	}
	// Not conflicts: a port of its own, or both on random ports.
	for _, env := range [][]string{
		{"GATEWAY_ADDR=:8080", "GATEWAY_ADMIN_ADDR=127.0.0.1:6060"},
		{"GATEWAY_ADDR=10.0.0.1:8080", "GATEWAY_ADMIN_ADDR=127.0.0.1:8080"},
		{"GATEWAY_ADDR=127.0.0.1:0", "GATEWAY_ADMIN_ADDR=127.0.0.1:0"},
	} {
		if _, err := configs.Load("", append([]string{jwtSecret}, env...)); err != nil {
			t.Errorf("%v: %v", env, err)
		}
	}
}
