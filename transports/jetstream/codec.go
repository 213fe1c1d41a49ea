package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
)

// errBadHeader is returned by Publish for metadata that cannot travel as a NATS header.
var errBadHeader = errors.New("metadata cannot be sent as a NATS header")

// errStopping is what the codec of a subscription that is stopping answers the adapter, so the
// adapter drops the message (it is redelivered to another group member) instead of handing it on.
var errStopping = errors.New("subscription stopping")

// codec is the watermill-nats Marshaler/Unmarshaler: the payload is the NATS message body, each
// metadata entry a header, the UUID the _watermill_message_uuid header (as the adapter's own
// NATSMarshaler). Decoding is lenient so that what `nats pub` sends is accepted: the first value of
// a repeated header is taken, Nats-* headers are skipped, and a message without a UUID header gets
// "<epoch>-<stream sequence>" (stable across nodes and redeliveries), or "" on core NATS. Channel
// messages get MetaPosition from their stream sequence.
type codec struct {
	b    *Broker
	gate *gate // nil except for a subscription through the adapter
}

var _ wmnats.MarshalerUnmarshaler = (*codec)(nil)

// Marshal implements wmnats.Marshaler. MetaPosition is not sent: the receiving node sets it.
func (c *codec) Marshal(subject string, m *message.Message) (*nats.Msg, error) {
	hdr := make(nats.Header, len(m.Metadata)+1)
	if m.UUID != "" {
		hdr.Set(wmnats.WatermillUUIDHdr, m.UUID)
	}
	for k, v := range m.Metadata {
		if k == protocol.MetaPosition {
			continue
		}
		if !validHeaderKey(k) || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf("%w: key %q", errBadHeader, k)
		}
		hdr.Set(k, v)
	}
	return &nats.Msg{Subject: subject, Data: m.Payload, Header: hdr}, nil
}

func validHeaderKey(k string) bool {
	if k == "" || strings.HasPrefix(strings.ToLower(k), "nats-") || k == wmnats.WatermillUUIDHdr {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}

// Unmarshal implements wmnats.Unmarshaler, for what arrives through the adapter.
func (c *codec) Unmarshal(nm *nats.Msg) (*message.Message, error) {
	if c.gate != nil && !c.gate.enter() {
		return nil, errStopping
	}
	var stream string
	var seq uint64
	if strings.HasPrefix(nm.Reply, "$JS.ACK.") {
		if md, err := nm.Metadata(); err == nil {
			stream, seq = md.Stream, md.Sequence.Stream
		}
	}
	return c.decode(nm.Header, nm.Data, stream, seq), nil
}

// fromJetStream decodes what a consumer of the nats.go jetstream package delivers.
func (c *codec) fromJetStream(m jetstream.Msg) *message.Message {
	var stream string
	var seq uint64
	var stored time.Time
	if md, err := m.Metadata(); err == nil {
		stream, seq, stored = md.Stream, md.Sequence.Stream, md.Timestamp
	}
	msg := c.decode(m.Headers(), m.Data(), stream, seq)
	if !stored.IsZero() && msg.Metadata.Get(protocol.MetaPosition) != "" {
		msg.Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(stored.UnixMilli(), 10))
	}
	return msg
}

func (c *codec) decode(hdr nats.Header, data []byte, stream string, seq uint64) *message.Message {
	md := make(message.Metadata, len(hdr))
	for k, v := range hdr {
		if len(v) == 0 || k == wmnats.WatermillUUIDHdr || k == protocol.MetaPosition || strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		md[k] = v[0]
	}
	uuid := hdr.Get(wmnats.WatermillUUIDHdr)
	if seq > 0 {
		epoch := c.b.epochFor(stream)
		if stream == c.b.channels {
			md[protocol.MetaPosition] = protocol.Position{Epoch: epoch, Lo: seq}.String()
		}
		if uuid == "" {
			uuid = epoch + "-" + strconv.FormatUint(seq, 10)
		}
	}
	msg := message.NewMessage(uuid, data)
	msg.Metadata = md
	return msg
}

// epochFor is the known epoch of a stream, asked from the broker when the node has none yet.
func (b *Broker) epochFor(stream string) string {
	if e := b.cachedEpoch(stream); e != "" {
		return e
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
	defer cancel()
	if _, e, err := b.streamInfo(ctx, stream); err == nil {
		return e
	}
	return "jsunknown" // never equal to a real epoch, so a resume from it is refused
}

// gate closes a subscription made through the watermill-nats subscriber without racing it. That
// subscriber closes its output channel when its context ends while a message it already
// unmarshalled may still be on its way to that channel, which would panic. So a subscription
// first closes its gate (the codec then refuses new messages), takes every message that got
// through, and only then cancels the adapter's context.
type gate struct {
	mu       sync.Mutex
	drained  *sync.Cond
	closed   bool
	inflight int
}

func newGate() *gate {
	g := &gate{}
	g.drained = sync.NewCond(&g.mu)
	return g
}

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.inflight++
	return true
}

// leave is called for each message taken from the adapter's channel; it reports whether the
// gate is open.
func (g *gate) leave() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if g.inflight == 0 {
		g.drained.Broadcast()
	}
	return !g.closed
}

// closeAndWait closes the gate and waits until every message that entered was taken.
func (g *gate) closeAndWait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for g.inflight > 0 {
		g.drained.Wait()
	}
}

// quietLogger drops the adapter's "cannot unmarshal" errors caused by errStopping.
type quietLogger struct{ watermill.LoggerAdapter }

func (l quietLogger) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, errStopping) {
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l quietLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(fields)}
}
