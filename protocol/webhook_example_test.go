package protocol_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// A webhook receiver checks the X-Gateway-Signature of each POST before it trusts the batch,
// and stores each event once by its id (docs/hooks.md, Webhooks). The same check verifies the
// requests of hooks called over HTTP, signed with hooks.secret.
func ExampleVerifyWebhook() {
	secret := []byte("the-webhooks-secret-0123456789") // webhooks.secret, the same as the nodes'
	seen := map[string]bool{}
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		err = protocol.VerifyWebhook(secret, r.Header.Get(protocol.WebhookSignatureHeader), body, time.Now(), 5*time.Minute)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var batch protocol.WebhookBatch
		if err := json.Unmarshal(body, &batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, ev := range batch.Events {
			if !seen[ev.ID] { // an event may come twice: keep it once, by its id
				seen[ev.ID] = true
				fmt.Println(ev.Type, ev.User, ev.Channel)
			}
		}
		w.WriteHeader(http.StatusNoContent) // any 2xx: the batch is stored
	})

	// A batch as a node POSTs it, signed with the secret; then the same body unsigned.
	body := `{"id":"b1","events":[{"id":"e1","type":"subscribed","user":"alice","session":"s1","node":"n1","channel":"room:1","at":"2026-12-06T14:00:00Z"}]}`
	for _, sig := range []string{protocol.WebhookSignatureValue(secret, time.Now(), []byte(body)), ""} {
		req := httptest.NewRequest("POST", "/gateway-events", strings.NewReader(body))
		req.Header.Set(protocol.WebhookSignatureHeader, sig)
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// subscribed alice room:1
	// 204
	// 401
}
