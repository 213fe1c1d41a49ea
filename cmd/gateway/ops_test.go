package main_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/testcert"
	"github.com/wsgateway/gateway/internal/wstest"
)

// TestBinaryServerSettings: bad TLS, timeout and admin settings exit 2 with one line naming the
// key and its variable; good ones serve https with pprof on the admin listener only.
func TestBinaryServerSettings(t *testing.T) {
	bin := build(t)
	cert := testcert.New(t)
	other := testcert.New(t)
	secret := "GATEWAY_JWT_SECRET=0123456789abcdef0123"

	t.Run("BadSettingsExit2NamingTheKey", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.crt")
		for _, tt := range []struct {
			vars      []string
			key, name string
		}{
			{[]string{"GATEWAY_TLS_CERT_FILE=" + cert.CertFile}, "tls.key_file", "GATEWAY_TLS_KEY_FILE"},
			{[]string{"GATEWAY_TLS_CERT_FILE=" + missing, "GATEWAY_TLS_KEY_FILE=" + cert.KeyFile}, "tls.cert_file", "GATEWAY_TLS_CERT_FILE"},
			{[]string{"GATEWAY_TLS_CERT_FILE=" + cert.CertFile, "GATEWAY_TLS_KEY_FILE=" + other.KeyFile}, "tls.key_file", "GATEWAY_TLS_KEY_FILE"},
			{[]string{"GATEWAY_HTTP_IDLE_TIMEOUT=soon"}, "http.idle_timeout", "GATEWAY_HTTP_IDLE_TIMEOUT"},
			{[]string{"GATEWAY_ADDR=:18080", "GATEWAY_ADMIN_ADDR=:18080"}, "admin.addr", "GATEWAY_ADMIN_ADDR"},
		} {
			for _, args := range [][]string{nil, {"-check-config"}} {
				cmd := exec.Command(bin, args...)
				cmd.Env = environ(append([]string{secret}, tt.vars...)...)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				ee, ok := err.(*exec.ExitError)
				if !ok || ee.ExitCode() != 2 {
					t.Fatalf("%v %v: exit %v, want 2\n%s", args, tt.vars, err, stderr.String())
				}
				line := strings.TrimSpace(stderr.String())
				if strings.Contains(line, "\n") || !strings.Contains(line, tt.key) || !strings.Contains(line, tt.name) {
					t.Fatalf("%v %v: stderr %q, want one line naming %s (%s)", args, tt.vars, line, tt.key, tt.name)
				}
			}
		}
	})

	t.Run("TLSAndAdmin", func(t *testing.T) {
		addr, admin := freeAddr(t), freeAddr(t)
		cmd, logs, exited := start(t, bin, secret, "GATEWAY_ADDR="+addr, "GATEWAY_ADMIN_ADDR="+admin, "GATEWAY_DRAIN_PERIOD=100ms",
			"GATEWAY_TLS_CERT_FILE="+cert.CertFile, "GATEWAY_TLS_KEY_FILE="+cert.KeyFile)
		client := &http.Client{Timeout: wstest.Timeout, Transport: &http.Transport{TLSClientConfig: cert.ClientConfig()}}
		status := func(url string) (int, error) {
			resp, err := client.Get(url)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode, nil
		}
		wstest.WaitFor(t, func() error {
			if s, err := status("https://" + addr + "/readyz"); err != nil || s != 200 {
				return fmt.Errorf("https readyz: %d %v", s, err)
			}
			return nil
		})
		if s, err := status("https://" + addr + "/healthz"); err != nil || s != 200 {
			t.Fatalf("https /healthz: %d %v", s, err)
		}
		if s, err := status("http://" + admin + "/debug/pprof/"); err != nil || s != 200 {
			t.Fatalf("admin /debug/pprof/: %d %v", s, err)
		}
		if s, err := status("https://" + addr + "/debug/pprof/"); err != nil || s != 404 {
			t.Fatalf("main /debug/pprof/: %d %v, want 404", s, err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
			}
		case <-time.After(wstest.Timeout):
			t.Fatal("the node did not exit after SIGTERM")
		}
		if !strings.Contains(logs.String(), "tls=true") {
			t.Errorf("the log does not say the listener serves TLS:\n%s", logs.String())
		}
	})
}
