// Package protocol is the contract shared by the gateway, its clients and the services behind it
// (docs/protocol.md, docs/services.md), and nothing else: it imports no other package of this
// module, so the Go client (clients/go/wsclient) and the service SDK (clients/go/service) use it
// instead of keeping copies.
//
// It holds the client frames (decoded with every check that answers bad_request) and the server
// frames (encoded by its functions: WelcomeFrame, SubscribedFrame, ..., Disconnect values), the
// error and disconnect codes, channel positions (Position, as brokers assign them and as clients
// see them), the logical topics and the metadata keys of the messages exchanged with services,
// message kinds and targets, lifecycle events, the dedupe key of a msg_id and the rules of
// channel names.
package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Client frame types.
const (
	TypeSubscribe   = "subscribe"
	TypeUnsubscribe = "unsubscribe"
	TypePublish     = "publish"
	TypeSend        = "send"
	TypePing        = "ping"
	// TypePresence asks for a page of a presence channel's members; TypePresenceStats for its
	// counts (docs/presence.md). The answers have the same types.
	TypePresence      = "presence"
	TypePresenceStats = "presence_stats"
	// TypeHistory asks for a page of a channel's history; the answer has the same type.
	TypeHistory = "history"
)

// Pages of history: a `history` frame (or GET /api/history) without limit gets HistoryPage
// messages, and limit may ask for up to MaxHistoryPage.
const (
	HistoryPage    = 100
	MaxHistoryPage = 1000
)

// Pages of presence members: a `presence` frame without limit gets PresencePage members, and
// limit may ask for up to MaxPresencePage.
const (
	PresencePage    = 100
	MaxPresencePage = 1000
)

// UserChannel is the reserved name of a connection's own user channel.
const UserChannel = "$user"

// Limits of client-chosen strings.
const (
	MaxIDLen       = 64
	MaxMsgIDLen    = 64
	MaxChannelLen  = 128
	MaxPositionLen = 256
	MaxUserLen     = 256           // a user id addressed by the API or a service
	MaxSessionLen  = 128           // a session id addressed by the API or a service
	MaxAfterLen    = MaxSessionLen // a presence page\'s after: a session id
)

// Error codes.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
	// CodeLimitExceeded (an extension) refuses a subscribe beyond
	// limits.subscriptions_per_connection; the connection stays.
	CodeLimitExceeded = "limit_exceeded"
)

// GatewayCode reports whether code is one of the gateway's own error codes (the others are a
// hook's deny codes, the backend's own).
func GatewayCode(code string) bool {
	switch code {
	case CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeTooLarge,
		CodeRateLimited, CodeUnavailable, CodeInternal, CodeLimitExceeded:
		return true
	}
	return false
}

// Error is an error the protocol reports to a client with a code.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an *Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the protocol code of err: its own when it is an *Error, else fallback.
func CodeOf(err error, fallback string) (code, msg string) {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	return fallback, err.Error()
}

// Frame is a decoded client frame.
type Frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Channel string          `json:"channel"`
	Since   *string         `json:"since"`
	Data    json.RawMessage `json:"data"`
	MsgID   string          `json:"msg_id"`
	After   string          `json:"after"`  // presence: the session id the page starts after
	Limit   int             `json:"limit"`  // presence: members per page; 0: PresencePage
	Method  string          `json:"method"` // rpc: the method called
	Token   string          `json:"token"`  // refresh: the new token ("" asks the refresh hook)
	// Rewind (subscribe): the channel's newest messages, at most this many, come before live.
	Rewind int `json:"rewind"`
	// Reverse (history): the page goes backwards from since (or from the newest), newest first.
	Reverse bool `json:"reverse"`
}

// Decode parses one client frame and checks it. On error the returned frame still carries the
// id when one could be read, so the error can answer it.
func Decode(b []byte) (*Frame, *Error) {
	var f Frame
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return &f, Errorf(CodeBadRequest, "a frame must be a JSON object")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		// Answer with the id if it can be read before the object goes wrong.
		return &Frame{ID: recoverID(b)}, Errorf(CodeBadRequest, "invalid frame: %s", jsonReason(err))
	}
	if !validID(f.ID) {
		f.ID = ""
		return &f, Errorf(CodeBadRequest, "id must be a string of at most %d characters", MaxIDLen)
	}
	switch f.Type {
	case TypeSubscribe, TypeUnsubscribe:
		if err := checkChannel(f.Channel); err != nil {
			return &f, err
		}
		if f.Since != nil && len(*f.Since) > MaxPositionLen {
			return &f, Errorf(CodeBadRequest, "since is too long")
		}
		if f.Rewind < 0 {
			return &f, Errorf(CodeBadRequest, "rewind must not be negative")
		}
		if f.Rewind > 0 && f.Since != nil && *f.Since != "" {
			return &f, Errorf(CodeBadRequest, "give since or rewind, not both")
		}
	case TypeHistory:
		if err := checkChannel(f.Channel); err != nil {
			return &f, err
		}
		if f.Since != nil && len(*f.Since) > MaxPositionLen {
			return &f, Errorf(CodeBadRequest, "since is too long")
		}
		if f.Limit < 0 || f.Limit > MaxHistoryPage {
			return &f, Errorf(CodeBadRequest, "limit must be between 1 and %d", MaxHistoryPage)
		}
	case TypePublish:
		if err := checkChannel(f.Channel); err != nil {
			return &f, err
		}
		if f.Channel == UserChannel {
			return &f, Errorf(CodeForbidden, "no client may publish to $user")
		}
		if err := checkData(f); err != nil {
			return &f, err
		}
	case TypeSend:
		if err := checkData(f); err != nil {
			return &f, err
		}
	case TypePresence, TypePresenceStats:
		if err := checkChannel(f.Channel); err != nil {
			return &f, err
		}
		if f.Channel == UserChannel {
			return &f, Errorf(CodeBadRequest, "$user has no presence")
		}
		if len(f.After) > MaxAfterLen || !utf8.ValidString(f.After) {
			return &f, Errorf(CodeBadRequest, "after must be at most %d characters", MaxAfterLen)
		}
		if f.Limit < 0 || f.Limit > MaxPresencePage {
			return &f, Errorf(CodeBadRequest, "limit must be between 1 and %d", MaxPresencePage)
		}
	case TypeRPC:
		if f.Method == "" || len(f.Method) > MaxMethodLen || !utf8.ValidString(f.Method) {
			return &f, Errorf(CodeBadRequest, "method is required, at most %d characters", MaxMethodLen)
		}
	case TypeRefresh:
		if len(f.Token) > MaxTokenLen {
			return &f, Errorf(CodeBadRequest, "token is longer than %d bytes", MaxTokenLen)
		}
	case TypePing:
	case "":
		return &f, Errorf(CodeBadRequest, "type is required")
	default:
		return &f, Errorf(CodeBadRequest, "unknown type %q", truncate(f.Type, 32))
	}
	if len(f.MsgID) > MaxMsgIDLen || !utf8.ValidString(f.MsgID) {
		return &f, Errorf(CodeBadRequest, "msg_id must be at most %d characters", MaxMsgIDLen)
	}
	return &f, nil
}

// recoverID reads the top-level members of a JSON object that does not decode as a Frame, up to
// the first syntax error, and returns the last valid string id among them ("" when none). Keys
// match case-insensitively, as they do for json.Unmarshal.
func recoverID(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	id := ""
	for {
		t, err := dec.Token()
		if err != nil {
			return id
		}
		key, ok := t.(string)
		if !ok { // the closing '}'
			return id
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return id
		}
		if strings.EqualFold(key, "id") {
			var s string
			if json.Unmarshal(v, &s) == nil && validID(s) {
				id = s
			} else {
				id = ""
			}
		}
	}
}

func validID(id string) bool { return len(id) <= MaxIDLen && utf8.ValidString(id) }

func checkData(f Frame) *Error {
	if len(f.Data) == 0 {
		return Errorf(CodeBadRequest, "data is required")
	}
	return nil
}

func checkChannel(ch string) *Error {
	if ch == "" {
		return Errorf(CodeBadRequest, "channel is required")
	}
	if ch == UserChannel || ValidChannel(ch) {
		return nil
	}
	return Errorf(CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
}

// ValidChannel reports whether name matches ^[A-Za-z0-9_:.\-]{1,128}$.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == ':' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "malformed JSON at offset " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + te.Field + " has the wrong type"
	}
	return "malformed JSON"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Server frames.

// Welcome is the first frame of a connection.
type Welcome struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	Node    string `json:"node"`
	User    string `json:"user"`
	// Data is what the connect hook gave the client (absent without one).
	Data json.RawMessage `json:"data,omitempty"`
}

// Subscribed answers subscribe.
type Subscribed struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Channel   string `json:"channel"`
	Position  string `json:"position"`
	Recovered bool   `json:"recovered"`
	// Data is what the subscribe hook gave the client for this channel (absent without one).
	Data json.RawMessage `json:"data,omitempty"`
	// Expires (unix seconds) is when the subscribe hook ends the subscription (0: never).
	Expires int64 `json:"expires,omitempty"`
}

// Reply answers unsubscribe (Channel), publish and send (MsgID), ping.
type Reply struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Channel string `json:"channel,omitempty"`
	MsgID   string `json:"msg_id,omitempty"`
	// Reason says why the server unsubscribed the client on its own (UnsubscribeExpired, …).
	Reason string `json:"reason,omitempty"`
	// Position (ack of a publish) is where the broker put the message in the channel's history,
	// on brokers that keep one; absent otherwise.
	Position string `json:"position,omitempty"`
}

// History answers a `history` frame: a page of a channel's messages, each a frame exactly as
// live (`message`, or `join`/`leave`), oldest first (newest first when reverse); Next, when
// set, is the since of the next page. Messages is never null.
type History struct {
	Type     string            `json:"type"`
	ID       string            `json:"id"`
	Channel  string            `json:"channel"`
	Messages []json.RawMessage `json:"messages"`
	Next     string            `json:"next,omitempty"`
}

// ErrorFrame reports an error; ID is set when it answers a frame.
type ErrorFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// DisconnectFrame is sent just before the server closes a connection (Disconnect.Frame).
type DisconnectFrame struct {
	Type      string `json:"type"`
	Code      string `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// From says which client published a channel message.
type From struct {
	User    string `json:"user"`
	Session string `json:"session"`
}

// Message is a message delivered to a client: on a channel (Channel, Position, From), or
// addressed to the session or to everyone (To).
type Message struct {
	Type     string          `json:"type"`
	Channel  string          `json:"channel,omitempty"`
	To       string          `json:"to,omitempty"`
	ID       string          `json:"id"`
	Position string          `json:"position,omitempty"`
	Data     json.RawMessage `json:"data"`
	Encoding string          `json:"encoding,omitempty"`
	From     *From           `json:"from,omitempty"`
}

// SetPayload puts a payload in Data: as-is when it is valid JSON, else as a base64 string with
// Encoding "base64".
func (m *Message) SetPayload(p []byte) {
	// json.Valid accepts invalid UTF-8 inside strings, but a text frame must be UTF-8, so such a
	// payload goes as base64 too, and keeps its exact bytes.
	if len(p) > 0 && utf8.Valid(p) && json.Valid(p) {
		m.Data = p
		m.Encoding = ""
		return
	}
	s := base64.StdEncoding.EncodeToString(p)
	m.Data = json.RawMessage(strconv.Quote(s))
	m.Encoding = "base64"
}

// Payload returns what SetPayload was given: Data itself when it is JSON, or the decoded bytes of
// a base64 payload (binary true). A base64 payload that does not decode is returned as Data.
func (m *Message) Payload() (p []byte, binary bool) {
	if m.Encoding == "base64" {
		var s string
		if json.Unmarshal(m.Data, &s) == nil {
			if b, err := base64.StdEncoding.DecodeString(s); err == nil {
				return b, true
			}
		}
	}
	return m.Data, false
}

// Encode marshals a server frame. Server frames are plain structs, so this cannot fail for them;
// a failure is a programming error reported as an internal error frame.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(ErrorFrame{Type: TypeError, Code: CodeInternal, Message: "cannot encode frame"})
	}
	return b
}

// ErrorReply encodes an error frame for err answering id (empty when it answers no frame).
func ErrorReply(id string, err *Error) []byte {
	return Encode(ErrorFrame{Type: TypeError, ID: id, Code: err.Code, Message: err.Message})
}

// Server frame types.
const (
	TypeWelcome      = "welcome"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypeAck          = "ack"
	TypePong         = "pong"
	TypeMessage      = "message"
	TypeError        = "error"
	TypeDisconnect   = "disconnect"
	// TypeJoin and TypeLeave tell the subscribers of a join_leave channel that a member joined
	// or left (TypePresence and TypePresenceStats answer the client frames of those types).
	TypeJoin  = "join"
	TypeLeave = "leave"
)

// Presence answers a `presence` frame: a page of members, ordered by session id; Next, when
// set, is the after of the next page. Members is never null.
type Presence struct {
	Type    string   `json:"type"`
	ID      string   `json:"id"`
	Channel string   `json:"channel"`
	Members []Member `json:"members"`
	Next    string   `json:"next,omitempty"`
}

// PresenceCounts answers `presence_stats`, and `presence` on a channel with more members than
// presence.max_members (then Type is TypePresence and there is no members field).
type PresenceCounts struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Channel string `json:"channel"`
	PresenceStats
}

// JoinLeave tells a subscriber that a member joined or left channel (Member), or several did
// (Members, in the order they did: the changes a node gathered in one presence.coalesce
// window), at position in its stream. One of Member and Members is set.
type JoinLeave struct {
	Type     string   `json:"type"`
	Channel  string   `json:"channel"`
	Member   *Member  `json:"member,omitempty"`
	Members  []Member `json:"members,omitempty"`
	Position string   `json:"position,omitempty"`
}

// PresenceFrame encodes a page of channel's members answering presence id.
func PresenceFrame(id, channel string, members []Member, next string) []byte {
	if members == nil {
		members = []Member{}
	}
	return Encode(Presence{Type: TypePresence, ID: id, Channel: channel, Members: members, Next: next})
}

// PresenceCountsFrame encodes channel's counts answering typ (TypePresenceStats, or TypePresence
// beyond presence.max_members) id.
func PresenceCountsFrame(typ, id, channel string, st PresenceStats) []byte {
	return Encode(PresenceCounts{Type: typ, ID: id, Channel: channel, PresenceStats: st})
}

// JoinLeaveFrame encodes a join or leave (typ TypeJoin or TypeLeave) of m in channel (the name
// the client subscribed with) at position.
func JoinLeaveFrame(typ, channel, position string, m Member) []byte {
	return Encode(JoinLeave{Type: typ, Channel: channel, Member: &m, Position: position})
}

// JoinLeaveManyFrame encodes a join or leave (typ) of several members of channel, in order, at
// position: one frame for one message of the stream that carried them all.
func JoinLeaveManyFrame(typ, channel, position string, ms []Member) []byte {
	return Encode(JoinLeave{Type: typ, Channel: channel, Members: ms, Position: position})
}

// WelcomeFrame encodes the first frame of a connection.
func WelcomeFrame(session, node, user string) []byte {
	return Encode(Welcome{Type: TypeWelcome, Session: session, Node: node, User: user})
}

// SubscribedFrame encodes the answer to subscribe id: channel as the client named it, the
// position live messages follow, and whether the replay recovered everything missed.
func SubscribedFrame(id, channel, position string, recovered bool) []byte {
	return Encode(Subscribed{Type: TypeSubscribed, ID: id, Channel: channel, Position: position, Recovered: recovered})
}

// UnsubscribedFrame encodes the answer to unsubscribe id.
func UnsubscribedFrame(id, channel string) []byte {
	return Encode(Reply{Type: TypeUnsubscribed, ID: id, Channel: channel})
}

// AckFrame encodes the answer to publish or send id: the message was accepted with msgID.
func AckFrame(id, msgID string) []byte {
	return Encode(Reply{Type: TypeAck, ID: id, MsgID: msgID})
}

// AckPositionFrame encodes the answer to publish id with the message's position in its
// channel (AckFrame when position is empty).
func AckPositionFrame(id, msgID, position string) []byte {
	return Encode(Reply{Type: TypeAck, ID: id, MsgID: msgID, Position: position})
}

// HistoryFrame encodes a page of channel's history answering history id.
func HistoryFrame(id, channel string, messages []json.RawMessage, next string) []byte {
	if messages == nil {
		messages = []json.RawMessage{}
	}
	return Encode(History{Type: TypeHistory, ID: id, Channel: channel, Messages: messages, Next: next})
}

// PongFrame encodes the answer to ping id.
func PongFrame(id string) []byte {
	return Encode(Reply{Type: TypePong, ID: id})
}

// ChannelMessageFrame encodes a message on channel (the name the client subscribed with) at
// position, with the publishing client (nil when a service published it).
func ChannelMessageFrame(channel, id, position string, payload []byte, from *From) []byte {
	if b, ok := plainMessageFrame(channel, "", id, position, payload, from); ok {
		return b
	}
	m := Message{Type: TypeMessage, Channel: channel, ID: id, Position: position, From: from}
	m.SetPayload(payload)
	return Encode(m)
}

// DirectMessageFrame encodes a message addressed to one session (to TargetSession) or to every
// connection (to TargetAll).
func DirectMessageFrame(to, id string, payload []byte) []byte {
	if b, ok := plainMessageFrame("", to, id, "", payload, nil); ok {
		return b
	}
	m := Message{Type: TypeMessage, To: to, ID: id}
	m.SetPayload(payload)
	return Encode(m)
}

// plainMessageFrame makes the message frame that Encode would make of a Message with these
// fields and SetPayload(payload), byte for byte, without reflection and with one pass over the
// payload (json.Compact, which checks it too) instead of three (utf8.Valid, json.Valid and
// Marshal's own compaction). It does so only where the result is plainly the same: the strings
// need no escaping and the payload is ASCII without '<', '>' or '&' (which Marshal escapes);
// otherwise, and for a payload that is not JSON (base64), it returns false and the caller
// encodes the frame through Message.
func plainMessageFrame(channel, to, id, position string, payload []byte, from *From) ([]byte, bool) {
	if len(payload) == 0 || !literalString(channel) || !literalString(to) || !literalString(id) || !literalString(position) ||
		from != nil && (!literalString(from.User) || !literalString(from.Session)) {
		return nil, false
	}
	for _, c := range payload {
		if c >= 0x80 || c == '<' || c == '>' || c == '&' {
			return nil, false
		}
	}
	n := len(`{"type":"message","channel":"","to":"","id":"","position":"","data":,"from":{"user":"","session":""}}`) +
		len(channel) + len(to) + len(id) + len(position) + len(payload)
	if from != nil {
		n += len(from.User) + len(from.Session)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"message"`...)
	b = appendField(b, `,"channel":"`, channel, true)
	b = appendField(b, `,"to":"`, to, true)
	b = appendField(b, `,"id":"`, id, false)
	b = appendField(b, `,"position":"`, position, true)
	b = append(b, `,"data":`...)
	buf := bytes.NewBuffer(b)
	if json.Compact(buf, payload) != nil {
		return nil, false
	}
	b = buf.Bytes()
	if from != nil {
		b = appendField(b, `,"from":{"user":"`, from.User, false)
		b = appendField(b, `,"session":"`, from.Session, false)
		b = append(b, '}')
	}
	return append(b, '}'), true
}

// appendField appends a string field (key holds its opening quote) unless omitEmpty and s is empty.
func appendField(b []byte, key, s string, omitEmpty bool) []byte {
	if omitEmpty && s == "" {
		return b
	}
	b = append(b, key...)
	b = append(b, s...)
	return append(b, '"')
}

// literalString reports whether s goes into a JSON string as it is with json.Marshal: printable
// ASCII without '"', '\\', '<', '>' or '&'.
func literalString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
