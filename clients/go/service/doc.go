// Package service is the Go SDK for services behind the WebSocket gateway.
//
// Services never hold WebSockets: they exchange Watermill messages with the gateway nodes through
// the broker, following the contract of docs/services.md (package protocol).
//
// # Construction
//
// New makes a Service over a broker the service chooses and builds: build the broker of your
// choice with its package's New and ConfigFrom (transports/nats, transports/jetstream,
// transports/redis, transports/kafka), which translate the gateway's own settings
// (configs.Load: a YAML file and GATEWAY_* variables) exactly as a gateway node does, so the same
// settings reach the same topics. The SDK itself links no broker and no server code: a service
// links only the broker it imports. For a service and a gateway node in one process, a node of a
// shared memory broker (memory.Broker.Node(prefix)) will do.
//
// # Emitting
//
// ToChannel, ToUser, ToSession and Broadcast publish one message to the clients subscribed to a
// channel, to every connection of a user (subscribed to "$user"), to one session, or to every
// connection, and return the message id clients see in the frame's "id".
//
// The data is the message payload:
//   - []byte and json.RawMessage are sent as they are (bytes that are not valid UTF-8 JSON reach
//     clients base64-encoded, with "encoding":"base64");
//   - anything else, strings included, is JSON-encoded: "hi" reaches clients as the JSON string
//     "hi", a map or struct as a JSON object.
//
// Each message carries the metadata the gateway's own HTTP API sets: kind=service, target
// (channel, user, session or all), channel / user / session as the target requires, and sent_at
// (unix nanoseconds). WithMsgID makes an emit idempotent: the message UUID derives from the key
// exactly as for POST /api/publish with that msg_id (protocol.IdempotentUUID of "api\x00"+key),
// msg_id and idempotent=1 are set, and every node delivers the message once however many times
// it was emitted within the node's dedupe window (router.dedupe_window), by any number of service
// replicas, or by the HTTP API with the same msg_id. Retrying a failed or timed-out emit with the
// same key is therefore safe. WithMetadata adds keys of your own; the keys of the contract are
// reserved.
//
// With signing keys (WithSigningKeys: "id:secret" entries, as in the gateway's router.signing_keys /
// GATEWAY_ROUTER_SIGNING_KEYS, so pass cfg.Router.SigningKeys...) every emit carries metadata "signature",
// an HMAC of the logical topic, target, session and payload with the first key, which nodes with
// router.require_signature verify: unsigned or wrongly signed service messages never reach clients.
//
// # Consuming
//
// Inbound consumes what clients `send` (logical topic "inbound") as competing consumers: each
// message goes to one subscription among all that share the group, across processes.
// ChannelMessages consumes what is published to one channel (clients' `publish`, the API's and
// services' emits), fan-out: every subscription gets every message. Both deliver *Inbound, a
// *message.Message with typed accessors (User, Session, Node, Channel, MsgID, Kind, Data, ...)
// and Reply, which emits to the sender's session.
//
// Every message received must be acked (Ack) or nacked (Nack, to have it delivered again): the
// brokers hand a subscription its next message only after the previous one was acked.
//
// # Lifecycle events
//
// Events consumes connection lifecycle events (logical topic "events") as competing consumers of
// a group, decoded into Event. Each event is one message whose payload is a JSON object:
//
//	{
//	  "type":    "connected" | "disconnected" | "subscribed" | "unsubscribed",
//	  "user":    "alice",                  // user id; "" for anonymous connections
//	  "session": "3f0c…",                  // session id (the welcome frame's "session")
//	  "node":    "node-a",                 // node that holds (held) the connection
//	  "channel": "room:1",                 // subscribed/unsubscribed: the channel, "$user:<id>"
//	                                       // for the user's channel; absent otherwise
//	  "reason":  "token_expired",          // disconnected: why (the disconnect code such as
//	                                       // shutdown, slow_consumer, token_expired, policy, or
//	                                       // "closed" when the client went away); optional
//	  "at":      "2026-01-02T15:04:05.123456789Z" // when it happened, RFC 3339 with nanoseconds
//	}
//
// Unknown members are ignored (new ones may be added); "at" may also be a number of unix
// nanoseconds. A payload that is not such an object is logged, acked and skipped.
//
// # Hooks
//
// OnHooks answers the gateway nodes' hook requests (connect, subscribe, publish, refresh, rpc:
// docs/hooks.md) with one HookHandler per hook, as a member of the services' group on the hooks
// topic: each request is answered by one replica. Requests past their deadline are skipped; a
// hook without a handler, a handler's error or panic is answered with an error that fails the
// node's call at once. Up to HookHandlers.Concurrency (64) requests are handled at once.
//
// # Channel presence
//
// Members, PresenceStats and Channels read the gateway nodes' channel presence
// (presence.channels) from the Service's broker, without a node (ErrNoPresence on a broker that
// keeps none). The Service only reads it: its broker holds no lease and reaps nothing. Presence,
// by contrast, follows every session of every node from the lifecycle events.
//
// # Example
//
//	cfg, err := configs.Load("", os.Environ()) // same GATEWAY_* settings as the gateway
//	if err != nil { ... }
//	b, err := nats.New(nats.ConfigFrom(cfg), slog.Default()) // github.com/wsgateway/gateway/transports/nats
//	if err != nil { ... }
//	svc, err := service.New(b, slog.Default(), service.WithSigningKeys(cfg.Router.SigningKeys...))
//	if err != nil { ... }
//	defer svc.Close() // closes b too
//	if err := svc.Start(ctx); err != nil { ... } // starts b (New starts nothing)
//
//	_, err = svc.ToChannel(ctx, "news", map[string]any{"title": "hello"}, service.WithMsgID("news-1"))
//
//	in, err := svc.Inbound(ctx, "my-service")
//	for m := range in {
//		_, err := m.Reply(ctx, map[string]any{"got": json.RawMessage(m.Data()), "from": m.User()})
//		if err != nil {
//			m.Nack() // delivered again
//			continue
//		}
//		m.Ack()
//	}
//
// The embedded memory broker lives in one process: a Service in another process cannot reach a
// gateway running on it. Use nats, jetstream or redis (or run both in one process, sharing a
// memory.Broker, as examples/echo -embedded does).
package service
