// Package wstest has test helpers: in-process gateway nodes on httptest servers and a plain
// WebSocket client that reads frames with deadlines (never sleeps).
package wstest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgateway/gateway/internal/poll"
)

// Timeout bounds every wait of these helpers.
const Timeout = 10 * time.Second

// Frame is a decoded server frame.
type Frame map[string]any

// Str returns a string field ("" when absent).
func (f Frame) Str(k string) string { s, _ := f[k].(string); return s }

// Bool returns a bool field.
func (f Frame) Bool(k string) bool { b, _ := f[k].(bool); return b }

// Data returns the data field re-encoded as JSON.
func (f Frame) Data() string { b, _ := json.Marshal(f["data"]); return string(b) }

// Client is a test WebSocket client.
type Client struct {
	t    testing.TB
	Conn *websocket.Conn
	Resp *http.Response
}

// Dial connects to the node at base (http://host:port) with token ("" for none) and returns
// the client and the welcome frame. It fails the test if the upgrade is refused.
func Dial(t testing.TB, base, token string) (*Client, Frame) {
	t.Helper()
	c, resp, err := TryDial(t, base, token, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", base, err, status)
	}
	w := c.Expect("welcome")
	return c, w
}

// TryDial connects and returns the error and response of a refused upgrade.
func TryDial(t testing.TB, base, token string, header http.Header) (*Client, *http.Response, error) {
	t.Helper()
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	if token != "" {
		url += "?token=" + token
	}
	d := websocket.Dialer{HandshakeTimeout: Timeout, WriteBufferSize: 256 << 10}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	c := &Client{t: t, Conn: conn, Resp: resp}
	t.Cleanup(func() { conn.Close() })
	return c, resp, nil
}

// Send writes one frame (a map or struct, encoded as JSON; a string or []byte as-is).
func (c *Client) Send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.Conn.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Next reads the next frame, failing the test after Timeout.
func (c *Client) Next() Frame {
	c.t.Helper()
	f, err := c.Read(Timeout)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// Read reads the next frame within d.
func (c *Client) Read(d time.Duration) (Frame, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.Conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("frame %q is not JSON: %w", b, err)
	}
	return f, nil
}

// Expect reads the next frame and checks its type.
func (c *Client) Expect(typ string) Frame {
	c.t.Helper()
	f := c.Next()
	if f.Str("type") != typ {
		c.t.Fatalf("got frame %v, want type %q", f, typ)
	}
	return f
}

// Subscribe subscribes and returns the subscribed frame (failing on anything else).
func (c *Client) Subscribe(channel string, since ...string) Frame {
	c.t.Helper()
	f := map[string]any{"type": "subscribe", "id": "sub-" + channel, "channel": channel}
	if len(since) > 0 {
		f["since"] = since[0]
	}
	c.Send(f)
	return c.Expect("subscribed")
}

// Publish publishes and waits for the ack (failing on anything else). A client subscribed to
// the channel may get its own message before or after the ack: use Send and ExpectAll then.
func (c *Client) Publish(channel string, data any, msgID string) Frame {
	c.t.Helper()
	c.Send(map[string]any{"type": "publish", "id": "pub", "channel": channel, "data": data, "msg_id": msgID})
	return c.Expect("ack")
}

// ExpectAll reads len(types) frames and checks they have these types, in any order; it returns
// them by type.
func (c *Client) ExpectAll(types ...string) map[string]Frame {
	c.t.Helper()
	want := map[string]int{}
	for _, typ := range types {
		want[typ]++
	}
	out := map[string]Frame{}
	for range types {
		f := c.Next()
		typ := f.Str("type")
		if want[typ] == 0 {
			c.t.Fatalf("got frame %v, want one of %v", f, types)
		}
		want[typ]--
		out[typ] = f
	}
	return out
}

// Closed waits until the server closes the connection and returns the close error.
func (c *Client) Closed() *websocket.CloseError {
	c.t.Helper()
	deadline := time.Now().Add(Timeout)
	for time.Now().Before(deadline) {
		_, err := c.Read(time.Until(deadline))
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce
		}
		return &websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: err.Error()}
	}
	c.t.Fatal("connection not closed in time")
	return nil
}

// DialConn is Dial over a connection the caller made (to set socket options).
func DialConn(t testing.TB, conn net.Conn, base, token string) (*Client, Frame) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: Timeout, NetDial: func(string, string) (net.Conn, error) { return conn, nil }}
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws?token=" + token
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &Client{t: t, Conn: ws}
	return c, c.Expect("welcome")
}

// WaitFor polls fn until it returns nil, failing the test with its last error after Timeout.
func WaitFor(t testing.TB, fn func() error) {
	t.Helper()
	poll.Until(t, Timeout, fn)
}
