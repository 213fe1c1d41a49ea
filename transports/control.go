package transports

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
)

// ControlStore is implemented by brokers that keep the standing control state (revocations and
// server-side subscriptions, protocol.Control records) where every node, including one started
// later, reads it: memory (in the shared memory.Broker), redis (a hash), jetstream (a KV bucket),
// kafka (a compacted topic read whole).
// Core NATS does not implement it: there the control API refuses standing commands.
//
// All methods are safe for concurrent use, and fail with ErrNotStarted before the broker's Start.
type ControlStore interface {
	// PutControl stores value under key, replacing what was there.
	PutControl(ctx context.Context, key string, value []byte) error
	// DeleteControl removes key; a key that is not there is no error.
	DeleteControl(ctx context.Context, key string) error
	// ListControl returns every record, by key.
	ListControl(ctx context.Context) (map[string][]byte, error)
}

// ErrNoControlStore is returned by IssueControl for a standing command on a broker without a
// ControlStore (core NATS).
var ErrNoControlStore = errors.New("this broker keeps no control state (core NATS does not): revoke, subscribe and unsubscribe need memory, redis, jetstream or kafka")

// IssueControl records a standing command in the broker's control store (a subscribe or
// revoke is put, an unsubscribe deletes its subscribe) and then publishes it on
// protocol.TopicControl, so nodes act on their open connections at once and nodes started
// later find it in the store. c must have been prepared (protocol.Control.Prepare).
func IssueControl(ctx context.Context, b Broker, c *protocol.Control) error {
	if c.Standing() {
		store, ok := b.(ControlStore)
		if !ok {
			return ErrNoControlStore
		}
		var err error
		if c.Kind == protocol.ControlUnsubscribe {
			err = store.DeleteControl(ctx, c.StoreKey())
		} else {
			err = store.PutControl(ctx, c.StoreKey(), c.Encode())
		}
		if err != nil {
			return fmt.Errorf("%w: control store: %w", ErrUnavailable, err)
		}
	}
	msg := message.NewMessage(c.ID, c.Encode())
	msg.Metadata.Set(protocol.MetaKind, c.Kind)
	msg.Metadata.Set(protocol.MetaSentAt, fmt.Sprint(time.Now().UnixNano()))
	if err := b.Publish(protocol.TopicControl, msg); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
