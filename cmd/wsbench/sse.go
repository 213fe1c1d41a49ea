package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The client side of GET /sse (-transport sse), by hand as for WebSockets: the request, then a
// parser of the chunked response body that hands each event's data (one frame) to the same
// frame handler as WebSocket text frames.

// dialSSE opens GET <u>?channel=<channel> (u: the http(s) URL of /sse) with an optional bearer
// token, from local (nil: the kernel's choice). It returns the connection, the bytes that
// followed the response's headers, and whether the body is chunked; a refused request is an
// error naming the HTTP status ("http 403").
func dialSSE(ctx context.Context, u *url.URL, channel, token string, local *net.TCPAddr, timeout time.Duration) (net.Conn, []byte, bool, error) {
	nc, err := dialHTTP(ctx, u, local, timeout)
	if err != nil {
		return nil, nil, false, err
	}
	q := url.Values{"channel": {channel}}
	req := "GET " + u.Path + "?" + q.Encode() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: text/event-stream\r\nUser-Agent: wsbench\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		nc.Close()
		return nil, nil, false, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, nil, false, fmt.Errorf("sse: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		nc.Close()
		return nil, nil, false, &statusError{resp.StatusCode}
	}
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	rest, _ := br.Peek(br.Buffered())
	_ = nc.SetDeadline(time.Time{})
	return nc, append([]byte(nil), rest...), chunked, nil
}

// sseParser splits a (chunked) event-stream body into the data of its events, each a frame.
// Its zero value reads an unchunked body; set chunked for a chunked one.
type sseParser struct {
	chunked bool
	left    int    // bytes of the current chunk still to come
	crlf    int    // bytes of the CRLF after a chunk still to skip
	size    []byte // a chunk-size line so far
	body    []byte // body bytes not yet split into lines
}

var dataField = []byte("data: ")

// feed parses p and calls fn(opText, data) with each event's data line. The data is valid only
// during the call. An error from fn stops the parsing and is returned; what is left is kept
// for the next feed.
func (s *sseParser) feed(p []byte, fn func(op byte, payload []byte) error) error {
	ended := false
	for len(p) > 0 && !ended {
		switch {
		case !s.chunked:
			s.body = append(s.body, p...)
			p = nil
		case s.left > 0:
			n := min(s.left, len(p))
			s.body = append(s.body, p[:n]...)
			s.left -= n
			p = p[n:]
			if s.left == 0 {
				s.crlf = 2
			}
		case s.crlf > 0:
			p = p[1:]
			s.crlf--
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				s.size = append(s.size, p...)
				p = nil
				if len(s.size) > 64 {
					return errFrame
				}
				continue
			}
			s.size = append(s.size, p[:i]...)
			p = p[i+1:]
			line := bytes.TrimSpace(s.size)
			if j := bytes.IndexByte(line, ';'); j >= 0 {
				line = line[:j]
			}
			n, err := strconv.ParseUint(string(line), 16, 31)
			s.size = s.size[:0]
			if err != nil {
				return errFrame
			}
			ended = n == 0 // the last chunk: the server ended the stream
			s.left = int(n)
		}
	}
	rest := s.body
	var err error
	for err == nil {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := rest[:i]
		rest = rest[i+1:]
		if d, ok := bytes.CutPrefix(line, dataField); ok {
			err = fn(opText, d)
		}
	}
	if len(rest) > maxFrame {
		return errFrame
	}
	s.body = append(s.body[:0], rest...)
	if err == nil && ended {
		err = errServerClosed
	}
	return err
}
