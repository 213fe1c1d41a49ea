package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/klauspost/compress/flate"
)

// The client side of the WebSocket protocol, by hand: the upgrade request, masked client
// frames, and a parser of server frames that looks at a frame where it lies in the read buffer
// (no copy, no allocation) unless it spans two reads. Receiving hundreds of thousands of frames
// a second on one core is what the load tool is for; gorilla's reader, one goroutine and a few
// copies per frame, made wsbench the bottleneck of the fan-out runs.

// WebSocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// maxFrame bounds a server frame (and a fragmented message): a frame announcing more is an error.
const maxFrame = 16 << 20

var errFrame = errors.New("malformed frame")

// dialWS opens a WebSocket connection to u (ws or wss) with an optional bearer token, from local
// (nil: the kernel's choice), offering permessage-deflate when deflate is set. It returns the
// connection, the bytes that followed the server's 101 response (the start of the first frames)
// and whether the server accepted permessage-deflate, or, for a refused upgrade, an error naming
// the HTTP status ("http 401").
func dialWS(ctx context.Context, u *url.URL, token string, local *net.TCPAddr, timeout time.Duration, deflate bool) (net.Conn, []byte, bool, error) {
	nc, err := dialHTTP(ctx, u, local, timeout)
	if err != nil {
		return nil, nil, false, err
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	path := u.RequestURI()
	var req strings.Builder
	req.WriteString("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
	req.WriteString("Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsbench\r\n")
	if deflate { // no context takeover either way: each message inflates on its own
		req.WriteString("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n")
	}
	if token != "" {
		req.WriteString("Authorization: Bearer " + token + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := nc.Write([]byte(req.String())); err != nil {
		nc.Close()
		return nil, nil, false, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, nil, false, fmt.Errorf("upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		nc.Close()
		return nil, nil, false, &statusError{resp.StatusCode}
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != acceptKey(key) {
		nc.Close()
		return nil, nil, false, fmt.Errorf("upgrade: bad Sec-WebSocket-Accept %q", got)
	}
	rest, _ := br.Peek(br.Buffered())
	_ = nc.SetDeadline(time.Time{})
	accepted := strings.HasPrefix(strings.TrimSpace(resp.Header.Get("Sec-WebSocket-Extensions")), "permessage-deflate")
	return nc, append([]byte(nil), rest...), accepted, nil
}

// statusError is an upgrade the server refused.
type statusError struct{ status int }

func (e *statusError) Error() string { return fmt.Sprintf("http %d", e.status) }

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// appendClientFrame appends a final client frame (masked, as clients must) of type op.
func appendClientFrame(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= key[i&3]
	}
	return b
}

// frameParser splits the byte stream of a server into frames. Its zero value is ready.
type frameParser struct {
	hdr       [10]byte
	hn        int  // header bytes held
	inPayload bool // the header is complete, left payload bytes are to come
	left      int64
	op        byte // opcode of the current frame
	fin       bool
	acc       []byte // data frame payload spanning reads, or a fragmented message so far
	ctl       []byte // control frame payload spanning reads
	mop       byte   // opcode of the fragmented message being assembled (0: none)
	// inflate is set when permessage-deflate was negotiated: a message whose first frame has
	// RSV1 set is inflated before it is handed over. Without it, RSV1 is an error.
	inflate *inflater
	mz      bool // the message being assembled is compressed
}

// feed parses p and calls fn with each complete frame (a fragmented message once, whole). The
// payload is valid only during the call. An error from fn stops the parsing and is returned.
func (f *frameParser) feed(p []byte, fn func(op byte, payload []byte) error) error {
	for len(p) > 0 {
		if !f.inPayload {
			if f.hn == 0 && f.mop == 0 && len(p) >= 2 && p[0]&0x80 != 0 && p[0]&0x0f != opContinuation {
				// Fast path: a whole final frame lies in p.
				if hl := headerLen(p); len(p) >= hl {
					n, err := payloadLen(p[:hl])
					if err != nil {
						return err
					}
					if p[0]&0x0f >= opClose && n > 125 {
						return errFrame // control frames are short
					}
					if int64(len(p)-hl) >= n {
						payload := p[hl : hl+int(n)]
						if p[0]&rsv1 != 0 {
							if payload, err = f.inflated(p[0]&0x0f, payload); err != nil {
								return err
							}
						}
						if err := fn(p[0]&0x0f, payload); err != nil {
							return err
						}
						p = p[hl+int(n):]
						continue
					}
				}
			}
			need := headerLen(f.hdr[:f.hn])
			for f.hn < need && len(p) > 0 {
				f.hdr[f.hn] = p[0]
				f.hn++
				p = p[1:]
				need = headerLen(f.hdr[:f.hn])
			}
			if f.hn < need {
				return nil
			}
			n, err := payloadLen(f.hdr[:f.hn])
			if err != nil {
				return err
			}
			f.op, f.fin, f.left, f.inPayload, f.hn = f.hdr[0]&0x0f, f.hdr[0]&0x80 != 0, n, true, 0
			if f.hdr[0]&rsv1 != 0 {
				if f.inflate == nil || f.op == opContinuation || f.op >= opClose {
					return errFrame // RSV1 only on the first frame of a data message, when negotiated
				}
				f.mz = true
			}
			if f.op >= opClose && (!f.fin || n > 125) {
				return errFrame // control frames are short and never fragmented
			}
			if f.op < opClose && int64(len(f.acc))+n > maxFrame {
				return errFrame
			}
		}
		k := int(min(f.left, int64(len(p))))
		if f.op >= opClose {
			f.ctl = append(f.ctl, p[:k]...)
		} else {
			f.acc = append(f.acc, p[:k]...)
		}
		f.left -= int64(k)
		p = p[k:]
		if f.left > 0 {
			return nil
		}
		f.inPayload = false
		if err := f.complete(fn); err != nil {
			return err
		}
	}
	return nil
}

// complete hands over the frame whose payload was gathered.
func (f *frameParser) complete(fn func(op byte, payload []byte) error) error {
	if f.op >= opClose {
		err := fn(f.op, f.ctl)
		f.ctl = f.ctl[:0]
		return err
	}
	op := f.op
	switch {
	case op == opContinuation && f.mop == 0:
		return errFrame
	case op == opContinuation:
		op = f.mop
	case f.mop != 0:
		return errFrame // a new message inside a fragmented one
	}
	if !f.fin {
		f.mop = op
		return nil
	}
	f.mop = 0
	payload := f.acc
	if f.mz {
		f.mz = false
		var err error
		if payload, err = f.inflate.inflate(payload); err != nil {
			return err
		}
	}
	err := fn(op, payload)
	f.acc = nil // hold no buffer between frames
	return err
}

// rsv1 marks the first frame of a compressed message (RFC 7692).
const rsv1 = 0x40

// inflated is the payload of a whole compressed frame of type op, inflated.
func (f *frameParser) inflated(op byte, payload []byte) ([]byte, error) {
	if f.inflate == nil || op >= opClose {
		return nil, errFrame
	}
	return f.inflate.inflate(payload)
}

// inflater inflates the messages of one connection (permessage-deflate without context
// takeover: each on its own). Its buffer is reused: a result is valid until the next call.
type inflater struct {
	r   io.ReadCloser
	in  []byte // the message and deflateEnd
	src bytes.Reader
	out bytes.Buffer
}

// deflateEnd is what RFC 7692 has the receiver append to a message: the empty stored block the
// sender dropped, then a final empty block so that the reader ends cleanly.
var deflateEnd = []byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}

func (z *inflater) inflate(p []byte) ([]byte, error) {
	// One bytes.Reader over the message and the end: flate reads an io.ByteReader as it is,
	// anything else through a bufio.Reader of its own, made for every message.
	z.in = append(append(z.in[:0], p...), deflateEnd...)
	z.src.Reset(z.in)
	if z.r == nil {
		z.r = flate.NewReader(&z.src)
	} else if err := z.r.(flate.Resetter).Reset(&z.src, nil); err != nil {
		return nil, err
	}
	z.out.Reset()
	if _, err := io.Copy(&z.out, io.LimitReader(z.r, maxFrame+1)); err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if z.out.Len() > maxFrame {
		return nil, errFrame
	}
	return z.out.Bytes(), nil
}

// headerLen is the length of the frame header that starts with h, as far as h tells (2 until
// the length byte is known).
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	switch h[1] & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

// payloadLen reads the payload length from a complete server (unmasked) frame header.
func payloadLen(h []byte) (int64, error) {
	if h[1]&0x80 != 0 || h[0]&0x30 != 0 { // masked, or extension bits the gateway never sets (RSV1: the caller's check)
		return 0, errFrame
	}
	var n uint64
	switch h[1] & 0x7f {
	case 126:
		n = uint64(h[2])<<8 | uint64(h[3])
	case 127:
		for _, b := range h[2:10] {
			n = n<<8 | uint64(b)
		}
	default:
		n = uint64(h[1] & 0x7f)
	}
	if n > maxFrame {
		return 0, errFrame
	}
	return int64(n), nil
}

// dialHTTP opens the TCP connection (TLS for wss and https) a handshake of u starts on, from
// local (nil: the kernel's choice), with a deadline of timeout or ctx's, whichever comes first.
func dialHTTP(ctx context.Context, u *url.URL, local *net.TCPAddr, timeout time.Duration) (net.Conn, error) {
	secure := u.Scheme == "wss" || u.Scheme == "https"
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if secure {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: -1}
	if local != nil {
		d.LocalAddr = local
	}
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = nc.SetDeadline(deadline)
	if secure {
		tc := tls.Client(nc, &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}})
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	return nc, nil
}
