package nats_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
// PINGs and HPUBs counted; cut closes the connections, dropping what was kept. The presence
// heartbeat connection (its CONNECT names it "heartbeats") is never held.
type holdDialer struct {
	mu          sync.Mutex
	hold        bool
	pings, pubs int
	conns       []*holdConn
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
		d.pings += bytes.Count(p, []byte("PING\r\n"))
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
	d.hold, d.pings, d.pubs = true, 0, 0
}

func (d *holdDialer) counts() (pings, pubs int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pings, d.pubs
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

// TestPublishesShareConfirmation: concurrent publishes whose PUBs the server has not read share
// one PING (the ones that come while a round trip is under way wait for the next one, together),
// and when the connection is lost before the server read them, each of them fails.
func TestPublishesShareConfirmation(t *testing.T) {
	srv := startServer(t, 0)
	defer stopServer(srv)
	d := &holdDialer{}
	b, err := nats.New(nats.Config{
		URL:             serverURL(srv),
		Prefix:          transporttest.Prefix(t),
		Name:            "test-confirm",
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
	topic := protocol.ChannelTopic("confirm")
	if err := b.Publish(topic, transporttest.NewMessage("before")); err != nil {
		t.Fatal(err)
	}

	const n = 32
	d.setHold()
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- b.Publish(topic, transporttest.NewMessage(fmt.Sprint(i))) }()
	}
	transporttest.WaitFor(t, 10*time.Second, func() error {
		if _, pubs := d.counts(); pubs < n {
			return fmt.Errorf("%d of %d PUBs written", pubs, n)
		}
		return nil
	})
	if pings, _ := d.counts(); pings != 1 {
		t.Errorf("%d concurrent publishes wrote %d PINGs while the first was unanswered, want 1", n, pings)
	}
	d.cut()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, transports.ErrUnavailable) {
				t.Errorf("a publish the server never read: %v, want ErrUnavailable", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a publish did not return after its connection was lost")
		}
	}
	transporttest.WaitFor(t, 10*time.Second, func() error { return b.Publish(topic, transporttest.NewMessage("after")) })
}
