package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Webhooks (docs/hooks.md): a node POSTs batches of lifecycle events to webhooks.url, signed
// with webhooks.secret.

// WebhookSignatureHeader carries a webhook's signature: "t=<unix seconds>,v1=<hex>", where v1 is
// HMAC-SHA256 with the secret of "<t>.<body>" (WebhookSignature).
const WebhookSignatureHeader = "X-Gateway-Signature"

// WebhookBatchHeader carries the batch id (the body's "id" too), for a receiver that logs it
// before it reads the body.
const WebhookBatchHeader = "X-Gateway-Batch"

// WebhookBatch is the JSON body of a webhook POST.
type WebhookBatch struct {
	ID     string         `json:"id"` // the batch's id: the same when a batch is sent again
	Events []WebhookEvent `json:"events"`
}

// WebhookEvent is one event of a batch: the lifecycle event's fields and its id, the UUID of the
// broker message it came in (the same if it is ever delivered twice: deduplicate by it).
type WebhookEvent struct {
	ID string `json:"id"`
	Event
}

// WebhookSignature is the hex HMAC-SHA256 with secret of "<t>.<body>", t in unix seconds.
func WebhookSignature(secret []byte, t int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(strconv.FormatInt(t, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// WebhookSignatureValue is the value of WebhookSignatureHeader for body signed at t.
func WebhookSignatureValue(secret []byte, t time.Time, body []byte) string {
	ts := t.Unix()
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + WebhookSignature(secret, ts, body)
}

// Errors of VerifyWebhook.
var (
	ErrWebhookSignature = errors.New("webhook: signature does not match")
	ErrWebhookStale     = errors.New("webhook: signature timestamp outside the tolerance")
	ErrWebhookHeader    = errors.New("webhook: malformed " + WebhookSignatureHeader + " header")
)

// VerifyWebhook checks header (the value of WebhookSignatureHeader) against body: a v1
// signature made with secret, at a time within tolerance of now (0: the time is not checked).
// Several v1 values are accepted (one must match), so a sender can sign with two secrets while
// they rotate.
func VerifyWebhook(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts int64 = -1
	var sigs []string
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrWebhookHeader
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return ErrWebhookHeader
			}
			ts = n
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts < 0 || len(sigs) == 0 {
		return ErrWebhookHeader
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
			return ErrWebhookStale
		}
	}
	want := []byte(WebhookSignature(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrWebhookSignature
}
