package pusher

import (
	"encoding/json"
	"strconv"
)

// Events of the Pusher protocol the node reads or sends.
const (
	evConnected           = "pusher:connection_established"
	evError               = "pusher:error"
	evPing                = "pusher:ping"
	evPong                = "pusher:pong"
	evSubscribe           = "pusher:subscribe"
	evUnsubscribe         = "pusher:unsubscribe"
	evSubscriptionError   = "pusher:subscription_error"
	evSubscribed          = "pusher_internal:subscription_succeeded"
	evMemberAdded         = "pusher_internal:member_added"
	evMemberRemoved       = "pusher_internal:member_removed"
	clientEventPrefix     = "client-"
	defaultEvent          = "message" // the event of a channel message that names none
	maxEventNameLen       = 200
	maxChannelsPerTrigger = 100
	maxBatch              = 10
)

// Pusher's error codes (pusher:error, and the WebSocket close code that follows it).
const (
	CodeUnknownApp       = 4001 // no app has the key: do not reconnect
	CodePathNotFound     = 4005
	CodeNoProtocol       = 4008 // no protocol version given
	CodeBadProtocol      = 4007 // a protocol version this node does not speak
	CodeUnauthorized     = 4009 // the connection is not authorized (closed by policy, rate limits)
	CodeOverCapacity     = 4100 // try again later, backing off (a slow consumer)
	CodeReconnect        = 4200 // reconnect at once (the node is shutting down)
	CodeClientEventLimit = 4301 // a client event over the rate (the connection stays)
	protocolVersion      = 7
	minProtocolVersion   = 5
)

// frame is a frame of the Pusher protocol. data is a JSON string in what the server sends
// (pusher-js parses it), but for pusher:error and pusher:subscription_error, an object.
type frame struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	UserID  string          `json:"user_id,omitempty"`
}

func encode(f frame) []byte {
	b, _ := json.Marshal(f)
	return b
}

// stringData is v encoded as JSON, as a JSON string (the data of a frame the server sends).
func stringData(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	s, _ := json.Marshal(string(b))
	return s
}

func objectData(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// errorFrame is pusher:error; code 0 is sent as null (Pusher's for errors without a code).
func errorFrame(code int, msg string) []byte {
	var c any
	if code != 0 {
		c = code
	}
	return encode(frame{Event: evError, Data: objectData(map[string]any{"code": c, "message": msg})})
}

func subscriptionErrorFrame(channel, typ, msg string, status int) []byte {
	return encode(frame{Event: evSubscriptionError, Channel: channel,
		Data: objectData(map[string]any{"type": typ, "error": msg, "status": status})})
}

// The data rule (docs/pusher.md, "Data"): an event's data is a string in the Pusher protocol and
// a JSON value in the native one. A Pusher data string that is JSON text is the message payload
// as it is; any other string is the payload as a JSON string. Back, a payload that is a JSON
// string is that string, and any other payload its JSON text.

// payloadOf is the message payload of a Pusher data string.
func payloadOf(data string) []byte {
	if json.Valid([]byte(data)) {
		return []byte(data)
	}
	b, _ := json.Marshal(data)
	return b
}

// payloadOfValue is the message payload of a client event's data, a JSON value (pusher-js sends
// an object; a string is read as a data string).
func payloadOfValue(data json.RawMessage) []byte {
	var s string
	if len(data) > 0 && data[0] == '"' && json.Unmarshal(data, &s) == nil {
		return payloadOf(s)
	}
	if len(data) == 0 {
		return []byte("null")
	}
	return data
}

// dataOf is the Pusher data string of a payload, as a JSON string.
func dataOf(payload []byte) json.RawMessage {
	var s string
	if len(payload) > 0 && payload[0] == '"' && json.Unmarshal(payload, &s) == nil {
		b, _ := json.Marshal(s)
		return b
	}
	b, _ := json.Marshal(string(payload))
	return b
}

// eventFrame is a channel event to Pusher clients.
func eventFrame(event, channel string, payload []byte, userID string) []byte {
	return encode(frame{Event: event, Channel: channel, Data: dataOf(payload), UserID: userID})
}

// connectedFrame is pusher:connection_established.
func connectedFrame(socketID string, activityTimeout int) []byte {
	return encode(frame{Event: evConnected, Data: stringData(map[string]any{"socket_id": socketID, "activity_timeout": activityTimeout})})
}

var pongFrame = encode(frame{Event: evPong, Data: stringData(map[string]any{})})

// presenceData is the data of a presence channel's subscription_succeeded.
type presenceData struct {
	IDs   []string                   `json:"ids"`
	Hash  map[string]json.RawMessage `json:"hash"`
	Count int                        `json:"count"`
}

func subscribedFrame(channel string, presence *presenceData) []byte {
	var data json.RawMessage
	if presence != nil {
		data = stringData(map[string]any{"presence": presence})
	} else {
		data = stringData(map[string]any{})
	}
	return encode(frame{Event: evSubscribed, Channel: channel, Data: data})
}

func memberAddedFrame(channel, userID string, info json.RawMessage) []byte {
	if len(info) == 0 {
		info = json.RawMessage("null")
	}
	return encode(frame{Event: evMemberAdded, Channel: channel,
		Data: stringData(map[string]any{"user_id": userID, "user_info": info})})
}

func memberRemovedFrame(channel, userID string) []byte {
	return encode(frame{Event: evMemberRemoved, Channel: channel, Data: stringData(map[string]any{"user_id": userID})})
}

// userIDString is a presence user_id (Pusher allows a string or a number) as a string.
func userIDString(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if _, err := strconv.ParseFloat(n.String(), 64); err == nil {
			return n.String(), true
		}
	}
	return "", false
}
