package transports

import (
	"strings"
)

// Logical topics. A broker maps each to a broker name under its prefix (see SafeName).
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
	MetaKind     = "kind"      // "publish", "send", "api", "service" (the Go SDK) or "event"
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

// UserChannel is the internal channel name of the personal channel of user id.
func UserChannel(user string) string { return UserChannelPrefix + user }

// ChannelTopic is the logical topic of a channel (also of a user's channel, see UserChannel).
func ChannelTopic(channel string) string { return channelTopicPrefix + channel }

// ChannelOf returns the channel of a logical channel topic.
func ChannelOf(topic string) (string, bool) {
	return strings.CutPrefix(topic, channelTopicPrefix)
}

// IsChannelTopic reports whether topic is a channel topic (the ones that keep history).
func IsChannelTopic(topic string) bool { return strings.HasPrefix(topic, channelTopicPrefix) }

// SafeName maps any string to a non-empty one made only of [A-Za-z0-9-] and '_', injectively:
// every other byte, and '_' itself, becomes '_' followed by two lower-case hex digits. The result
// is a legal NATS subject token, JetStream stream or consumer name, Kafka topic and Redis key.
func SafeName(s string) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			b.WriteByte(c)
		default:
			b.WriteByte('_')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}
