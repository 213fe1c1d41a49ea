// Package wsclient is the reference Go client of the WebSocket gateway (docs/protocol.md).
//
// It keeps one WebSocket connection to a gateway node (or a load balancer in front of several)
// and hides its loss: it reconnects with jittered exponential backoff, resubscribes every
// channel with `since` set to the last position it delivered, drops the duplicates a resume can
// produce, and retries publishes with the same `msg_id` so that the server delivers them once.
//
//	c, err := wsclient.Dial(ctx, wsclient.Options{URL: "https://gw.example.com", TokenFunc: fetchToken})
//	if err != nil { ... }
//	defer c.Close()
//	sub, err := c.Subscribe(ctx, "room:42")
//	go func() {
//		for m := range sub.Messages() { // closed by Unsubscribe, Close or a refused resubscribe
//			if m.Gap { /* messages may be missing before m: reload the state */ }
//			handle(m)
//		}
//	}()
//	ack, err := c.Publish(ctx, "room:42", map[string]any{"text": "hi"})
//
// # Goroutines
//
// A Client owns one supervisor goroutine (connects, reconnects, gives up) and, per connection,
// one reader and one writer. Close stops all of them and returns once they are gone.
// Callbacks (Options.OnState, OnDisconnect, OnResubscribed) run on those goroutines: they must
// return quickly and must not call Close (start a goroutine for that).
//
// # Back-pressure
//
// Each subscription, and the Direct channel, has a bounded buffer (Options.BufferSize). When it
// is full the reader waits for the application instead of dropping anything; while it waits it
// reads nothing else (no acks, no other channel). The server then sees a slow consumer and
// disconnects the client (`slow_consumer`); once the application drains the buffer the client
// reconnects and resumes from the last position it delivered, so nothing is lost as long as the
// broker's history reaches back (otherwise the next message has Gap set). A Publish waiting for
// its ack meanwhile may time out and retry, which is harmless (same msg_id).
//
// # Guarantees
//
//   - Channel messages arrive in the order of the channel, each at most once per Subscription
//     (duplicates at the seam of a resume are dropped by position).
//   - Across connection losses nothing is missed unless the server says so: a resubscription
//     answered `recovered:false` is reported to Options.OnResubscribed and marks the next
//     message with Gap.
//   - Publish and Send return nil only after an `ack`; a retried publish carries the same
//     msg_id, so the server delivers it once (within its dedupe window, 2 minutes by default).
//   - Messages addressed to the session or broadcast (Direct) are not resumable: those sent
//     while the client is disconnected are lost.
//
// # Presence
//
// Presence, PresenceAll and PresenceStats read who is in a presence channel (the server's
// presence.channels). On a channel with presence.join_leave, joins and leaves come on
// Subscription.Messages in order with the messages, Kind protocol.TypeJoin or TypeLeave and
// Members set (several when the server gathered a window's joins or leaves into one frame,
// presence.coalesce; Member too when there is one); they have positions, so the guarantees above
// hold for them too.
//
// # Hooks
//
// With a server that calls the application's backend (docs/hooks.md): RPC calls a method and
// returns its result, sent once and never again; Refresh extends the connection with a new token
// (kept for the reconnections) or asks the refresh hook; WelcomeData, Subscription.Data and
// Subscription.Expires are what the connect and subscribe hooks gave the client. A subscription
// the server ends on its own (its expiry came, or the backend unsubscribed the user) ends with
// an *UnsubscribedError and is not renewed.
package wsclient
