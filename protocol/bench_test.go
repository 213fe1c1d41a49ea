package protocol

import (
	"strings"
	"testing"
)

// The codec benchmarks: encoding the message frame a node fans out (once per message per node)
// and decoding the frames clients send. Run with
//
//	go test -run '^$' -bench . -benchmem ./protocol

// payload128 is a 128-byte JSON payload, the size the load tool publishes.
var payload128 = []byte(`{"t":1764230400000000000,"seq":123456,"pad":"` + strings.Repeat("x", 128-47) + `"}`)

func benchMessage() Message {
	return Message{Type: "message", Channel: "bench", ID: "0f8fad5b-d9cb-469f-a165-70867728950e",
		Position: "17:3fa1c2", From: &From{User: "user-1", Session: "9b2a5c1e-7a4e-4f0e-8b39-0f9c1b7f2d11"}}
}

func TestPayload128(t *testing.T) {
	if len(payload128) != 128 {
		t.Fatalf("payload is %d bytes, want 128", len(payload128))
	}
}

// BenchmarkEncodeMessage is the whole per-message encoding on the delivery path: the payload
// checked (JSON and UTF-8) and put in the frame, and the frame marshalled.
func BenchmarkEncodeMessage(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(payload128)))
	for b.Loop() {
		m := benchMessage()
		m.SetPayload(payload128)
		if len(Encode(m)) == 0 {
			b.Fatal("empty frame")
		}
	}
}

// BenchmarkEncodeMessageBinary encodes a payload that is not JSON (sent as base64).
func BenchmarkEncodeMessageBinary(b *testing.B) {
	bin := make([]byte, 128)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(bin)))
	for b.Loop() {
		m := benchMessage()
		m.SetPayload(bin)
		if len(Encode(m)) == 0 {
			b.Fatal("empty frame")
		}
	}
}

// BenchmarkDecodePublish decodes and checks a client's publish frame with a 128-byte payload.
func BenchmarkDecodePublish(b *testing.B) {
	in := []byte(`{"type":"publish","id":"42","channel":"room:42","msg_id":"m-1","data":` + string(payload128) + `}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeSubscribe decodes a subscribe frame with a resume position.
func BenchmarkDecodeSubscribe(b *testing.B) {
	in := []byte(`{"type":"subscribe","id":"7","channel":"room:42","since":"17:3fa1c2"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChannelMessageFrame is the frame a node encodes once per channel message it delivers
// (ChannelMessageFrame), against the same frame through Message and Encode (via=Message).
func BenchmarkChannelMessageFrame(b *testing.B) {
	m := benchMessage()
	for _, via := range []string{"frame", "Message"} {
		b.Run("via="+via, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload128)))
			for b.Loop() {
				var f []byte
				if via == "frame" {
					f = ChannelMessageFrame(m.Channel, m.ID, m.Position, payload128, m.From)
				} else {
					f = encodeMessage(m.Channel, "", m.ID, m.Position, payload128, m.From)
				}
				if len(f) == 0 {
					b.Fatal("empty frame")
				}
			}
		})
	}
}

// BenchmarkForChannel is the position form of every channel message frame.
func BenchmarkForChannel(b *testing.B) {
	p := Position{Epoch: "m0123456789ab", Lo: 123456}
	b.ReportAllocs()
	for b.Loop() {
		if p.ForChannel("bench:1234") == "" {
			b.Fatal("empty")
		}
	}
}
