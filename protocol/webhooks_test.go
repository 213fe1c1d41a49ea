package protocol

import (
	"errors"
	"testing"
	"time"
)

// TestVerifyWebhook: a signature made by WebhookSignatureValue verifies with the same secret and
// body within the tolerance; another secret, another body, an old timestamp or a malformed
// header are refused with their own error; a second v1 (a secret being rotated) may match.
func TestVerifyWebhook(t *testing.T) {
	secret, body := []byte("secret-0123456789abcdef"), []byte(`{"id":"b","events":[]}`)
	now := time.Unix(1_800_000_000, 0)
	h := WebhookSignatureValue(secret, now, body)
	cases := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"good", secret, h, body, now.Add(time.Minute), nil},
		{"other secret", []byte("another-secret-0123456"), h, body, now, ErrWebhookSignature},
		{"other body", secret, h, []byte(`{"id":"c","events":[]}`), now, ErrWebhookSignature},
		{"too old", secret, h, body, now.Add(6 * time.Minute), ErrWebhookStale},
		{"from the future", secret, h, body, now.Add(-6 * time.Minute), ErrWebhookStale},
		{"no t", secret, "v1=abc", body, now, ErrWebhookHeader},
		{"no v1", secret, "t=1800000000", body, now, ErrWebhookHeader},
		{"garbage", secret, "hello", body, now, ErrWebhookHeader},
		{"rotation", secret, h[:len("t=1800000000")] + ",v1=00ff," + h[len("t=1800000000,"):], body, now, nil},
	}
	for _, c := range cases {
		if err := VerifyWebhook(c.secret, c.header, c.body, c.at, 5*time.Minute); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := VerifyWebhook(secret, h, body, now.Add(time.Hour), 0); err != nil {
		t.Errorf("tolerance 0 checks no time: %v", err)
	}
}
