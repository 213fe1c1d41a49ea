package main_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wsgateway/gateway/internal/auth"
)

// TestTokenFlag: -token USER prints a token the node accepts (exp set, as auth.require_exp
// wants) that may subscribe, publish and send anywhere.
func TestTokenFlag(t *testing.T) {
	bin := build(t)
	const secret = "token-flag-secret-0123456789"
	cmd := exec.Command(bin, "-token", "alice")
	cmd.Env = environ("GATEWAY_JWT_SECRET=" + secret)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("-token: %v", err)
	}
	v, err := auth.NewVerifier([]byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the printed token: %v", err)
	}
	if c.User != "alice" || !c.Send || !c.HasSend || !auth.Match(c.Channels, "any") || !auth.Match(c.Publish, "any") {
		t.Fatalf("claims %+v", c)
	}
	if left := time.Until(c.ExpiresAt); left < 23*time.Hour || left > 25*time.Hour {
		t.Fatalf("expires in %v, want 24h", left)
	}
}
