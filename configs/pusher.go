package configs

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Defaults of the Pusher Channels protocol (docs/pusher.md): Pusher's own limits.
const (
	DefaultPusherActivityTimeout = 120 * time.Second
	DefaultPusherClientEventRate = 10       // client events per second per connection
	DefaultPusherMaxEventSize    = 10 << 10 // bytes of an event's data
	DefaultPusherMaxPresence     = 100      // members of a presence channel
	MaxPusherAppID               = 64       // characters of an app id
	pusherIDChars                = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)

// PusherConfig serves the Pusher Channels protocol (/app/{key}) and HTTP API (/apps/{id}/…) for
// the apps listed; off while there are none.
type PusherConfig struct {
	// Apps are the Pusher apps. In the environment: id:key:secret[,id:key:secret…], each app
	// with the section's client_events and webhook_url.
	Apps []PusherApp `yaml:"apps" env:"APPS"`
	// ClientEvents is client_events for the apps that do not set it (every app of
	// GATEWAY_PUSHER_APPS).
	ClientEvents bool `yaml:"client_events" env:"CLIENT_EVENTS"`
	// WebhookURL is webhook_url for the apps that do not set it.
	WebhookURL string `yaml:"webhook_url" env:"WEBHOOK_URL"`
	// ActivityTimeout is the activity_timeout told to clients: they ping after that long without
	// a frame; default 120s.
	ActivityTimeout time.Duration `yaml:"activity_timeout" env:"ACTIVITY_TIMEOUT"`
}

// PusherApp is one Pusher app. Its zero limits take the section's defaults.
type PusherApp struct {
	ID     string `yaml:"id"`
	Key    string `yaml:"key"`
	Secret string `yaml:"secret"`
	// ClientEvents lets its clients trigger client-* events on private and presence channels;
	// unset: pusher.client_events.
	ClientEvents *bool `yaml:"client_events"`
	// WebhookURL receives the app's webhooks in Pusher's format (channel_occupied,
	// channel_vacated, member_added, member_removed, client_event), signed with its secret, once
	// per cluster, batched and retried as webhooks.* sets; empty: none.
	WebhookURL string `yaml:"webhook_url"`
	// ClientEventRate is the most client events per second per connection (default 10).
	ClientEventRate int `yaml:"client_event_rate"`
	// MaxEventSize is the largest event data in bytes, client or API (default 10 KiB).
	MaxEventSize int `yaml:"max_event_size"`
	// MaxPresenceMembers is the most members a presence channel may have (default 100).
	MaxPresenceMembers int `yaml:"max_presence_members"`

	// malformed is set by UnmarshalText for an entry that is not id:key:secret; validate reports
	// it without the entry's text, which holds a secret.
	malformed int
}

// UnmarshalText reads an app of GATEWAY_PUSHER_APPS, id:key:secret.
func (a *PusherApp) UnmarshalText(b []byte) error {
	parts := strings.Split(strings.TrimSpace(string(b)), ":")
	if len(parts) != 3 {
		*a = PusherApp{malformed: len(parts)}
		return nil
	}
	*a = PusherApp{ID: parts[0], Key: parts[1], Secret: parts[2]}
	return nil
}

// Enabled reports whether the Pusher protocol is served (an app is configured).
func (p PusherConfig) Enabled() bool { return len(p.Apps) > 0 }

func (p *PusherConfig) setDefaults() {
	setDefault(&p.ActivityTimeout, DefaultPusherActivityTimeout)
	for i := range p.Apps {
		a := &p.Apps[i]
		if a.ClientEvents == nil {
			ce := p.ClientEvents
			a.ClientEvents = &ce
		}
		setDefault(&a.WebhookURL, p.WebhookURL)
		setDefault(&a.ClientEventRate, DefaultPusherClientEventRate)
		setDefault(&a.MaxEventSize, DefaultPusherMaxEventSize)
		setDefault(&a.MaxPresenceMembers, DefaultPusherMaxPresence)
	}
}

// validate checks every app; a reason names the app by its index and id.
func (p *PusherConfig) validate(v *validator) {
	ids, keys := map[string]bool{}, map[string]bool{}
	for i, a := range p.Apps {
		app := fmt.Sprintf("apps[%d] (id %q)", i, a.ID)
		v.check(&p.Apps, a.malformed == 0, "apps[%d] is not id:key:secret (%d parts separated by ':')", i, a.malformed)
		v.check(&p.Apps, a.ID != "" && len(a.ID) <= MaxPusherAppID && strings.Trim(a.ID, pusherIDChars) == "",
			"%s: id must be 1 to %d of [A-Za-z0-9_.-]", app, MaxPusherAppID)
		v.check(&p.Apps, a.Key != "" && len(a.Key) <= 128 && strings.Trim(a.Key, pusherIDChars) == "",
			"%s: key must be 1 to 128 of [A-Za-z0-9_.-]", app)
		v.check(&p.Apps, len(a.Secret) >= 16, "%s: secret must be at least 16 bytes", app)
		v.check(&p.Apps, !ids[a.ID], "%s: id given twice", app)
		v.check(&p.Apps, !keys[a.Key], "%s: key given twice", app)
		ids[a.ID], keys[a.Key] = true, true
		if a.WebhookURL != "" {
			u, err := url.Parse(a.WebhookURL)
			v.check(&p.Apps, err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "",
				"%s: webhook_url %q is not an http:// or https:// URL", app, a.WebhookURL)
			v.check(&p.Apps, !v.c.Events.Disabled, "%s: webhook_url needs lifecycle events (%s is true)", app, v.key(&v.c.Events.Disabled))
		}
		v.check(&p.Apps, a.ClientEventRate >= 1, "%s: client_event_rate must be positive", app)
		v.check(&p.Apps, a.MaxEventSize >= 1 && a.MaxEventSize <= 1<<20, "%s: max_event_size must be between 1 and 1048576", app)
		v.check(&p.Apps, a.MaxPresenceMembers >= 1 && a.MaxPresenceMembers <= 1000, "%s: max_presence_members must be between 1 and 1000", app)
	}
	v.check(&p.ActivityTimeout, p.ActivityTimeout >= time.Second, "must be at least 1s")
}
