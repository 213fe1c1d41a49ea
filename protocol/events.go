package protocol

import (
	"encoding/json"
	"time"
)

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
	// Presence events (presence channels only), once per cluster: the first member of a channel
	// in the whole cluster arrived (channel_occupied) or the last left (channel_vacated); a member
	// (a connection) joined or left. A member_left of a node that died has Reason "reaped".
	EventChannelOccupied = "channel_occupied"
	EventChannelVacated  = "channel_vacated"
	EventMemberJoined    = "member_joined"
	EventMemberLeft      = "member_left"
)

// EventTypes are every lifecycle event type, in the order of the constants above.
var EventTypes = []string{EventConnected, EventDisconnected, EventSubscribed, EventUnsubscribed, EventNodeAlive,
	EventNodeStopped, EventChannelOccupied, EventChannelVacated, EventMemberJoined, EventMemberLeft}

// ReasonNodeLost is the Reason of a disconnected event told by another node for a session whose
// node died without a word (its presence lease ran out; events.node_lost). Node is the session's
// node, the one that died (as in the disconnected events the service SDK's Presence makes up).
const ReasonNodeLost = "node_lost"

// Event is the JSON payload of a lifecycle event (docs/services.md).
type Event struct {
	Type    string    `json:"type"`
	User    string    `json:"user"`
	Session string    `json:"session"`
	Node    string    `json:"node"`
	Channel string    `json:"channel,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
	// Name and Data are a Pusher client event's (EventPusherClientEvent): its client-* name and
	// its payload.
	Name string          `json:"name,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}
