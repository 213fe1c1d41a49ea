package main

import (
	"bytes"
	"strconv"
	"strings"
)

// The payload published is {"t":<unix nanos>,"seq":<n>,"pad":"xxx…"}, padded so that it is
// size bytes long (when size leaves room for the fixed part). t is taken just before the HTTP
// publish, so a receiver's latency covers the API, the broker and the fan-out.

// The padding: padX repeats x (deflate shrinks it to almost nothing); padWords draws words
// from a small vocabulary, differently for each message, which deflate shrinks some 3 to 4
// times, like common JSON text.
const (
	padX     = "x"
	padWords = "words"
)

var padVocabulary = strings.Fields(`user order status pending shipped delivered cancelled id name email
	price total currency EUR USD item quantity created updated at by session token channel room message
	text reply thread like share view count score level region eu us west east north south true false null
	alpha beta gamma delta 0 1 2 3 4 5 6 7 8 9 42 100 2026 12 06 ok error retry`)

// appendPayload appends the payload of message seq, sent at unix nanos t, padded with pad, to b.
func appendPayload(b []byte, t int64, seq uint64, size int, pad string) []byte {
	start := len(b)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"pad":"`...)
	n := size - (len(b) - start) - 2 // the closing `"}`
	if pad == padWords {
		r := seq*0x9e3779b97f4a7c15 + 1 // xorshift, seeded by seq: each message its own text
		for n > 0 {
			r ^= r << 13
			r ^= r >> 7
			r ^= r << 17
			w := padVocabulary[r%uint64(len(padVocabulary))]
			if len(w)+1 > n {
				w = "xxxxxxxxxxxx"[:min(n, 12)]
			}
			b = append(b, w...)
			n -= len(w)
			if n > 0 {
				b = append(b, ' ')
				n--
			}
		}
	}
	for ; n > 0; n-- {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// appendPublishBody appends the body of POST /api/publish for channel and payload to b.
func appendPublishBody(b []byte, channel string, t int64, seq uint64, size int, pad string) []byte {
	b = append(b, `{"channel":`...)
	b = strconv.AppendQuote(b, channel)
	b = append(b, `,"data":`...)
	b = appendPayload(b, t, seq, size, pad)
	return append(b, '}')
}

var (
	keyType = []byte(`"type":"`)
	keyData = []byte(`"data":`)
	keyT    = []byte(`"t":`)
	keyCode = []byte(`"code":"`)
)

// frameType returns the value of the frame's "type" field without decoding it (nil when absent).
func frameType(frame []byte) []byte {
	return stringField(frame, keyType)
}

// stringField returns the string value following key (which ends with the opening quote),
// assuming it has no escapes (true of the gateway's types and codes).
func stringField(frame, key []byte) []byte {
	i := bytes.Index(frame, key)
	if i < 0 {
		return nil
	}
	rest := frame[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// payloadTime finds the publish time "t" inside the data of a message frame, without decoding
// the frame: the first "t": after "data":. ok is false when the frame carries no such number
// (a message not published by wsbench).
func payloadTime(frame []byte) (t int64, ok bool) {
	i := bytes.Index(frame, keyData)
	if i < 0 {
		return 0, false
	}
	rest := frame[i+len(keyData):]
	j := bytes.Index(rest, keyT)
	if j < 0 {
		return 0, false
	}
	rest = rest[j+len(keyT):]
	for len(rest) > 0 && rest[0] == ' ' {
		rest = rest[1:]
	}
	n := 0
	for n < len(rest) && n < 19 && rest[n] >= '0' && rest[n] <= '9' {
		t = t*10 + int64(rest[n]-'0')
		n++
	}
	if n == 0 || (n < len(rest) && rest[n] >= '0' && rest[n] <= '9') {
		return 0, false
	}
	return t, true
}
