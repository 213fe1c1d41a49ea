package kafka

import (
	"context"
	"fmt"

	"github.com/IBM/sarama"

	"github.com/wsgateway/gateway/transports"
)

// The control store is the compacted one-partition topic <prefix>.control-state: a record per
// key, a tombstone (no value) deletes it. ListControl reads it whole, from its first offset to
// the end it had when the read began, as a node starting reads the presence topic.

var _ transports.ControlStore = (*Broker)(nil)

// PutControl implements transports.ControlStore: one record, acked by the in-sync replicas.
func (b *Broker) PutControl(ctx context.Context, key string, value []byte) error {
	return b.controlRecord(ctx, key, value)
}

// DeleteControl implements transports.ControlStore: a tombstone.
func (b *Broker) DeleteControl(ctx context.Context, key string) error {
	return b.controlRecord(ctx, key, nil)
}

func (b *Broker) controlRecord(ctx context.Context, key string, value []byte) error {
	c, err := b.ready(ctx, b.cfg.PublishTimeout)
	if err != nil {
		return err
	}
	msg := &sarama.ProducerMessage{Topic: b.names.controlState, Key: sarama.StringEncoder(key)}
	if value != nil {
		msg.Value = sarama.ByteEncoder(value)
	}
	return b.sendRecord(ctx, c, msg, "control write")
}

// ListControl implements transports.ControlStore: the topic read whole.
func (b *Broker) ListControl(ctx context.Context) (map[string][]byte, error) {
	c, err := b.ready(ctx, b.cfg.PublishTimeout)
	if err != nil {
		return nil, err
	}
	b.ctlMu.Lock() // a consumer reads a partition once at a time
	defer b.ctlMu.Unlock()
	topic := b.names.controlState
	oldest, err := c.client.GetOffset(topic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, unavailable("control read", err)
	}
	newest, err := c.client.GetOffset(topic, 0, sarama.OffsetNewest)
	if err != nil {
		return nil, unavailable("control read", err)
	}
	out := map[string][]byte{}
	if newest <= oldest {
		return out, nil
	}
	pc, err := c.consumer.ConsumePartition(topic, 0, oldest)
	if err != nil {
		return nil, unavailable("control read", err)
	}
	defer func() { _ = pc.Close() }() // at once: the next read consumes the same partition
	for {
		select {
		case m, ok := <-pc.Messages():
			if !ok {
				return nil, fmt.Errorf("%w: kafka: control read ended early", transports.ErrUnavailable)
			}
			if m.Value == nil {
				delete(out, string(m.Key))
			} else {
				out[string(m.Key)] = m.Value
			}
			if m.Offset >= newest-1 {
				return out, nil
			}
		case err := <-pc.Errors():
			return nil, unavailable("control read", err)
		case <-ctx.Done():
			return nil, unavailable("control read", ctx.Err())
		case <-b.done:
			return nil, transports.ErrClosed
		}
	}
}
