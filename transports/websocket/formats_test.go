package websocket

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/wsgateway/gateway/protocol"
)

// held is what c holds for channel while it replays (Deliver holds rather than sends then), as
// strings.
func held(c *Conn, channel string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, h := range c.subs[channel].held {
		out = append(out, string(h.frame.b))
	}
	return out
}

// TestDeliverPerFormat: a connection gets the frame of its format; the encoder of the other
// formats is called once per message whatever the number of their connections, and not at all
// when none is on the channel; Except and More are honoured.
func TestDeliverPerFormat(t *testing.T) {
	h := newTestHub(t, Config{})
	native := []*Conn{h.detachedConn("n1"), h.detachedConn("n2")}
	other := []*Conn{newConn(h, Identity{Session: "p1", Format: FormatPusher}), newConn(h, Identity{Session: "p2", Format: FormatPusher})}
	calls := 0
	enc := func(f Format) Encoded {
		calls++
		if f != FormatPusher {
			t.Errorf("encoder asked for format %d", f)
		}
		return Encoded{Frame: []byte("P1"), Except: "p2", More: []Encoded{{Frame: []byte("P2")}, {Frame: nil, Except: "p1"}}}
	}
	for _, c := range native {
		if err := h.Join(context.Background(), c, "ch"); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.Deliver("ch", protocol.Position{}, []byte("N"), enc); n != 2 || calls != 0 {
		t.Fatalf("native subscribers only: %d frames, %d encoder calls; want 2 and 0", n, calls)
	}
	for _, c := range other {
		if err := h.Join(context.Background(), c, "ch"); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.Deliver("ch", protocol.Position{}, []byte("N"), enc); n != 5 || calls != 1 {
		t.Fatalf("%d frames, %d encoder calls; want 5 and 1", n, calls)
	}
	for _, c := range native {
		if got := fmt.Sprint(held(c, "ch")); got != "[N N]" {
			t.Errorf("%s holds %s", c.ID, got)
		}
	}
	if got := fmt.Sprint(held(other[0], "ch")); got != "[P1 P2]" {
		t.Errorf("p1 holds %s", got)
	}
	if got := fmt.Sprint(held(other[1], "ch")); got != "[P2]" {
		t.Errorf("p2 (excepted from P1) holds %s", got)
	}
	// Without an encoder, the other formats get nothing.
	if n := h.Deliver("ch", protocol.Position{}, []byte("N"), nil); n != 2 {
		t.Fatalf("no encoder: %d frames, want 2", n)
	}
}

// TestConnFormat: a connection has its identity's format, native by default.
func TestConnFormat(t *testing.T) {
	h := newTestHub(t, Config{})
	if c := newConn(h, Identity{Session: "p", Format: FormatPusher}); c.Format() != FormatPusher {
		t.Fatalf("format %d, want FormatPusher", c.Format())
	}
	if c := h.detachedConn("n"); c.Format() != FormatNative {
		t.Fatalf("format %d, want FormatNative", c.Format())
	}
}

// TestDeliverPerFormatCompressed: with compression, each format's frames (the native one, and
// the other format's Frame and More) are compressed once per message for all the connections of
// that format that negotiated it; the others of the same format get the plain frames.
func TestDeliverPerFormatCompressed(t *testing.T) {
	h := newTestHub(t, Config{Compression: true})
	long := func(s string) []byte { return []byte(strings.Repeat(s, 200)) }
	var conns []*Conn
	for i, f := range []Format{FormatNative, FormatNative, FormatNative, FormatPusher, FormatPusher, FormatPusher} {
		c := newConn(h, Identity{Session: fmt.Sprint("c", i), Format: f})
		c.deflate = i%3 != 0 // c0 and c3 did not negotiate it
		if err := h.Join(context.Background(), c, "ch"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	enc := func(Format) Encoded {
		return Encoded{Frame: long("P1"), More: []Encoded{{Frame: long("P2")}, {Frame: []byte("short")}}}
	}
	if n := h.Deliver("ch", protocol.Position{}, long("N"), enc); n != 3+3*3 {
		t.Fatalf("%d frames, want 12", n)
	}
	if c := h.deflate.count.Load(); c != 3 { // N, P1 and P2: "short" is under minDeflate
		t.Fatalf("%d compressions, want 3", c)
	}
	for _, c := range conns {
		c.mu.Lock()
		fs := c.subs["ch"].held
		c.mu.Unlock()
		for j, f := range fs {
			want := c.deflate && len(f.frame.b) > 5
			if f.frame.z != want {
				t.Fatalf("%s frame %d: compressed %v, want %v", c.ID, j, f.frame.z, want)
			}
		}
	}
	// The compressing connections of one format share the bytes.
	if a, b := conns[1].subs["ch"].held[0].frame.b, conns[2].subs["ch"].held[0].frame.b; &a[0] != &b[0] {
		t.Fatal("two native connections got two compressions")
	}
	if a, b := conns[4].subs["ch"].held[1].frame.b, conns[5].subs["ch"].held[1].frame.b; &a[0] != &b[0] {
		t.Fatal("two Pusher connections got two compressions of More")
	}
}
