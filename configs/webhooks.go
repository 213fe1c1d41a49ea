package configs

import (
	"net/url"
	"slices"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// Defaults of the webhooks (docs/hooks.md).
const (
	DefaultWebhooksBatch        = 10
	DefaultWebhooksBatchWait    = 500 * time.Millisecond
	DefaultWebhooksTimeout      = 10 * time.Second
	DefaultWebhooksRetryInitial = 500 * time.Millisecond
	DefaultWebhooksRetryMax     = 30 * time.Second
	// DefaultWebhooksRetryBudget is long enough that a receiver down for a few minutes gets
	// every event once it is back; after it, a batch's events go to the poison topic.
	DefaultWebhooksRetryBudget = 10 * time.Minute
	// MinWebhooksSecret is the shortest webhooks.secret.
	MinWebhooksSecret = 16
)

// DefaultWebhooksEvents are the event types POSTed by default: every one but node_alive (a
// heartbeat every events.heartbeat from every node).
func DefaultWebhooksEvents() []string {
	return slices.DeleteFunc(slices.Clone(protocol.EventTypes), func(t string) bool { return t == protocol.EventNodeAlive })
}

// WebhooksConfig sets the webhooks: the lifecycle events POSTed, in signed batches, to a URL of
// the backend's, once per cluster (docs/hooks.md). Off while URL is empty.
type WebhooksConfig struct {
	URL    string `yaml:"url" env:"URL"`       // http:// or https:// URL the batches are POSTed to; empty: webhooks off
	Secret string `yaml:"secret" env:"SECRET"` // HMAC-SHA256 key of the signature header; required with url
	// Events are the event types POSTed (the others are consumed and dropped); default every
	// type but node_alive.
	Events []string `yaml:"events" env:"EVENTS"`
	// Batch is the most events one POST carries, and how many events a node holds unacknowledged
	// at once (one group subscription each); default 10. A node on kafka uses 1 (one partition).
	Batch     int           `yaml:"batch" env:"BATCH"`
	BatchWait time.Duration `yaml:"batch_wait" env:"BATCH_WAIT"` // longest a batch waits to fill once it has an event; default 500ms
	Timeout   time.Duration `yaml:"timeout" env:"TIMEOUT"`       // longest one POST may take; default 10s
	// RetryInitial and RetryMax bound the backoff between the POSTs of a batch that failed
	// (doubling, with jitter); defaults 500ms and 30s.
	RetryInitial time.Duration `yaml:"retry_initial" env:"RETRY_INITIAL"`
	RetryMax     time.Duration `yaml:"retry_max" env:"RETRY_MAX"`
	// RetryBudget is how long a batch is tried before its events go to router.poison_topic;
	// default 10m.
	RetryBudget time.Duration `yaml:"retry_budget" env:"RETRY_BUDGET"`
}

// Enabled reports whether webhooks are on (a URL is set).
func (w WebhooksConfig) Enabled() bool { return w.URL != "" }

func (w *WebhooksConfig) setDefaults() {
	if w.Events == nil {
		w.Events = DefaultWebhooksEvents()
	}
	setDefault(&w.Batch, DefaultWebhooksBatch)
	setDefault(&w.BatchWait, DefaultWebhooksBatchWait)
	setDefault(&w.Timeout, DefaultWebhooksTimeout)
	setDefault(&w.RetryInitial, DefaultWebhooksRetryInitial)
	setDefault(&w.RetryMax, DefaultWebhooksRetryMax)
	setDefault(&w.RetryBudget, DefaultWebhooksRetryBudget)
}

// validate checks the webhooks' settings; the URL's need for lifecycle events too.
func (w *WebhooksConfig) validate(v *validator, eventsDisabled bool) {
	if w.URL != "" {
		u, err := url.Parse(w.URL)
		v.check(&w.URL, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "",
			"%q is not an http:// or https:// URL", w.URL)
		v.check(&w.URL, !eventsDisabled, "needs lifecycle events (%s is true)", v.key(&v.c.Events.Disabled))
		v.check(&w.Secret, len(w.Secret) >= MinWebhooksSecret, "must be at least %d bytes when %s is set", MinWebhooksSecret, v.key(&w.URL))
	}
	for _, e := range w.Events {
		v.check(&w.Events, slices.Contains(protocol.EventTypes, e), "%q is not an event type (%v)", e, protocol.EventTypes)
	}
	v.check(&w.Batch, w.Batch >= 1 && w.Batch <= 1000, "must be between 1 and 1000")
	v.check(&w.BatchWait, w.BatchWait >= 0, "must not be negative")
	v.check(&w.Timeout, w.Timeout >= time.Millisecond, "must be positive")
	v.check(&w.RetryInitial, w.RetryInitial >= time.Millisecond, "must be positive")
	v.check(&w.RetryMax, w.RetryMax >= w.RetryInitial, "must be at least %s", v.key(&w.RetryInitial))
	v.check(&w.RetryBudget, w.RetryBudget >= time.Millisecond, "must be positive")
}
