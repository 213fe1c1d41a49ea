package protocol

import (
	"crypto/sha256"
	"strings"

	"github.com/google/uuid"
)

// DefaultTopicPrefix is the prefix of every broker name (subject, stream, key, topic) when none is
// configured: a gateway and a service that both keep the default meet on the same topics.
const DefaultTopicPrefix = "ws"

// Logical topics. A broker maps each to a broker name under its prefix (the broker packages use transports.SafeName).
const (
	// TopicInbound carries what clients publish and send, for services (competing consumers).
	TopicInbound = "inbound"
	// TopicDirect carries messages addressed to one session or to every connection; every node
	// reads all of it and keeps what concerns its own sessions.
	TopicDirect = "direct"
	// TopicEvents carries connection lifecycle events for services.
	TopicEvents = "events"

	channelTopicPrefix = "ch."
)

// Metadata keys of the messages the gateway exchanges with services. They are part of the
// documented contract for services (docs/services.md).
const (
	MetaChannel  = "channel"   // channel of a channel message; "$user:<id>" for a user's channel
	MetaUser     = "user"      // user id of the client that sent it; target user of a user message
	MetaSession  = "session"   // session id of the client that sent it; target of a session message
	MetaNode     = "node"      // node that accepted it from a client
	MetaMsgID    = "msg_id"    // idempotency key
	MetaKind     = "kind"      // "publish", "send", "api", "service" (the Go SDK), "event", "join" or "leave"
	MetaTarget   = "target"    // on TopicDirect: "session" or "all"
	MetaPosition = "position"  // set by brokers with history on consumed channel messages
	MetaSentAt   = "sent_at"   // unix nanoseconds when the gateway or SDK published it (latency metric)
	MetaStoredAt = "stored_at" // unix milliseconds when the broker stored it, on replayed channel messages (history age)
	MetaEncoding = "encoding"  // "base64" when the payload is not JSON (informational)
	MetaSig      = "signature" // reserved for signed service messages
	// MetaIdempotent is "1" when the message's UUID derives from a client's or service's msg_id,
	// so the same msg_id through two nodes yields the same UUID and nodes deliver it once.
	MetaIdempotent = "idempotent"
)

// UserChannelPrefix starts the internal channel name of a user's personal channel ($user).
const UserChannelPrefix = "$user:"

// UserChannelFor is the internal channel name of the personal channel of user id (a client
// calls it UserChannel, "$user").
func UserChannelFor(user string) string { return UserChannelPrefix + user }

// ChannelTopic is the logical topic of a channel (also of a user's channel, see UserChannelFor).
func ChannelTopic(channel string) string { return channelTopicPrefix + channel }

// ChannelOf returns the channel of a logical channel topic.
func ChannelOf(topic string) (string, bool) {
	return strings.CutPrefix(topic, channelTopicPrefix)
}

// IsChannelTopic reports whether topic is a channel topic (the ones that keep history).
func IsChannelTopic(topic string) bool { return strings.HasPrefix(topic, channelTopicPrefix) }

// Message kinds on MetaKind.
const (
	KindPublish = "publish" // a client published to a channel
	KindSend    = "send"    // a client sent to the services
	KindAPI     = "api"     // the HTTP API published
	KindService = "service" // a service emitted it (the Go SDK)
	KindEvent   = "event"   // a lifecycle event of a node
	// KindJoin and KindLeave are a member's join and leave, published by its node into the
	// channel's stream (payload: the Member); never a client's.
	KindJoin  = "join"
	KindLeave = "leave"
)

// Targets on MetaTarget: how a submitted message is addressed.
const (
	TargetChannel  = "channel"
	TargetUser     = "user"
	TargetSession  = "session"
	TargetAll      = "all"
	TargetServices = "services"
	TargetEvents   = "events"
)

// DedupeKey is the key under which a msg_id is deduplicated: per user (per session for an
// anonymous client), and one space for the HTTP API. "" when there is no msg_id.
func DedupeKey(kind, user, session, msgID string) string {
	if msgID == "" {
		return ""
	}
	if kind == KindAPI {
		return "api\x00" + msgID
	}
	if user != "" {
		return "u\x00" + user + "\x00" + msgID
	}
	return "s\x00" + session + "\x00" + msgID // anonymous
}

// IdempotentUUID is the message UUID for an idempotency key: the same key gives the same UUID on
// every node, which is how nodes recognise a repeated msg_id that reached two of them.
func IdempotentUUID(key string) string {
	sum := sha256.Sum256([]byte(key))
	sum[6] = sum[6]&0x0f | 0x50 // version 5 layout (name-based, SHA)
	sum[8] = sum[8]&0x3f | 0x80
	return uuid.UUID(sum[:16]).String()
}
