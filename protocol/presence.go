package protocol

import "encoding/json"

// Member is one connection in a channel's presence: a member is a connection, so a user with two
// tabs is two members (and one user in PresenceStats).
type Member struct {
	User    string          `json:"user"` // "" for an anonymous connection
	Session string          `json:"session"`
	Node    string          `json:"node"`           // the node that holds the connection
	Info    json.RawMessage `json:"info,omitempty"` // what the connection's token put there, if anything
}

// PresenceStats counts a channel's members: connections, and distinct users among them (an
// anonymous connection counts as a user of its own).
type PresenceStats struct {
	Connections int `json:"connections"`
	Users       int `json:"users"`
}

// ChannelStats is a channel that has members, with its counts.
type ChannelStats struct {
	Channel string `json:"channel"`
	PresenceStats
}
