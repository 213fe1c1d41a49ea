package protocol

import (
	"bytes"
	"encoding/json"
)

// FramePosition reads the channel and the position of a frame this package encoded that holds
// one: a channel message, a join or leave, a subscribed. ok is false for any other frame (a reply,
// a direct message, an error) and for a frame without a position. The one-way transports use it
// to keep the position of each channel of a stream (docs/protocol.md, Server-Sent Events); the
// message frame, the one sent most, is read without decoding its JSON.
func FramePosition(frame []byte) (channel, position string, ok bool) {
	if rest, found := bytes.CutPrefix(frame, messageHead); found {
		if channel, position, ok = messagePosition(rest); ok {
			return channel, position, true
		}
		// a form the fast path does not know (escapes in the id): decode it
	} else if !bytes.HasPrefix(frame, joinHead) && !bytes.HasPrefix(frame, leaveHead) && !bytes.HasPrefix(frame, subscribedHead) {
		return "", "", false
	}
	var f struct {
		Type     string `json:"type"`
		Channel  string `json:"channel"`
		To       string `json:"to"`
		Position string `json:"position"`
	}
	if json.Unmarshal(frame, &f) != nil || f.Channel == "" || f.Position == "" || f.To != "" {
		return "", "", false
	}
	switch f.Type {
	case TypeMessage, TypeJoin, TypeLeave, TypeSubscribed:
		return f.Channel, f.Position, true
	}
	return "", "", false
}

var (
	messageHead    = []byte(`{"type":"message","channel":"`)
	joinHead       = []byte(`{"type":"join",`)
	leaveHead      = []byte(`{"type":"leave",`)
	subscribedHead = []byte(`{"type":"subscribed",`)
	idField        = []byte(`,"id":"`)
	positionField  = []byte(`,"position":"`)
)

// messagePosition reads `<channel>","id":"<id>","position":"<position>"` (Message's field order),
// the rest of a channel message frame after messageHead; ok is false when it holds an escape.
func messagePosition(b []byte) (channel, position string, ok bool) {
	ch, b, ok := plainString(b)
	if !ok {
		return "", "", false
	}
	if b, ok = bytes.CutPrefix(b, idField); !ok {
		return "", "", false
	}
	if _, b, ok = plainString(b); !ok {
		return "", "", false
	}
	if b, ok = bytes.CutPrefix(b, positionField); !ok {
		return "", "", false
	}
	pos, _, ok := plainString(b)
	if !ok || len(ch) == 0 || len(pos) == 0 {
		return "", "", false
	}
	return string(ch), string(pos), true
}

// plainString reads a JSON string's content up to its closing quote, and what follows the
// quote; ok is false when it holds a backslash (an escape) or does not end.
func plainString(b []byte) (s, rest []byte, ok bool) {
	for i, c := range b {
		switch c {
		case '"':
			return b[:i], b[i+1:], true
		case '\\':
			return nil, nil, false
		}
	}
	return nil, nil, false
}
