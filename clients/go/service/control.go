package service

import (
	"context"
	"fmt"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// ErrNoControlStore is returned by SubscribeUser, UnsubscribeUser and Revoke on a broker that
// keeps no control state (core NATS): nodes started later could not know the command.
var ErrNoControlStore = transports.ErrNoControlStore

// ControlOption changes one control command.
type ControlOption func(*protocol.Control)

// WithCommandID gives the command an id of yours (at most MaxMsgIDLen bytes): a command sent
// again with the same id takes effect at most once per connection, so a failed call can be
// retried. Without it each call gets a new id.
func WithCommandID(id string) ControlOption { return func(c *protocol.Control) { c.ID = id } }

// Disconnect is how Disconnect ends a connection: the disconnect frame's code (default
// "control"), reason, and whether the client should reconnect.
type Disconnect = protocol.Disconnect

// DisconnectUser ends every connection of user, on every node, with a disconnect frame of d
// (what POST /api/disconnect {"user"} does). It returns the command id.
func (s *Service) DisconnectUser(ctx context.Context, user string, d Disconnect, opts ...ControlOption) (string, error) {
	return s.control(ctx, &protocol.Control{Kind: protocol.ControlDisconnect, User: user,
		Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect}, opts)
}

// DisconnectSession ends one session, on whichever node holds it.
func (s *Service) DisconnectSession(ctx context.Context, session string, d Disconnect, opts ...ControlOption) (string, error) {
	return s.control(ctx, &protocol.Control{Kind: protocol.ControlDisconnect, Session: session,
		Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect}, opts)
}

// SubscribeUser subscribes every session of user to channel, on every node, and the sessions
// it opens later, until UnsubscribeUser. The sessions get a subscribed frame with an empty id.
// No channel rule is checked: the backend is trusted.
func (s *Service) SubscribeUser(ctx context.Context, user, channel string, opts ...ControlOption) (string, error) {
	return s.control(ctx, &protocol.Control{Kind: protocol.ControlSubscribe, User: user, Channel: channel}, opts)
}

// UnsubscribeUser ends what SubscribeUser started and unsubscribes user's sessions from channel.
func (s *Service) UnsubscribeUser(ctx context.Context, user, channel string, opts ...ControlOption) (string, error) {
	return s.control(ctx, &protocol.Control{Kind: protocol.ControlUnsubscribe, User: user, Channel: channel}, opts)
}

// Revocation says which tokens Revoke refuses: a user's tokens issued before Before (zero: now),
// or the token of JTI; until Until (required; for a jti, the token's exp).
type Revocation struct {
	User   string
	Before time.Time
	JTI    string
	Until  time.Time
}

// Revoke refuses the tokens of r at every node's upgrade, and disconnects their open
// connections (code "revoked"), until r.Until.
func (s *Service) Revoke(ctx context.Context, r Revocation, opts ...ControlOption) (string, error) {
	return s.control(ctx, &protocol.Control{Kind: protocol.ControlRevoke, User: r.User, Before: r.Before, JTI: r.JTI, Until: r.Until}, opts)
}

func (s *Service) control(ctx context.Context, c *protocol.Control, opts []ControlOption) (string, error) {
	for _, opt := range opts {
		opt(c)
	}
	if err := c.Prepare(time.Now()); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.isClosed() {
		return "", ErrClosed
	}
	if err := transports.IssueControl(ctx, s.broker, c); err != nil {
		return "", fmt.Errorf("service: %s: %w", c.Kind, err)
	}
	return c.ID, nil
}
