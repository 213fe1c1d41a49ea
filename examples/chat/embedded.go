package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/wsgateway/gateway"
	"github.com/wsgateway/gateway/configs"
)

// embeddedNodeID is the node id of the embedded node, as the page shows it.
const embeddedNodeID = "chat-embedded"

// newEmbedded builds the gateway node that runs in the chat server's own process when no -nodes
// are given: on the embedded memory broker, checking tokens with secret (the one /token signs
// with), with presence and joins and leaves on the chat rooms. Its /ws is served on the chat
// server's own address, so the page's origin is the node's host and no allowed origin needs
// setting. It is configured here alone: GATEWAY_* variables of the environment do not apply to it
// (they are for the nodes of a cluster). New starts nothing; the caller Starts and Closes it.
func newEmbedded(secret string, log *slog.Logger) (*gateway.Gateway, error) {
	cfg, err := configs.Load("", []string{
		"GATEWAY_BROKER=" + configs.BrokerMemory,
		"GATEWAY_NODE_ID=" + embeddedNodeID,
		"GATEWAY_JWT_SECRET=" + secret,
		"GATEWAY_PRESENCE_CHANNELS=chat:*",
		"GATEWAY_PRESENCE_JOIN_LEAVE=chat:*",
		"GATEWAY_DRAIN_PERIOD=1s", // Ctrl-C stops the demo at once
	})
	if err != nil {
		return nil, fmt.Errorf("the embedded gateway node: %w", err)
	}
	return gateway.New(cfg, gateway.WithLogger(log))
}

// madeUpSecret is a token secret for the embedded node when GATEWAY_JWT_SECRET is not set: the
// chat server is the only one signing and checking its tokens.
func madeUpSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sameHostNode is the WebSocket URL of the embedded node as the page reached the chat server.
func sameHostNode(r *http.Request) string {
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + r.Host + "/ws"
}
