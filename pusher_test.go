package gateway

import (
	"strings"
	"testing"

	"github.com/wsgateway/gateway/configs"
)

// TestPusherNeedsPresence: Pusher apps on a broker that keeps no presence stop the node (and
// -check-config) naming pusher.apps; on one that keeps it they pass.
func TestPusherNeedsPresence(t *testing.T) {
	cfg, err := configs.Load("", []string{"GATEWAY_JWT_SECRET=a-secret-of-sixteen-bytes", "GATEWAY_PUSHER_APPS=a:k:secret-of-app-a-0123"})
	if err != nil {
		t.Fatal(err)
	}
	err = checkPresence(cfg, false)
	if err == nil || !strings.Contains(err.Error(), "pusher.apps (GATEWAY_PUSHER_APPS)") {
		t.Fatalf("no presence: %v", err)
	}
	if err := checkPresence(cfg, true); err != nil {
		t.Fatalf("with presence: %v", err)
	}
}
