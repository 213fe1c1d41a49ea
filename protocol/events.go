package protocol

import "time"

// Lifecycle event types (Event.Type), published on TopicEvents.
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
	EventSubscribed   = "subscribed"
	EventUnsubscribed = "unsubscribed"
	// EventNodeAlive is the node's heartbeat: a service that stops hearing it knows the node died
	// and that its sessions are gone, though no disconnected event came (see the SDK's Presence).
	EventNodeAlive = "node_alive"
	// EventNodeStopped says the node shut down cleanly (after its sessions' disconnected events).
	EventNodeStopped = "node_stopped"
)

// Event is the JSON payload of a lifecycle event (docs/services.md).
type Event struct {
	Type    string    `json:"type"`
	User    string    `json:"user"`
	Session string    `json:"session"`
	Node    string    `json:"node"`
	Channel string    `json:"channel,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}
