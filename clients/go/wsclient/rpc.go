package wsclient

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// RPC calls method on the application's backend through the server's rpc hook (docs/hooks.md)
// and returns the data of its `rpc_result` (nil when the result has none). data is encoded like
// Publish's; nil sends no data. A refusal is an *Error: the backend's own code (such as
// "not_member") or the gateway's (CodeUnavailable when the backend did not answer in time,
// CodeNotFound, CodeRateLimited, CodeBadRequest...: docs/protocol.md).
//
// An RPC is sent once and never again: when the connection is lost before the result the
// method may or may not have run, and the error wraps ErrConnectionLost. RPC waits for the
// connection while the client is disconnected, and for the result as long as ctx allows (no
// AckTimeout): bound it with ctx.
func (c *Client) RPC(ctx context.Context, method string, data any) (json.RawMessage, error) {
	if method == "" || len(method) > protocol.MaxMethodLen {
		return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("method must be 1 to %d bytes", protocol.MaxMethodLen)}
	}
	f := outFrame{Type: protocol.TypeRPC, Method: method}
	if data != nil {
		var err error
		if f.Data, err = encodeData(data); err != nil {
			return nil, err
		}
	}
	if err := c.checkSize(f); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, f, protocol.TypeRPCResult)
	if err != nil {
		return nil, err
	}
	if len(r.Data) == 0 {
		return nil, nil
	}
	return r.Data, nil
}

// Refresh extends the connection without reconnecting: it sends a `refresh` frame with token (a
// new token of the same user, checked as at the upgrade) or, with token "", asks the server's
// refresh hook to decide. It returns the connection's new expiry: the zero time when it has
// none. A refusal is an *Error (CodeUnauthorized for a bad token, the hook's own code...).
//
// A token the server accepted is kept for the reconnections: it replaces Options.Token for every
// later connection, and with Options.TokenFunc it is the token of the next connection attempt.
// Like RPC, Refresh is sent once, waits for the connection while disconnected and for the
// answer as long as ctx allows.
func (c *Client) Refresh(ctx context.Context, token string) (time.Time, error) {
	if len(token) > protocol.MaxTokenLen {
		return time.Time{}, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("token is longer than %d bytes", protocol.MaxTokenLen)}
	}
	r, err := c.call(ctx, outFrame{Type: protocol.TypeRefresh, Token: token}, protocol.TypeRefreshed)
	if err != nil {
		return time.Time{}, err
	}
	if token != "" {
		c.mu.Lock()
		c.token = token
		c.useToken = c.opts.TokenFunc != nil
		c.mu.Unlock()
	}
	return unixTime(r.Expires), nil
}

// call sends f once on the live connection (waiting for one) and waits for its reply, of type
// want or an error, as long as ctx and the connection last.
func (c *Client) call(ctx context.Context, f outFrame, want string) (*frame, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	f.ID = c.nextID()
	reply := cn.expect(f.ID)
	defer cn.forget(f.ID)
	if !cn.enqueue(ctx, encode(f)) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w before %s was sent: %v", ErrConnectionLost, f.Type, cn.cause())
	}
	r, err := c.awaitFor(ctx, cn, reply, 0)
	switch {
	case err != nil:
		return nil, err
	case r.Type == protocol.TypeError:
		return nil, &Error{Code: r.Code, Message: r.Text}
	case r.Type != want:
		return nil, &Error{Code: CodeInternal, Message: fmt.Sprintf("%s answered by %q", f.Type, r.Type)}
	}
	return r, nil
}

// unixTime is the time of unix seconds s; the zero time for 0.
func unixTime(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}
