package wsclient

import (
	"encoding/json"

	"github.com/wsgateway/gateway/protocol"
)

// Message is a message from the server: on a subscribed channel (Channel, Position, From), or
// addressed to this session or to everyone (To).
type Message struct {
	Channel  string // the channel as subscribed ("$user" for the user channel); "" for To messages
	ID       string // the message's unique id
	Position string // opaque position in the channel (what a resume starts after); "" for To messages
	// Data is the payload when it is JSON (as the server embedded it); nil when the server sent
	// it base64-encoded because it was not JSON.
	Data json.RawMessage
	// Bytes is the payload exactly as published: the JSON text of Data, or the decoded bytes of
	// a base64 payload.
	Bytes []byte
	// Binary is true when the payload came base64-encoded ("encoding":"base64").
	Binary bool
	From   *From  // who published it; nil when a service did
	To     string // "session" or "all" for messages not on a channel
	// Gap is true on the first message after a resubscription the server could not recover
	// (recovered:false): messages may be missing before this one.
	Gap bool
	// Kind is what the message is: protocol.TypeMessage for a published message, or, on a
	// channel with presence.join_leave, protocol.TypeJoin or protocol.TypeLeave when members
	// joined or left (then Members is set, and ID, Data and Bytes are empty). Joins and leaves
	// have positions like messages: a resumed subscription gets those it missed, in order.
	Kind string
	// Members are who joined or left (Kind TypeJoin or TypeLeave), in the order they did: one,
	// or several when the server gathered the joins or leaves of a window (presence.coalesce)
	// into one frame. nil for other kinds.
	Members []Member
	// Member is the one who joined or left when the frame told of one member (then it is
	// Members[0]); nil when it told of several, and for other kinds. Read Members to see all.
	Member *Member
}

// Member is a member of a presence channel: a connection (User, Session, the Node that holds
// it, and the Info of its token).
type Member = protocol.Member

// PresenceStats counts a presence channel's members: connections, and distinct users.
type PresenceStats = protocol.PresenceStats

// Decode unmarshals the JSON payload into v.
func (m Message) Decode(v any) error { return json.Unmarshal(m.Bytes, v) }

// From is the client that published a message.
type From = protocol.From

// frame is any frame from the server: the fields of a message frame (protocol.Message) and those
// of the other frames.
type frame struct {
	protocol.Message
	Recovered bool   `json:"recovered"`
	MsgID     string `json:"msg_id"`
	Code      string `json:"code"`
	Text      string `json:"message"` // of an error frame
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
	Session   string `json:"session"`
	Node      string `json:"node"`
	User      string `json:"user"`
	// subscribed (the subscription's end) and refreshed (the connection's expiry): unix seconds,
	// 0 for none
	Expires int64 `json:"expires"`
	// join and leave: member (one), or members (several, as presence answers)
	Member *protocol.Member `json:"member"`
	// presence and presence_stats; join and leave of several
	Members     []protocol.Member `json:"members"`
	Next        string            `json:"next"`
	Connections *int              `json:"connections"`
	Users       int               `json:"users"`
	// history: the page's frames
	Messages []json.RawMessage `json:"messages"`
}

func (f *frame) message() Message {
	m := Message{Channel: f.Channel, ID: f.ID, Position: f.Position, From: f.From, To: f.To, Kind: protocol.TypeMessage}
	if m.Bytes, m.Binary = f.Payload(); !m.Binary {
		m.Data = f.Data
	}
	return m
}

// joinLeave is the Message of a join or leave frame.
func (f *frame) joinLeave() Message {
	m := Message{Channel: f.Channel, Position: f.Position, Kind: f.Type, Member: f.Member, Members: f.Members}
	if f.Member != nil {
		m.Members = []Member{*f.Member}
	}
	return m
}

// outFrame is a frame to the server.
type outFrame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Channel string          `json:"channel,omitempty"`
	Since   string          `json:"since,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
	MsgID   string          `json:"msg_id,omitempty"`
	After   string          `json:"after,omitempty"`
	Limit   int             `json:"limit,omitempty"`
	Method  string          `json:"method,omitempty"`
	Token   string          `json:"token,omitempty"`
	Rewind  int             `json:"rewind,omitempty"`
	Reverse bool            `json:"reverse,omitempty"`
}

func encode(f outFrame) []byte {
	b, err := json.Marshal(f)
	if err != nil { // Data is checked before: cannot happen
		panic("wsclient: encode frame: " + err.Error())
	}
	return b
}
