package memory

import (
	"context"
	"maps"
	"sync"

	"github.com/wsgateway/gateway/transports"
)

// control is the broker's control store: the records of every node prefix, in process.
type control struct {
	mu      sync.Mutex
	records map[string]map[string][]byte // prefix -> key -> value
}

var _ transports.ControlStore = (*Node)(nil)

// PutControl implements transports.ControlStore: the record is kept by the shared Broker, so
// every Node of the same prefix sees it.
func (n *Node) PutControl(_ context.Context, key string, value []byte) error {
	if n.closed() {
		return transports.ErrClosed
	}
	c := &n.broker.control
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.records == nil {
		c.records = map[string]map[string][]byte{}
	}
	if c.records[n.prefix] == nil {
		c.records[n.prefix] = map[string][]byte{}
	}
	c.records[n.prefix][key] = append([]byte(nil), value...)
	return nil
}

// DeleteControl implements transports.ControlStore.
func (n *Node) DeleteControl(_ context.Context, key string) error {
	if n.closed() {
		return transports.ErrClosed
	}
	c := &n.broker.control
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.records[n.prefix], key)
	return nil
}

// ListControl implements transports.ControlStore.
func (n *Node) ListControl(context.Context) (map[string][]byte, error) {
	if n.closed() {
		return nil, transports.ErrClosed
	}
	c := &n.broker.control
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.records[n.prefix]), nil
}
