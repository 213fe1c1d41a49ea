package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPusherAppsFromEnvironment(t *testing.T) {
	c, err := Load("", []string{"GATEWAY_PUSHER_APPS=app1:key1:secret-one-0123456, app2:key2:secret-two-0123456",
		"GATEWAY_PUSHER_CLIENT_EVENTS=true"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Pusher.Enabled() || len(c.Pusher.Apps) != 2 {
		t.Fatalf("apps %+v", c.Pusher.Apps)
	}
	a := c.Pusher.Apps[1]
	if a.ID != "app2" || a.Key != "key2" || a.Secret != "secret-two-0123456" || a.ClientEvents == nil || !*a.ClientEvents ||
		a.ClientEventRate != 10 || a.MaxEventSize != 10240 || a.MaxPresenceMembers != 100 {
		t.Fatalf("app %+v", a)
	}
	if c.Pusher.ActivityTimeout.Seconds() != 120 {
		t.Fatalf("activity_timeout %s", c.Pusher.ActivityTimeout)
	}
}

func TestPusherAppsFromYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := `pusher:
  client_events: true
  apps:
    - id: app1
      key: key1
      secret: secret-one-0123456
      client_events: false
      client_event_rate: 5
      webhook_url: https://example.com/pusher
    - id: app2
      key: key2
      secret: secret-two-0123456
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Pusher.Apps[0], c.Pusher.Apps[1]
	if *a.ClientEvents || a.ClientEventRate != 5 || a.WebhookURL != "https://example.com/pusher" || !*b.ClientEvents {
		t.Fatalf("apps %+v %+v", a, b)
	}
}

func TestPusherValidation(t *testing.T) {
	for apps, want := range map[string]string{
		"app1:key1":                     "is not id:key:secret",
		"app1:key1:short":               `apps[0] (id "app1"): secret must be at least 16 bytes`,
		"app:1:key1:secret-one-0123456": "is not id:key:secret",
		"ap p:key1:secret-one-0123456":  "id must be",
		":key1:secret-one-0123456":      "id must be",
		"app1:k/y:secret-one-0123456":   "key must be",
		"app1:key1:secret-one-0123456,app1:key2:secret-two-0123456": `apps[1] (id "app1"): id given twice`,
		"app1:key1:secret-one-0123456,app2:key1:secret-two-0123456": `apps[1] (id "app2"): key given twice`,
	} {
		_, err := Load("", []string{"GATEWAY_PUSHER_APPS=" + apps})
		if err == nil || !strings.Contains(err.Error(), "pusher.apps (GATEWAY_PUSHER_APPS)") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to name pusher.apps and say %q", apps, err, want)
		}
	}
	// A malformed entry's text (it holds a secret) is not in the error.
	if _, err := Load("", []string{"GATEWAY_PUSHER_APPS=a:k:secret-one-0123456:extra"}); err == nil || strings.Contains(err.Error(), "secret-one") {
		t.Errorf("the malformed entry's secret is in the error: %v", err)
	}
	// Pusher-format webhooks are read from the lifecycle events.
	_, err := Load("", []string{"GATEWAY_PUSHER_APPS=app1:key1:secret-one-0123456", "GATEWAY_PUSHER_WEBHOOK_URL=http://hooks.example/p",
		"GATEWAY_EVENTS_DISABLED=true"})
	if err == nil || !strings.Contains(err.Error(), "webhook_url needs lifecycle events") {
		t.Errorf("webhook_url without events: %v", err)
	}
	_, err = Load("", []string{"GATEWAY_PUSHER_ACTIVITY_TIMEOUT=10ms"})
	if err == nil || !strings.Contains(err.Error(), "pusher.activity_timeout") {
		t.Errorf("activity_timeout 10ms: %v", err)
	}
}
