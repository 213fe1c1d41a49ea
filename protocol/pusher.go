package protocol

// Metadata of the messages of channels served to Pusher Channels clients (docs/pusher.md).
const (
	// MetaPusherEvent is the Pusher event name of a channel message (a client event's client-*,
	// or the name an HTTP API trigger gave); a message without it is the event "message".
	MetaPusherEvent = "pusher_event"
	// MetaExcept is a session (a Pusher socket_id) that is not sent the message: the sender of a
	// client event, or the socket_id of an HTTP API trigger.
	MetaExcept = "except"
)

// EventPusherClientEvent is the lifecycle event (on TopicEvents) of a Pusher client event, made
// only for an app with a webhook_url, for its client_event webhook: Channel, Session, User
// (presence channels), Name (the client-* event) and Data (the message payload). It is not one
// of EventTypes: the gateway's own webhooks never POST it.
const EventPusherClientEvent = "client_event"
