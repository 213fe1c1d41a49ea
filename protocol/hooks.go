package protocol

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Hooks: the node asks the application's backend, and waits for its answer (docs/hooks.md).
//
// A hook call is a HookRequest; the backend answers with a HookReply. Over the broker, a request
// is a Watermill message on TopicHooks (JSON payload, MetaHook naming the hook), consumed by the
// services in one group (competing consumers: any replica answers), and the reply a message on
// TopicReplies addressed to the asking node (MetaReplyNode) and correlated by Watermill
// request/reply's operation id (MetaOperationID). Over HTTP, the request is the JSON body of a
// POST and the reply the JSON body of its 200 answer.

// Hook names: HookRequest.Hook, MetaHook, and the keys of the hooks settings.
const (
	HookConnect   = "connect"   // a client connects (before the welcome): may set the user and info, or refuse
	HookSubscribe = "subscribe" // a client subscribes to a channel a hooks rule covers
	HookPublish   = "publish"   // a client publishes to a channel a hooks rule covers: may replace the data
	HookRefresh   = "refresh"   // a connection's expiry comes, or the client sends refresh without a token
	HookRPC       = "rpc"       // a client's rpc frame: the reply's data is the result
)

// Hooks lists the hook names.
var Hooks = []string{HookConnect, HookSubscribe, HookPublish, HookRefresh, HookRPC}

// Logical topics of hook calls over the broker.
const (
	// TopicHooks carries hook requests to the services (competing consumers, group
	// HooksGroup). A request is worth nothing after its deadline (MetaDeadline): a service
	// drops it unanswered, and brokers need not keep requests nobody is subscribed for.
	TopicHooks = "hooks"
	// TopicReplies carries the services' replies to the nodes (fan-out: every node reads it and
	// keeps the replies addressed to it, MetaReplyNode).
	TopicReplies = "replies"
	// HooksGroup is the consumer group of the services on TopicHooks.
	HooksGroup = "hooks"
)

// Metadata keys of hook requests and replies.
const (
	MetaHook      = "hook"       // on a request: the hook's name
	MetaReplyNode = "reply_node" // on a request and its reply: the node that asked
	MetaDeadline  = "deadline"   // on a request: unix milliseconds after which nobody waits for the reply
	// MetaOperationID correlates a reply with its request; it is Watermill request/reply's own
	// key (requestreply.OperationIDMetadataKey), copied from the request to the reply.
	MetaOperationID = "_watermill_requestreply_op_id"
)

// HookRequest is what the node asks the backend.
type HookRequest struct {
	Hook string `json:"hook"`
	// ID is the request's unique id (for the backend's logs; a retried HTTP call keeps it).
	ID      string `json:"id"`
	Node    string `json:"node"`
	User    string `json:"user"`              // "" for an anonymous connection
	Session string `json:"session,omitempty"` // absent on connect (the session starts after it)
	// Transport is how the client is connected: "websocket", "sse" (GET /sse) or "stream"
	// (GET /stream).
	Transport string          `json:"transport"`
	Channel   string          `json:"channel,omitempty"` // subscribe, publish
	Method    string          `json:"method,omitempty"`  // rpc
	Data      json.RawMessage `json:"data,omitempty"`    // publish: the data; rpc: the params
	// Info is the connection's info (the token's info claim, or what the connect hook set).
	Info json.RawMessage `json:"info,omitempty"`
	// Headers are the upgrade request's headers the connect hook is given
	// (hooks.connect.headers), on connect only.
	Headers map[string]string `json:"headers,omitempty"`
	// Expires is the connection's expiry (unix seconds) on refresh; 0 when it has none.
	Expires int64 `json:"expires,omitempty"`
}

// HookReply is the backend's answer. The zero HookReply allows and changes nothing.
type HookReply struct {
	// Deny refuses: the client gets an error (or, on connect, an HTTP refusal; on refresh, a
	// disconnect) with this code and message. The code is the backend's own
	// ([a-z][a-z0-9_]{0,31}), shown as it is.
	Deny *HookDeny `json:"deny,omitempty"`
	// User: on connect, the user the connection is for (the backend authenticated it, say from
	// a cookie); "" keeps the token's (or anonymous).
	User string `json:"user,omitempty"`
	// Info: on connect, the connection's info (presence members carry it); on subscribe, the
	// member's info in that channel. Absent: unchanged.
	Info json.RawMessage `json:"info,omitempty"`
	// Data: on publish, the data published instead of the client's; on rpc, the result; on
	// subscribe, data given to the client in its subscribed frame; on connect, in its welcome.
	Data json.RawMessage `json:"data,omitempty"`
	// Expires (unix seconds): on connect and refresh, the connection's new expiry; on subscribe,
	// when the subscription ends (the client is unsubscribed with reason "expired"). 0: unchanged
	// (connect, refresh) or none (subscribe).
	Expires int64 `json:"expires,omitempty"`
}

// HookDeny is a hook's refusal.
type HookDeny struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// MaxHookDenyMessage bounds a deny's message (longer ones are cut).
const MaxHookDenyMessage = 256

var hookCode = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Check reports what is wrong with a reply the backend sent, as an error naming the field:
// a deny without a valid code, or JSON that is not valid.
func (r *HookReply) Check() error {
	if r.Deny != nil && !hookCode.MatchString(r.Deny.Code) {
		return fmt.Errorf("deny.code %q must match [a-z][a-z0-9_]{0,31}", truncate(r.Deny.Code, 40))
	}
	if len(r.Info) > 0 && !json.Valid(r.Info) {
		return fmt.Errorf("info is not valid JSON")
	}
	if len(r.Data) > 0 && !json.Valid(r.Data) {
		return fmt.Errorf("data is not valid JSON")
	}
	if r.Expires < 0 {
		return fmt.Errorf("expires must not be negative")
	}
	return nil
}

// Err is the deny as a protocol error for the client (nil when the reply allows).
func (r *HookReply) Err() *Error {
	if r.Deny == nil {
		return nil
	}
	return &Error{Code: r.Deny.Code, Message: truncate(r.Deny.Message, MaxHookDenyMessage)}
}

// Frames of hooks (docs/protocol.md, RPC and Refresh).
const (
	// TypeRPC is a client's call of a method the backend answers:
	// {"type":"rpc","id":…,"method":…,"data":…}, answered by TypeRPCResult with the same id, or
	// an error frame (the backend's deny code, or unavailable when no answer came in time).
	TypeRPC       = "rpc"
	TypeRPCResult = "rpc_result"
	// TypeRefresh extends a connection without reconnecting: {"type":"refresh","id":…,
	// "token":…} with a new token of the same user (checked as at the upgrade), or without a
	// token when a refresh hook is set (the backend decides). Answered by TypeRefreshed with
	// the connection's new expiry, or an error frame.
	TypeRefresh   = "refresh"
	TypeRefreshed = "refreshed"
)

// MaxMethodLen bounds an rpc frame's method.
const MaxMethodLen = 128

// RPCResult answers an rpc frame.
type RPCResult struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Refreshed answers a refresh frame: Expires is the connection's expiry (unix seconds; 0 for
// none).
type Refreshed struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Expires int64  `json:"expires"`
}

// RPCResultFrame encodes the answer to the rpc frame id.
func RPCResultFrame(id string, data json.RawMessage) []byte {
	return Encode(RPCResult{Type: TypeRPCResult, ID: id, Data: data})
}

// RefreshedFrame encodes the answer to the refresh frame id.
func RefreshedFrame(id string, expires int64) []byte {
	return Encode(Refreshed{Type: TypeRefreshed, ID: id, Expires: expires})
}

// MaxTokenLen bounds a refresh frame's token (the node refuses longer tokens at the upgrade too).
const MaxTokenLen = 64 << 10

// UnsubscribeExpired is the reason of the unsubscribed frame a subscription gets when the expiry
// its subscribe hook set has come.
const UnsubscribeExpired = "expired"

// Metadata keys of a hook reply that carries the service handler's error instead of a
// HookReply: Watermill request/reply's own (requestreply.HasErrorMetadataKey, ErrorMetadataKey).
// MetaHookHasError is "1" on such a reply ("0" on others), MetaHookError the error's text; the
// node's call fails at once with it.
const (
	MetaHookHasError = "_watermill_requestreply_has_error"
	MetaHookError    = "_watermill_requestreply_error"
)
