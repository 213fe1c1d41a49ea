package redis

import (
	"context"

	"github.com/wsgateway/gateway/transports"
)

var _ transports.ControlStore = (*Broker)(nil)

// controlKey is the hash of the control records of prefix.
func controlKey(prefix string) string { return "{" + prefix + ":control}" }

// PutControl implements transports.ControlStore: one field of the prefix's control hash.
func (b *Broker) PutControl(ctx context.Context, key string, value []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	return b.client.HSet(ctx, controlKey(b.cfg.Prefix), key, value).Err()
}

// DeleteControl implements transports.ControlStore.
func (b *Broker) DeleteControl(ctx context.Context, key string) error {
	if err := b.usable(); err != nil {
		return err
	}
	return b.client.HDel(ctx, controlKey(b.cfg.Prefix), key).Err()
}

// ListControl implements transports.ControlStore: the whole hash (HGETALL).
func (b *Broker) ListControl(ctx context.Context) (map[string][]byte, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	all, err := b.client.HGetAll(ctx, controlKey(b.cfg.Prefix)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(all))
	for k, v := range all {
		out[k] = []byte(v)
	}
	return out, nil
}
