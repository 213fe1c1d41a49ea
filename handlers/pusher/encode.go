package pusher

import (
	"bytes"
	"encoding/json"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

// Encode encodes a channel message for the Pusher connections of the node (handlers
// MessagesConfig.Encode): once per message and node, on the delivering goroutine. A join or
// leave of a presence channel is member_added or member_removed, when it is its user's first
// or last connection; anything else is the event its metadata names (protocol.MetaPusherEvent,
// else "message"), not sent to protocol.MetaExcept. A message to one session (channel "") is
// the event its metadata names, without a channel (pusher-js: pusher.bind, bind_global).
func (s *Server) Encode(f websocket.Format, msg *message.Message, channel string, _ protocol.Position) websocket.Encoded {
	if f != websocket.FormatPusher {
		return websocket.Encoded{}
	}
	if channel == "" { // a service's message to the session (protocol.TargetSession): an event without a channel
		event := msg.Metadata.Get(protocol.MetaPusherEvent)
		if event == "" {
			event = defaultEvent
		}
		return websocket.Encoded{Frame: eventFrame(event, "", msg.Payload, "")}
	}
	_, name, ok := PusherChannel(channel)
	if !ok {
		return websocket.Encoded{}
	}
	md := msg.Metadata
	switch kind := md.Get(protocol.MetaKind); kind {
	case protocol.KindJoin, protocol.KindLeave:
		if !isPresence(name) {
			return websocket.Encoded{}
		}
		return s.members(kind, channel, name, msg.Payload)
	}
	event := md.Get(protocol.MetaPusherEvent)
	if event == "" {
		event = defaultEvent
	}
	userID := ""
	if isPresence(name) {
		userID = md.Get(protocol.MetaUser)
	}
	return websocket.Encoded{Frame: eventFrame(event, name, msg.Payload, userID), Except: md.Get(protocol.MetaExcept)}
}

// members encodes a join or leave message (one member, or an array of them when coalesced).
func (s *Server) members(kind, channel, name string, payload []byte) websocket.Encoded {
	var ms []protocol.Member
	if p := bytes.TrimLeft(payload, " \t\r\n"); len(p) > 0 && p[0] == '[' {
		if json.Unmarshal(p, &ms) != nil {
			return websocket.Encoded{}
		}
	} else {
		var m protocol.Member
		if json.Unmarshal(payload, &m) != nil {
			return websocket.Encoded{}
		}
		ms = []protocol.Member{m}
	}
	var out []websocket.Encoded
	for _, m := range ms {
		if m.Session == "" {
			continue
		}
		if kind == protocol.KindJoin {
			if s.roster.join(channel, m) {
				out = append(out, websocket.Encoded{Frame: memberAddedFrame(name, m.User, m.Info), Except: m.Session})
			}
		} else if s.roster.leave(channel, m) {
			out = append(out, websocket.Encoded{Frame: memberRemovedFrame(name, m.User)})
		}
	}
	if len(out) == 0 {
		return websocket.Encoded{}
	}
	first := out[0]
	first.More = out[1:]
	return first
}

// Encoder is Encode for handlers.MessagesConfig; nil on a nil Server (no Pusher apps).
func (s *Server) Encoder() func(websocket.Format, *message.Message, string, protocol.Position) websocket.Encoded {
	if s == nil {
		return nil
	}
	return s.Encode
}
