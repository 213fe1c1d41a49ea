package configs

import (
	"slices"
	"testing"
	"time"
)

// TestWebhooksDefaults: webhooks are off without a URL; the defaults POST every event type but
// node_alive, 10 per batch, and try a batch for 10 minutes.
func TestWebhooksDefaults(t *testing.T) {
	cfg, err := Load("", []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Webhooks
	if w.Enabled() || w.Batch != 10 || w.BatchWait != 500*time.Millisecond || w.Timeout != 10*time.Second ||
		w.RetryInitial != 500*time.Millisecond || w.RetryMax != 30*time.Second || w.RetryBudget != 10*time.Minute {
		t.Errorf("defaults %+v", w)
	}
	if slices.Contains(w.Events, "node_alive") || len(w.Events) != 9 || !slices.Contains(w.Events, "disconnected") {
		t.Errorf("default events %v", w.Events)
	}
	cfg, err = Load("", []string{secret, "GATEWAY_WEBHOOKS_URL=http://127.0.0.1:9/h", "GATEWAY_WEBHOOKS_SECRET=0123456789abcdef",
		"GATEWAY_WEBHOOKS_EVENTS=member_left, node_alive"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Webhooks.Enabled() || !slices.Equal(cfg.Webhooks.Events, []string{"member_left", "node_alive"}) {
		t.Errorf("webhooks %+v", cfg.Webhooks)
	}
}
