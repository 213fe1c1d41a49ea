package wsclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// PublishOption changes a Publish or Send.
type PublishOption func(*publishOptions)

type publishOptions struct {
	msgID string
}

// WithMsgID sets the message's idempotency key (at most 64 characters). Without it the client
// makes one. Either way every attempt of the call carries the same key, so the server delivers
// the message once however many times it is retried (within its dedupe window, 2 minutes by
// default); an application that retries by itself (after a crash) passes its own key.
func WithMsgID(id string) PublishOption { return func(o *publishOptions) { o.msgID = id } }

// Ack is the server's acceptance of a message.
type Ack struct {
	MsgID    string // the idempotency key the message was sent with
	Attempts int    // how many times it was sent
	// Position is where the broker put the message in the channel (a publish, on a broker with
	// history); "" otherwise, and for a repeat of a msg_id the server had already.
	Position string
}

// Publish publishes data on channel and returns once the server acked it (the broker has it).
// data is encoded with encoding/json; a json.RawMessage is sent as it is (it must be valid
// JSON). When the connection is lost or no ack comes within Options.AckTimeout, or the server
// answers `unavailable` or `rate_limited`, the message is sent again with the same msg_id after
// the reconnect, up to Options.MaxRetries times. Other refusals return an *Error at once
// (CodeForbidden, CodeBadRequest, CodeTooLarge...). While the client is disconnected Publish
// waits for the connection: bound it with ctx.
func (c *Client) Publish(ctx context.Context, channel string, data any, opts ...PublishOption) (Ack, error) {
	return c.submit(ctx, outFrame{Type: protocol.TypePublish, Channel: channel}, data, opts)
}

// Send sends data to the services (never to clients) and returns once the server acked it,
// with the same retries as Publish.
func (c *Client) Send(ctx context.Context, data any, opts ...PublishOption) (Ack, error) {
	return c.submit(ctx, outFrame{Type: protocol.TypeSend}, data, opts)
}

func encodeData(data any) (json.RawMessage, error) {
	if raw, ok := data.(json.RawMessage); ok {
		if !json.Valid(raw) {
			return nil, &Error{Code: CodeBadRequest, Message: "data is a json.RawMessage that is not valid JSON"}
		}
		return raw, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("wsclient: encode data: %w", err)
	}
	return b, nil
}

// checkSize refuses (CodeTooLarge) a frame the server would close the connection for: larger
// than Options.MaxFrameSize with the longest id.
func (c *Client) checkSize(f outFrame) error {
	limit := c.opts.MaxFrameSize
	if limit <= 0 {
		return nil
	}
	f.ID = "18446744073709551615" // the longest frame id
	if n := len(encode(f)); n > limit {
		return &Error{Code: CodeTooLarge, Message: fmt.Sprintf("frame of %d bytes, over the limit of %d", n, limit)}
	}
	return nil
}

func (c *Client) submit(ctx context.Context, f outFrame, data any, opts []PublishOption) (Ack, error) {
	var o publishOptions
	for _, opt := range opts {
		opt(&o)
	}
	var err error
	if f.Data, err = encodeData(data); err != nil {
		return Ack{}, err
	}
	f.MsgID = o.msgID
	if f.MsgID == "" {
		f.MsgID = newMsgID()
	}
	if err := c.checkSize(f); err != nil {
		return Ack{}, err
	}
	ack := Ack{MsgID: f.MsgID}
	// Every attempt has its own frame id; a reply to any of them answers the call (a late ack
	// of an attempt that timed out is as good as the ack of the last one).
	replies := make(chan *frame, c.opts.MaxRetries+1)
	type sent struct {
		cn *conn
		id string
	}
	var attempts []sent
	defer func() {
		for _, a := range attempts {
			a.cn.forget(a.id)
		}
	}()
	var lastErr error
	for {
		cn, err := c.current(ctx)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (after %d attempts: %w)", err, ack.Attempts, lastErr)
			}
			return ack, err
		}
		f.ID = c.nextID()
		cn.expectFn(f.ID, func(r *frame) {
			select {
			case replies <- r:
			default:
			}
		})
		attempts = append(attempts, sent{cn, f.ID})
		if !cn.enqueue(ctx, encode(f)) {
			if ctx.Err() != nil {
				return ack, ctx.Err()
			}
			continue // the connection ended before the frame was handed over: not an attempt
		}
		ack.Attempts++
		reply, err := c.await(ctx, cn, replies)
		var e *Error
		switch {
		case err == nil && reply.Type == protocol.TypeAck:
			if reply.MsgID != "" {
				ack.MsgID = reply.MsgID
			}
			ack.Position = reply.Position
			return ack, nil
		case err == nil && reply.Type == protocol.TypeError:
			e = &Error{Code: reply.Code, Message: reply.Text}
			if !retryable(e.Code) {
				return ack, e
			}
			err = e
		case err == nil:
			err = fmt.Errorf("wsclient: %s answered by %q", f.Type, reply.Type)
		case errors.Is(err, ErrClosed) || ctx.Err() != nil:
			return ack, err
		}
		lastErr = err
		if ack.Attempts > c.opts.MaxRetries {
			return ack, fmt.Errorf("wsclient: %s %s: gave up after %d attempts: %w", f.Type, f.MsgID, ack.Attempts, lastErr)
		}
		c.log.Debug("retrying", "type", f.Type, "msg_id", f.MsgID, "attempt", ack.Attempts+1, "error", err)
		if e != nil { // unavailable, rate_limited: wait before sending again
			t := time.NewTimer(c.backoff(ack.Attempts))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ack, ctx.Err()
			case <-c.ctx.Done():
				t.Stop()
				return ack, ErrClosed
			}
		}
	}
}

// await waits for a reply on replies while cn lasts, AckTimeout at most.
func (c *Client) await(ctx context.Context, cn *conn, replies <-chan *frame) (*frame, error) {
	return c.awaitFor(ctx, cn, replies, c.opts.AckTimeout)
}

// awaitFor waits for a reply on replies while cn lasts, timeout at most (0: as long as ctx).
func (c *Client) awaitFor(ctx context.Context, cn *conn, replies <-chan *frame, timeout time.Duration) (*frame, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case r := <-replies:
		return r, nil
	case <-cn.done:
		select {
		case r := <-replies: // it came just before the end
			return r, nil
		default:
		}
		return nil, fmt.Errorf("%w: %v", ErrConnectionLost, cn.cause())
	case <-expired:
		return nil, ErrAckTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, ErrClosed
	}
}
