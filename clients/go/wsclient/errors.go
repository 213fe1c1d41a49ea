package wsclient

import (
	"errors"
	"fmt"

	"github.com/wsgateway/gateway/protocol"
)

// Error codes of `error` frames (docs/protocol.md section 3): the protocol package's.
const (
	CodeBadRequest   = protocol.CodeBadRequest
	CodeUnauthorized = protocol.CodeUnauthorized
	CodeForbidden    = protocol.CodeForbidden
	CodeNotFound     = protocol.CodeNotFound
	CodeTooLarge     = protocol.CodeTooLarge
	CodeRateLimited  = protocol.CodeRateLimited
	CodeUnavailable  = protocol.CodeUnavailable
	CodeInternal     = protocol.CodeInternal
	// CodeLimitExceeded (an extension of this gateway): a subscribe beyond the subscriptions
	// one connection may hold; not retried.
	CodeLimitExceeded = protocol.CodeLimitExceeded
)

// Disconnect codes of `disconnect` frames: the protocol package's.
const (
	DisconnectShutdown     = protocol.DisconnectCodeShutdown
	DisconnectSlowConsumer = protocol.DisconnectCodeSlowConsumer
	DisconnectTokenExpired = protocol.DisconnectCodeTokenExpired
	DisconnectPolicy       = protocol.DisconnectCodePolicy
	// DisconnectResubscribe (an extension of this gateway): the node lost its broker
	// subscription of a channel; the client reconnects and resumes like after any break.
	DisconnectResubscribe = protocol.DisconnectCodeResubscribe
	// DisconnectRateLimited (an extension of this gateway, reconnect false): the connection kept
	// sending over its rate limits.
	DisconnectRateLimited = protocol.DisconnectCodeRateLimited
)

var (
	// ErrClosed is returned by every call on a closed Client, and by Err after Close.
	ErrClosed = errors.New("wsclient: client closed")
	// ErrNotSubscribed is returned by Unsubscribe for a channel the client is not subscribed to.
	ErrNotSubscribed = errors.New("wsclient: not subscribed")
	// ErrAlreadySubscribed is returned by Subscribe for a channel the client is subscribed to.
	ErrAlreadySubscribed = errors.New("wsclient: already subscribed")
	// ErrUnsubscribed is what Subscription.Err returns after Unsubscribe (and what an
	// *UnsubscribedError, the server's own unsubscribe, is).
	ErrUnsubscribed = errors.New("wsclient: unsubscribed")
	// ErrAckTimeout is wrapped by the error of a publish whose last attempt got no reply in
	// Options.AckTimeout.
	ErrAckTimeout = errors.New("wsclient: no reply in time")
	// ErrConnectionLost is wrapped by the error of a publish whose last attempt was cut by the
	// loss of the connection.
	ErrConnectionLost = errors.New("wsclient: connection lost")
)

// Error is an `error` frame of the server answering a request.
type Error struct {
	Code    string // CodeForbidden, CodeBadRequest, ...
	Message string
}

func (e *Error) Error() string { return "wsclient: " + e.Code + ": " + e.Message }

// retryable reports whether a request refused with code may succeed when sent again.
func retryable(code string) bool {
	return code == CodeUnavailable || code == CodeRateLimited
}

// UnsubscribeExpired is the Reason of an UnsubscribedError when the expiry the server's subscribe
// hook gave the subscription came (Subscription.Expires).
const UnsubscribeExpired = protocol.UnsubscribeExpired

// UnsubscribedError ends a subscription the server ended on its own (an `unsubscribed` frame
// the client did not ask for): Reason is UnsubscribeExpired when the subscription's expiry came,
// "" when the backend unsubscribed the user (POST /api/unsubscribe), or another reason the
// server gave. The client does not subscribe the channel again; Subscribe does, if the
// application wants to. errors.Is(err, ErrUnsubscribed) is true.
type UnsubscribedError struct {
	Channel string
	Reason  string
}

func (e *UnsubscribedError) Error() string {
	if e.Reason == "" {
		return "wsclient: unsubscribed from " + e.Channel + " by the server"
	}
	return "wsclient: unsubscribed from " + e.Channel + " by the server: " + e.Reason
}

// Is makes errors.Is(err, ErrUnsubscribed) true.
func (e *UnsubscribedError) Is(target error) bool { return target == ErrUnsubscribed }

// DisconnectError is a `disconnect` frame of the server: the reason a connection ended. With
// Reconnect false the client stops and Client.Err returns it.
type DisconnectError struct {
	Code      string // DisconnectShutdown, DisconnectSlowConsumer, ...
	Reason    string
	Reconnect bool
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("wsclient: disconnected by the server: %s (%s, reconnect %v)", e.Code, e.Reason, e.Reconnect)
}

// HandshakeError is a refused WebSocket upgrade: the HTTP status and the error the gateway put
// in the body ({"error":{"code","message"}}), when it did.
type HandshakeError struct {
	URL     string
	Status  int
	Code    string
	Message string
}

func (e *HandshakeError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("wsclient: upgrade refused by %s: %d %s: %s", e.URL, e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("wsclient: upgrade refused by %s: status %d", e.URL, e.Status)
}
