package protocol

// Disconnect is why the server closes a connection: the disconnect frame it sends first (Frame)
// and the WebSocket close code that follows it (CloseCode). The predefined values below are the
// ones the gateway sends.
type Disconnect struct {
	Code      string
	Reason    string
	Reconnect bool // whether the client should reconnect (and resume)
}

// Disconnect codes (Disconnect.Code), for clients that tell them apart.
const (
	DisconnectCodeShutdown     = "shutdown"
	DisconnectCodeSlowConsumer = "slow_consumer"
	DisconnectCodeTokenExpired = "token_expired"
	DisconnectCodePolicy       = "policy"
	DisconnectCodeResubscribe  = "resubscribe"
	DisconnectCodeRateLimited  = "rate_limited"
)

// The disconnects the gateway sends.
var (
	// DisconnectShutdown: the node is draining.
	DisconnectShutdown = Disconnect{Code: DisconnectCodeShutdown, Reason: "node is shutting down", Reconnect: true}
	// DisconnectSlowConsumer: the connection's send buffer stayed full.
	DisconnectSlowConsumer = Disconnect{Code: DisconnectCodeSlowConsumer, Reason: "send buffer full", Reconnect: true}
	// DisconnectTokenExpired: the connection's token expired.
	DisconnectTokenExpired = Disconnect{Code: DisconnectCodeTokenExpired, Reason: "token expired", Reconnect: true}
	// DisconnectPolicy: the server's policy ends the connection; the client should not come back.
	DisconnectPolicy = Disconnect{Code: DisconnectCodePolicy, Reason: "closed by policy", Reconnect: false}
	// DisconnectResubscribe (an extension) tells a client to reconnect and resume: the node lost
	// its broker subscription of a channel the client was on.
	DisconnectResubscribe = Disconnect{Code: DisconnectCodeResubscribe, Reason: "the node lost its broker subscription; resume", Reconnect: true}
	// DisconnectRateLimited (an extension, close 1008): the connection kept sending frames over
	// its rate limits (limits.rate_limited_disconnect).
	DisconnectRateLimited = Disconnect{Code: DisconnectCodeRateLimited, Reason: "kept sending over the rate limits", Reconnect: false}
)

// WebSocket close codes that follow a disconnect frame.
const (
	CloseNormal     = 1000
	CloseGoingAway  = 1001
	ClosePolicy     = 1008
	CloseTryLater   = 1013
	CloseTokenError = 4001 // an application code: the token expired
)

// CloseCode is the WebSocket close code that follows the disconnect frame: 1001 for shutdown,
// 1013 for slow_consumer, 4001 for token_expired, 4003 for revoked, 1008 for policy and rate_limited, 1000 for
// any other code.
func (d Disconnect) CloseCode() int {
	switch d.Code {
	case DisconnectShutdown.Code:
		return CloseGoingAway
	case DisconnectSlowConsumer.Code:
		return CloseTryLater
	case DisconnectPolicy.Code, DisconnectRateLimited.Code:
		return ClosePolicy
	case DisconnectTokenExpired.Code:
		return CloseTokenError
	case DisconnectCodeRevoked:
		return CloseRevoked
	}
	return CloseNormal
}

// CloseReason is the reason of the WebSocket close that follows the disconnect frame: its code.
func (d Disconnect) CloseReason() string { return d.Code }

// Frame encodes the disconnect frame.
func (d Disconnect) Frame() []byte {
	return Encode(DisconnectFrame{Type: TypeDisconnect, Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect})
}
