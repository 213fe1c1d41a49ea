package gateway

import (
	"crypto/x509"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/testcert"
)

// TestCertificateReload: a renewed certificate written over the files is served from the next
// check on; files that do not load leave the previous certificate in service.
func TestCertificateReload(t *testing.T) {
	first := testcert.New(t)
	c, err := loadCertificate(first.CertFile, first.KeyFile, 0, slog.New(slog.DiscardHandler)) // check on every handshake
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		cert, err := c.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.String()
	}
	if got := serial(); got != first.Serial.String() {
		t.Fatalf("serving %s, want %s", got, first.Serial)
	}

	// replace writes the files of src over the served ones, with a later modification time.
	at := time.Now()
	replace := func(certPEM, keyPEM []byte) {
		t.Helper()
		at = at.Add(time.Second)
		for f, b := range map[string][]byte{first.CertFile: certPEM, first.KeyFile: keyPEM} {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(f, at, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	renewed := testcert.New(t)
	replace(read(renewed.CertFile), read(renewed.KeyFile))
	if got := serial(); got != renewed.Serial.String() {
		t.Fatalf("after the renewal serving %s, want %s", got, renewed.Serial)
	}

	// Half a renewal: a new certificate with the old key. The renewed one stays in service.
	third := testcert.New(t)
	replace(read(third.CertFile), read(renewed.KeyFile))
	if got := serial(); got != renewed.Serial.String() {
		t.Fatalf("with a mismatched pair serving %s, want the previous %s", got, renewed.Serial)
	}
	// The key arrives: the third certificate is served.
	replace(read(third.CertFile), read(third.KeyFile))
	if got := serial(); got != third.Serial.String() {
		t.Fatalf("after the key arrived serving %s, want %s", got, third.Serial)
	}

	// Files gone: still the last good certificate.
	if err := os.Remove(first.CertFile); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != third.Serial.String() {
		t.Fatalf("with the file gone serving %s, want %s", got, third.Serial)
	}
}

// TestCertificateCheckInterval: within the interval the files are not looked at.
func TestCertificateCheckInterval(t *testing.T) {
	first := testcert.New(t)
	c, err := loadCertificate(first.CertFile, first.KeyFile, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := c.get(nil)
	if err := os.Remove(first.CertFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(first.CertFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	after, _ := c.get(nil)
	if after != before {
		t.Fatal("the certificate changed within the check interval")
	}
}

// TestRedactURLs: broker URLs are logged and put in errors without their passwords.
func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://alice:s3cret@a:4222, nats://b:4222,bob:hunter2@c:4222")
	if strings.Contains(got, "s3cret") || strings.Contains(got, "hunter2") || !strings.Contains(got, "nats://b:4222") || !strings.Contains(got, "@c:4222") {
		t.Fatalf("redactURLs: %q", got)
	}
}
