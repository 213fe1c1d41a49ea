package protocol

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// TopicControl carries the backend's control commands (Control). Every node consumes all of it
// (fan-out: each node its own subscription) and applies what concerns its own connections.
const TopicControl = "control"

// Control command kinds (Control.Kind).
const (
	ControlDisconnect  = "disconnect"  // end a user's connections, or one session
	ControlSubscribe   = "subscribe"   // subscribe every session of a user to a channel, standing
	ControlUnsubscribe = "unsubscribe" // undo a subscribe (and unsubscribe the user's sessions)
	ControlRevoke      = "revoke"      // refuse a user's tokens issued before a time, or one jti
)

// DisconnectCodeControl is the disconnect code of a disconnect command that gives none.
const DisconnectCodeControl = "control"

// DisconnectCodeRevoked ends a connection whose token was revoked (close CloseRevoked).
const DisconnectCodeRevoked = "revoked"

// DisconnectRevoked: the connection's token was revoked; the client must get a new token.
var DisconnectRevoked = Disconnect{Code: DisconnectCodeRevoked, Reason: "token revoked", Reconnect: false}

// CloseRevoked is the WebSocket close code after a revoked disconnect (an application code).
const CloseRevoked = 4003

// Control is one command of the backend on TopicControl (the JSON payload of its message), and
// the record a standing one (revoke, subscribe) leaves in the broker's control store.
//
// ID identifies the command: a node applies a command of one ID at most once per connection,
// so a redelivered or repeated command changes nothing.
type Control struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Target of disconnect (User or Session), subscribe and unsubscribe (User), revoke (User or JTI).
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Channel string `json:"channel,omitempty"` // subscribe, unsubscribe
	// Disconnect: the disconnect frame's code and reason, and whether the client should reconnect.
	Code      string `json:"code,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Reconnect bool   `json:"reconnect,omitempty"`
	// Revoke: JTI, or User's tokens issued before Before (tokens without iat count as issued
	// before), refused until Until (then the record is dropped).
	JTI    string    `json:"jti,omitempty"`
	Before time.Time `json:"before,omitzero"`
	Until  time.Time `json:"until,omitzero"`
}

// MaxJTILen bounds a revoked jti.
const MaxJTILen = 256

// Prepare checks c and fills in its defaults at now: a new ID when it has none, a revoke's
// Before (now), a disconnect's Code (control) and Reason. Its error is a bad_request Error.
func (c *Control) Prepare(now time.Time) error {
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	if len(c.ID) > MaxMsgIDLen {
		return Errorf(CodeBadRequest, "id must be at most %d bytes", MaxMsgIDLen)
	}
	if len(c.User) > MaxUserLen {
		return Errorf(CodeBadRequest, "user must be at most %d bytes", MaxUserLen)
	}
	switch c.Kind {
	case ControlDisconnect:
		if (c.User == "") == (c.Session == "") {
			return Errorf(CodeBadRequest, "exactly one of user and session is required")
		}
		if len(c.Session) > MaxSessionLen {
			return Errorf(CodeBadRequest, "session must be at most %d bytes", MaxSessionLen)
		}
		if c.Code == "" {
			c.Code = DisconnectCodeControl
		}
		if !ValidChannel(c.Code) || len(c.Code) > 64 {
			return Errorf(CodeBadRequest, "code must match ^[A-Za-z0-9_:.\\-]{1,64}$")
		}
		if c.Reason == "" {
			c.Reason = "disconnected by the backend"
		}
		if len(c.Reason) > 256 {
			return Errorf(CodeBadRequest, "reason must be at most 256 bytes")
		}
	case ControlSubscribe, ControlUnsubscribe:
		if c.User == "" {
			return Errorf(CodeBadRequest, "user is required")
		}
		if !ValidChannel(c.Channel) {
			return Errorf(CodeBadRequest, "channel must match ^[A-Za-z0-9_:.\\-]{1,128}$")
		}
	case ControlRevoke:
		if (c.User == "") == (c.JTI == "") {
			return Errorf(CodeBadRequest, "exactly one of user and jti is required")
		}
		if len(c.JTI) > MaxJTILen {
			return Errorf(CodeBadRequest, "jti must be at most %d bytes", MaxJTILen)
		}
		if c.JTI != "" && !c.Before.IsZero() {
			return Errorf(CodeBadRequest, "before applies to a user's revocation, not a jti's")
		}
		if c.Until.IsZero() {
			return Errorf(CodeBadRequest, "until is required (a jti's: the token's exp)")
		}
		if !c.Until.After(now) {
			return Errorf(CodeBadRequest, "until must be in the future")
		}
		if c.User != "" && c.Before.IsZero() {
			c.Before = now
		}
	default:
		return Errorf(CodeBadRequest, "kind must be disconnect, subscribe, unsubscribe or revoke")
	}
	return nil
}

// Standing reports whether the command leaves a record in the control store (revoke,
// subscribe) or removes one (unsubscribe).
func (c Control) Standing() bool { return c.Kind != ControlDisconnect }

// StoreKey is the control store key of a standing command: one record per revoked user, per
// revoked jti, per (user, channel) subscription; a later command of the same key replaces it.
func (c Control) StoreKey() string {
	switch {
	case c.Kind == ControlRevoke && c.JTI != "":
		return "revoke/jti/" + c.JTI
	case c.Kind == ControlRevoke:
		return "revoke/user/" + c.User
	case c.Kind == ControlSubscribe || c.Kind == ControlUnsubscribe:
		return "subscribe/" + c.User + "/" + c.Channel
	}
	return ""
}

// Expired reports whether a revocation's Until has passed at now (its record may be dropped).
func (c Control) Expired(now time.Time) bool {
	return c.Kind == ControlRevoke && !c.Until.After(now)
}

// Disconnect is the disconnect a disconnect command sends.
func (c Control) Disconnect() Disconnect {
	return Disconnect{Code: c.Code, Reason: c.Reason, Reconnect: c.Reconnect}
}

// Encode is the command's JSON.
func (c Control) Encode() []byte {
	b, _ := json.Marshal(c) // plain strings and times: cannot fail
	return b
}

// DecodeControl reads a command.
func DecodeControl(b []byte) (Control, error) {
	var c Control
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("control command: %w", err)
	}
	return c, nil
}
