package nats_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/nats"
	"github.com/wsgateway/gateway/transports/transporttest"
)

// holdDialer dials the server for nats.go (natsgo.SetCustomDialer). While held, what the node's
// main connection writes is kept back (the write succeeds, the server reads nothing) and its
// HPUBs counted; cut closes the connections, dropping what was kept. The presence
// heartbeat connection (its CONNECT names it "heartbeats") is never held.
type holdDialer struct {
	mu    sync.Mutex
	hold  bool
	pubs  int
	conns []*holdConn
}

type holdConn struct {
	net.Conn
	d          *holdDialer
	named, hbs bool // the CONNECT was seen; this is the heartbeat connection
}

func (d *holdDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	hc := &holdConn{Conn: c, d: d}
	d.mu.Lock()
	d.conns = append(d.conns, hc)
	d.mu.Unlock()
	return hc, nil
}

func (c *holdConn) Write(p []byte) (int, error) {
	d := c.d
	d.mu.Lock()
	if !c.named && bytes.HasPrefix(p, []byte("CONNECT ")) {
		c.named, c.hbs = true, bytes.Contains(p, []byte("heartbeats"))
	}
	if d.hold && !c.hbs {
		d.pubs += bytes.Count(p, []byte("HPUB "))
		d.mu.Unlock()
		return len(p), nil
	}
	d.mu.Unlock()
	return c.Conn.Write(p)
}

func (d *holdDialer) setHold() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hold, d.pubs = true, 0
}

func (d *holdDialer) written() (pubs int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pubs
}

// cut closes the held connections: what they kept back is lost. New ones are not held.
func (d *holdDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hold = false
	for _, c := range d.conns {
		if !c.hbs {
			_ = c.Conn.Close()
		}
	}
}

// TestPublishFailsOnNewConnection: a publish whose PUB went out on a connection that was lost
// before the server read it fails, even when its PING goes out, and is answered, on the
// connection nats.go made again meanwhile.
func TestPublishFailsOnNewConnection(t *testing.T) {
	srv := startServer(t, 0)
	defer stopServer(srv)
	d := &holdDialer{}
	b, err := nats.New(nats.Config{
		URL:             serverURL(srv),
		Prefix:          transporttest.Prefix(t),
		Name:            "test-epoch",
		Timeout:         2 * time.Second,
		ReconnectWait:   20 * time.Millisecond,
		ReconnectJitter: time.Millisecond,
		Options:         []natsgo.Option{natsgo.SetCustomDialer(d)},
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	transporttest.WaitFor(t, 10*time.Second, func() error { return b.Ping(ctx) })
	topic := protocol.ChannelTopic("epoch")
	if err := b.Publish(topic, transporttest.NewMessage("before")); err != nil {
		t.Fatal(err)
	}

	b.AfterPub(func() {
		b.AfterPub(nil)
		transporttest.WaitFor(t, 10*time.Second, func() error {
			if d.written() < 1 {
				return errors.New("the PUB is not written yet")
			}
			return nil
		})
		d.cut() // the server never reads the PUB
		transporttest.WaitFor(t, 10*time.Second, func() error { return b.Ping(ctx) })
	})
	d.setHold()
	if err := b.Publish(topic, transporttest.NewMessage("lost")); !errors.Is(err, transports.ErrUnavailable) {
		t.Fatalf("a publish the server never read: %v, want ErrUnavailable", err)
	}
	if err := b.Publish(topic, transporttest.NewMessage("after")); err != nil {
		t.Fatalf("a publish on the new connection: %v", err)
	}
}
