package jetstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/transports"
)

var _ transports.ControlStore = (*Broker)(nil)

// controlBucket is the KV bucket of the control records, opened (or created) on first use.
type controlBucket struct {
	mu sync.Mutex
	kv jetstream.KeyValue
}

func (b *Broker) controlBucketName() string { return transports.SafeName(b.cfg.Prefix) + "_control" }

func (b *Broker) controlKV(ctx context.Context) (jetstream.KeyValue, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	b.ctl.mu.Lock()
	defer b.ctl.mu.Unlock()
	if b.ctl.kv != nil {
		return b.ctl.kv, nil
	}
	kv, err := b.openBucket(ctx, b.controlBucketName(), "control")
	if err != nil {
		return nil, err
	}
	b.ctl.kv = kv
	return kv, nil
}

// KV keys allow few characters: a record's key is its base64url form.
func controlKVKey(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// PutControl implements transports.ControlStore: one key of the prefix's control bucket.
func (b *Broker) PutControl(ctx context.Context, key string, value []byte) error {
	kv, err := b.controlKV(ctx)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, controlKVKey(key), value)
	return err
}

// DeleteControl implements transports.ControlStore (a purge: the bucket keeps no tombstone history).
func (b *Broker) DeleteControl(ctx context.Context, key string) error {
	kv, err := b.controlKV(ctx)
	if err != nil {
		return err
	}
	err = kv.Purge(ctx, controlKVKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// ListControl implements transports.ControlStore: every live key of the bucket.
func (b *Broker) ListControl(ctx context.Context) (map[string][]byte, error) {
	kv, err := b.controlKV(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := b.listKV(ctx, kv, ">", true, false)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		raw, err := base64.RawURLEncoding.DecodeString(e.key)
		if err != nil {
			continue // not a key of ours
		}
		out[string(raw)] = e.value
	}
	return out, nil
}

// openBucket creates the KV bucket name of this prefix (what: "presence", "control"), or opens it
// when it exists: one value per key, file storage, the streams' replicas.
func (b *Broker) openBucket(ctx context.Context, name, what string) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "wsgateway " + what + " records of prefix " + b.cfg.Prefix,
		History:     1,
		Replicas:    b.cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = b.js.KeyValue(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s bucket %s: %w", what, name, err)
	}
	return kv, nil
}
