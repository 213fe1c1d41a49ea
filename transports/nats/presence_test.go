package nats_test

import (
	"net"
	"testing"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// presenceNode makes a node (not started) of the presence cluster of prefix on the server at url.
// Like a gateway node with presence channels it sets OnReap before Start, so that it takes part
// in presence from Start on (the suite may set its own OnReap after).
func presenceNode(t testing.TB, url, prefix, id string, heartbeat time.Duration) *nats.Broker {
	t.Helper()
	b, err := nats.New(nats.Config{
		URL:             url,
		Prefix:          prefix,
		Name:            id,
		ReconnectWait:   50 * time.Millisecond,
		ReconnectJitter: 50 * time.Millisecond,
		Presence:        transports.PresenceConfig{Heartbeat: heartbeat},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.OnReap(func(string, protocol.Member, bool) {})
	return b
}

// TestPresenceConformance runs the presence suite on an in-process nats-server, which the
// restart test stops and starts again on the same port: core NATS keeps nothing, the nodes hold
// every member and find each other again. Kill is Close: a node sends nothing when it closes,
// exactly as when it is SIGKILLed.
func TestPresenceConformance(t *testing.T) {
	srv := startServer(t, 0)
	port := srv.Addr().(*net.TCPAddr).Port
	url := serverURL(srv)
	t.Cleanup(func() { stopServer(srv) })
	transporttest.RunPresence(t, transporttest.PresenceFeatures{
		Kill: func(t *testing.T, node transports.Broker) { _ = node.Close() },
		RestartBroker: func(t *testing.T) {
			stopServer(srv)
			srv = startServer(t, port)
		},
	}, func(t *testing.T, prefix, nodeID string, heartbeat time.Duration) transports.Broker {
		return presenceNode(t, url, prefix, nodeID, heartbeat)
	})
}
