package main

import (
	"bytes"
	"strconv"
	"time"
)

// Centrifugo's JSON protocol (v2, Centrifugo v4 and later), the subset wsbench speaks with
// -server centrifugo: the client sends {"id":1,"connect":{"token":…}} and, once answered,
// {"id":2,"subscribe":{"channel":…}}; publications arrive as
// {"push":{"channel":…,"pub":{"data":…}}}; the server's ping is an empty object {} and is
// answered with {}. A WebSocket frame may carry several replies, one per line.

var (
	keyPub        = []byte(`"pub":`)
	keyDisconnect = []byte(`"disconnect":`)
	keyError      = []byte(`"error":`)
	keyConnect    = []byte(`"connect":`)
	keySubscribe  = []byte(`"subscribe":`)
	keyNumCode    = []byte(`"code":`)
)

// centrifugoConnect is the connect command carrying token.
func centrifugoConnect(token string) []byte {
	return []byte(`{"id":1,"connect":{"token":` + strconv.Quote(token) + `,"name":"wsbench"}}`)
}

// centrifugoFrame handles one frame from Centrifugo: each of its lines is a reply or a push.
func (b *bench) centrifugoFrame(c *conn, p []byte) error {
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		if len(line) == 0 {
			continue
		}
		if err := b.centrifugoReply(c, line); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) centrifugoReply(c *conn, p []byte) error {
	if bytes.Equal(p, []byte("{}")) { // ping
		return c.write(opText, []byte("{}"))
	}
	switch c.state {
	case stateWelcome: // waiting for the connect reply
		switch {
		case bytes.Contains(p, keyError):
			return &openError{kind: "connect refused: " + string(numberField(p, keyNumCode))}
		case bytes.Contains(p, keyConnect):
			ch := b.o.channelOf(c.i)
			sub := `{"id":2,"subscribe":{"channel":` + strconv.Quote(ch) + `}}`
			if err := c.write(opText, []byte(sub)); err != nil {
				return &openError{kind: "subscribe: " + err.Error()}
			}
			c.state = stateSubscribing
		}
		return nil
	case stateSubscribing:
		switch {
		case bytes.Contains(p, keyError):
			return &openError{kind: "subscribe refused: " + string(numberField(p, keyNumCode))}
		case bytes.Contains(p, keySubscribe):
			c.state = stateLive
			b.subscribed.Add(1)
			b.subsPer[c.i%b.o.Channels].Add(1)
			return errOpened
		}
		if c.seen++; c.seen > 1000 {
			return &openError{kind: "no subscribe reply"}
		}
		return nil
	}
	now := time.Now().UnixNano()
	switch {
	case bytes.Contains(p, keyPub):
		t, ok := payloadTime(p)
		if !ok {
			c.sh.other.Add(1)
			return nil
		}
		if b.measuring.Load() {
			c.sh.received.Add(1)
			c.sh.hist.Record(time.Duration(now - t))
		}
	case bytes.Contains(p, keyDisconnect):
		b.countErr(b.disconnects, "centrifugo "+string(numberField(p, keyNumCode)))
	default:
		c.sh.other.Add(1)
	}
	return nil
}

// numberField returns the digits following key.
func numberField(p, key []byte) []byte {
	i := bytes.Index(p, key)
	if i < 0 {
		return nil
	}
	rest := p[i+len(key):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	return rest[:n]
}
