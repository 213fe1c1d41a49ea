// Package transports holds the ways a message travels: the client side (transports/websocket;
// more transports come beside it) and the broker side, defined here.
//
// A Broker is a Watermill publisher and subscriber over logical topic names (protocol.Topic*,
// protocol.ChannelTopic); each broker package (memory, nats, jetstream, redis, kafka) maps those
// names to legal broker names under the configured prefix (SafeName). Brokers that keep channel
// history also implement History, which is what makes resuming after a reconnect possible. The
// conformance suite every broker runs is in package transporttest. The helpers brokers share
// (Relay, DeliverUntilAcked, SubscribeChan, Shrink) are here too.
//
// A broker's life has three steps. Its package's New (nats.New, jetstream.New, redis.New,
// kafka.New) only checks the settings and applies their defaults: it does no I/O and starts no
// goroutine. Start connects and starts the broker's background work. Close stops it all:
//
//	b, err := nats.New(nats.Config{URL: "nats://127.0.0.1:4222"}, logger)
//	if err != nil {
//		return err // a setting is wrong
//	}
//	defer b.Close()
//	if err := b.Start(ctx); err != nil {
//		return err // the work could not be started at all (the server being down is no error)
//	}
//	// Ping until the server answers, as the gateway does, then Publish and Subscribe.
//
// A memory.Node needs no Start (it has nothing to connect to), but takes it.
package transports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// Broker connects one gateway node (or one service) to a broker.
//
// All methods are safe for concurrent use. The broker's New starts nothing: Start does. Before
// Start, Publish, Subscribe, SubscribeGroup and Ping fail with ErrNotStarted (History's methods
// too, for brokers that have it); only memory.Node, which has nothing to start, works without.
// Close is idempotent and bounded in time; after Close, Publish fails with ErrClosed and every
// subscription channel is closed.
type Broker interface {
	// Start connects and starts the broker's background work (connection, reconnects,
	// provisioning, dispatchers), owned by the broker and stopped by Close. It does not wait for
	// the broker server to be reachable (Ping does; the gateway pings until it answers): it
	// fails only when the work cannot be started at all, and then leaves nothing running. Where
	// it waits (JetStream provisions its streams once when the server is already connected, for
	// at most the publish timeout), ctx bounds the wait; ctx does not bound the work it starts.
	// Safe to call twice (the second call does nothing); after Close it fails with ErrClosed.
	Start(ctx context.Context) error

	// Publish sends messages to a logical topic and returns once the broker has accepted all of
	// them (an error means some may not have been). Messages are not modified, nor read after
	// Publish returned (the node hands over the messages its router handles, not copies).
	Publish(topic string, messages ...*message.Message) error

	// Subscribe delivers every message published to topic after Subscribe returned (fan-out:
	// each subscription of each node receives all of them), in publish order per topic.
	// The next message is sent only after the previous one was acked; a nacked message is
	// delivered again. Messages of channel topics carry protocol.MetaPosition when the broker keeps
	// history. The channel is closed when ctx is done or the broker is closed.
	Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error)

	// SubscribeGroup delivers each message of topic to only one of the subscriptions that share
	// group, across all nodes (competing consumers): how services consume protocol.TopicInbound.
	// Messages published while no member of the group was subscribed are delivered when one
	// subscribes, as far as the broker retains them.
	SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error)

	// Ping reports whether the broker is reachable now.
	Ping(ctx context.Context) error

	// Close stops what Start started and releases the broker clients the broker owns. It works
	// whether or not Start ran or failed, is safe to call twice, is bounded in time, and leaves
	// no goroutine of the broker behind.
	Close() error
}

// History is implemented by brokers that keep the messages of channel topics for a while, so a
// client can resume from a protocol.Position on any node.
type History interface {
	// Replay returns, oldest first, the messages of a channel topic published after since, at
	// most limit of them, each carrying protocol.MetaPosition. complete is true when the result holds
	// every message after since: the history still reaches back to since (same epoch, not
	// trimmed past it) and there were no more than limit of them. When the history no longer
	// reaches back to since, it returns no message (complete false): a result is never what is
	// left after a gap.
	Replay(ctx context.Context, topic string, since protocol.Position, limit int) (msgs []*message.Message, complete bool, err error)

	// Last returns the position of the newest message of a channel topic, or, when there is none,
	// a position of the current epoch before anything that comes next (the zero position, or any
	// later cut point), so that Replay(Last()) returns what comes next.
	Last(ctx context.Context, topic string) (protocol.Position, error)
}

// PositionPublisher is implemented by brokers with History that can say where each message they
// publish to a channel topic landed: what POST /api/publish and the SDK's emit return. A wrapper
// that embeds such a broker and changes Publish must change PublishPositions too: the node and
// the SDK publish channel messages through PublishPositions when it is there.
type PositionPublisher interface {
	// PublishPositions publishes like Publish and returns, for a channel topic, the position
	// the broker assigned to each message, in order (the position its subscribers see in
	// protocol.MetaPosition, and from which Replay returns exactly what came next). For any
	// other topic it returns nil positions. A message the broker took for a duplicate of one it
	// already has (JetStream's Nats-Msg-Id window) gets the position of the one it has.
	PublishPositions(topic string, messages ...*message.Message) ([]protocol.Position, error)
}

// ReverseHistory is implemented by brokers with History that can read a channel's history
// backwards: the history API's reverse pages and subscribe's rewind.
type ReverseHistory interface {
	// Before returns, newest first, at most limit messages of a channel topic that came before
	// before (strictly; the zero position: the newest messages), each carrying
	// protocol.MetaPosition (and protocol.MetaStoredAt where the broker says when it stored it).
	// Fewer than limit means the history holds no older message. A before of another epoch
	// returns nothing.
	Before(ctx context.Context, topic string, before protocol.Position, limit int) ([]*message.Message, error)
}

// DefaultPublishTimeout is how long a broker's Publish waits for the broker by default (each
// broker package's default, and the gateway's websocket.publish_timeout).
const DefaultPublishTimeout = 5 * time.Second

// ErrClosed is returned by a broker that was closed.
var ErrClosed = errors.New("transports: broker closed")

// ErrUnavailable wraps errors of a broker that cannot be reached.
var ErrUnavailable = errors.New("broker unavailable")

// ErrNoHistory is returned where a channel's history is asked of a broker that keeps none (core
// NATS) or cannot read it backwards.
var ErrNoHistory = errors.New("this broker keeps no history")

// ErrNotStarted is returned by a broker used before Start. It wraps ErrUnavailable, so /readyz
// and callers treat it like an unreachable broker.
var ErrNotStarted = fmt.Errorf("%w: broker not started", ErrUnavailable)

// FuncSubscriber is implemented by brokers whose subscriptions can hand each message of a topic to a
// function on the broker's own goroutine, so that the Feed needs no goroutine of its own per
// channel (a node holds one subscription per channel with local subscribers: thousands). A
// wrapper that embeds such a broker and changes Subscribe must change SubscribeFunc too: the
// Feed uses SubscribeFunc when it is there.
type FuncSubscriber interface {
	// SubscribeFunc delivers the messages of topic to deliver, one at a time and in order, like
	// Subscribe: the next one only after the previous was acked (a nacked one comes again).
	// deliver returns false when it did not take the message (the subscriber is going away);
	// the subscription then ends. deliver must return once the message's context (the
	// subscription's) is done, so that ending the subscription, or closing the broker, never
	// waits for the subscriber. ended is called once, on the broker's goroutine, when the
	// subscription ends, through ctx or by itself.
	SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error
}
