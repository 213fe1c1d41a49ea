package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"
)

// knownCodes are the error codes of PROTOCOL.md section 3.
var knownCodes = map[string]bool{
	CodeBadRequest: true, CodeUnauthorized: true, CodeForbidden: true, CodeNotFound: true,
	CodeTooLarge: true, CodeRateLimited: true, CodeUnavailable: true, CodeInternal: true,
}

func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","id":"1","channel":"room:42"}`,
		`{"type":"subscribe","id":"2","channel":"$user","since":"17-3"}`,
		`{"type":"unsubscribe","id":"3","channel":"news"}`,
		`{"type":"publish","id":"4","channel":"chat.general","data":{"text":"hi"},"msg_id":"m-1"}`,
		`{"type":"publish","id":"5","channel":"$user","data":1}`,
		`{"type":"send","id":"6","data":"hello"}`,
		`{"type":"ping","id":"7"}`,
		`{"type":"ping"}`,
		`  {"type":"ping","id":""}  `,
		`{"type":"subscribe","id":"8","channel":"a b"}`,
		`{"type":"publish","id":"9","channel":"x"}`,
		`{"type":"nope","id":"10"}`,
		`{"id":5,"type":"ping"}`,
		`{"id":"11","type":"ping"`,
		`{"id":"12","type":5}`,
		`{"type":"ping","id":"ÿ\u00e9\ud800"}`,
		`[]`,
		`"x"`,
		`1`,
		`null`,
		``,
		`{}`,
		`{"type":"subscribe","id":"13","channel":"c","since":null,"data":null,"msg_id":null}`,
		"{\"type\":\"ping\",\"id\":\"\xff\xfe\"}",
		`{"TYPE":"PING","Id":"14"}`,
		`{"type":"presence","id":"15","channel":"room:1"}`,
		`{"type":"presence","id":"16","channel":"room:1","after":"s-42","limit":1000}`,
		`{"type":"presence","id":"17","channel":"room:1","limit":-1}`,
		`{"type":"presence","id":"18","channel":"$user"}`,
		`{"type":"presence_stats","id":"19","channel":"room:1"}`,
		`{"type":"presence_stats","id":"20"}`,
		`{"type":"presence","id":"21","channel":"c","after":5}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if fr == nil {
			t.Fatalf("Decode(%q) returned a nil frame", b)
		}
		if len(fr.ID) > MaxIDLen || !utf8.ValidString(fr.ID) {
			t.Fatalf("Decode(%q): id %q is longer than %d bytes or not UTF-8", b, fr.ID, MaxIDLen)
		}
		if err != nil {
			if !knownCodes[err.Code] {
				t.Fatalf("Decode(%q): unknown error code %q", b, err.Code)
			}
			if err.Message == "" {
				t.Fatalf("Decode(%q): error without a message", b)
			}
			// The error frame answering it must be valid UTF-8 JSON.
			out := ErrorReply(fr.ID, err)
			if !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("Decode(%q): error reply %q is not valid JSON", b, out)
			}
			return
		}
		switch fr.Type {
		case TypeSubscribe, TypeUnsubscribe:
			if !ValidChannel(fr.Channel) && fr.Channel != UserChannel {
				t.Fatalf("Decode(%q): accepted channel %q", b, fr.Channel)
			}
			if fr.Since != nil && len(*fr.Since) > MaxPositionLen {
				t.Fatalf("Decode(%q): accepted since of %d bytes", b, len(*fr.Since))
			}
		case TypePublish:
			if !ValidChannel(fr.Channel) {
				t.Fatalf("Decode(%q): accepted publish to channel %q", b, fr.Channel)
			}
			if len(fr.Data) == 0 || !json.Valid(fr.Data) {
				t.Fatalf("Decode(%q): accepted data %q", b, fr.Data)
			}
		case TypeSend:
			if len(fr.Data) == 0 || !json.Valid(fr.Data) {
				t.Fatalf("Decode(%q): accepted data %q", b, fr.Data)
			}
		case TypePresence, TypePresenceStats:
			if !ValidChannel(fr.Channel) {
				t.Fatalf("Decode(%q): accepted presence of channel %q", b, fr.Channel)
			}
			if len(fr.After) > MaxAfterLen || fr.Limit < 0 || fr.Limit > MaxPresencePage {
				t.Fatalf("Decode(%q): accepted after %q, limit %d", b, fr.After, fr.Limit)
			}
		case TypePing:
		default:
			t.Fatalf("Decode(%q): accepted type %q", b, fr.Type)
		}
		if len(fr.MsgID) > MaxMsgIDLen {
			t.Fatalf("Decode(%q): accepted msg_id of %d bytes", b, len(fr.MsgID))
		}
	})
}

func FuzzSetPayload(f *testing.F) {
	for _, seed := range []string{
		`{"a":1}`, `[1,2,3]`, `"text"`, `42`, `true`, `null`, ` {"spaced": [ 1 , 2 ] } `,
		`{"html":"<b>&</b>"}`, `"\u2028"`, ``, `hello`, `{"a":`, "\x00\x01\xff", "\"\xff\"",
		`{"a":1}{"b":2}`, `1e400`, `-0`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		in := append([]byte(nil), p...)
		m := Message{Type: "message", Channel: "c", ID: "id"}
		m.SetPayload(p)
		if !bytes.Equal(p, in) {
			t.Fatalf("SetPayload modified its input")
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("SetPayload(%q): marshal: %v", p, err)
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("SetPayload(%q): %q is not valid UTF-8 JSON", p, out)
		}
		var back struct {
			Data     json.RawMessage `json:"data"`
			Encoding string          `json:"encoding"`
		}
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("SetPayload(%q): unmarshal %q: %v", p, out, err)
		}
		switch back.Encoding {
		case "base64":
			var s string
			if err := json.Unmarshal(back.Data, &s); err != nil {
				t.Fatalf("SetPayload(%q): base64 data %q is not a string: %v", p, back.Data, err)
			}
			got, err := base64.StdEncoding.DecodeString(s)
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("SetPayload(%q): base64 data decodes to %q, %v", p, got, err)
			}
		case "":
			want, err := decodeJSON(in)
			if err != nil {
				t.Fatalf("SetPayload(%q): embedded a payload that is not JSON: %v", p, err)
			}
			got, err := decodeJSON(back.Data)
			if err != nil {
				t.Fatalf("SetPayload(%q): data %q does not decode: %v", p, back.Data, err)
			}
			if !reflect.DeepEqual(want, got) {
				t.Fatalf("SetPayload(%q): data decodes to %#v, want %#v", p, got, want)
			}
		default:
			t.Fatalf("SetPayload(%q): encoding %q", p, back.Encoding)
		}
	})
}

// decodeJSON decodes one JSON value keeping numbers as written (1e400 does not fit a float64).
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the value")
	}
	return v, nil
}

// FuzzMessageFrame: the message frames are what encoding a Message makes of the same fields.
func FuzzMessageFrame(f *testing.F) {
	f.Add("chat", "0f8fad5b", "m1:0:5:abc", []byte(`{"a": [1, 2]}`), "bob", "s2", true)
	f.Add("c", "a\"b", "", []byte("<x>"), "", "", false)
	f.Add("", "", "", []byte("\"\u2028\""), "é", "\x00", true)
	f.Fuzz(func(t *testing.T, channel, id, position string, payload []byte, user, session string, withFrom bool) {
		var from *From
		if withFrom {
			from = &From{User: user, Session: session}
		}
		if got, want := ChannelMessageFrame(channel, id, position, payload, from), encodeMessage(channel, "", id, position, payload, from); string(got) != string(want) {
			t.Fatalf("channel frame:\n got %s\nwant %s", got, want)
		}
		if got, want := DirectMessageFrame(channel, id, payload), encodeMessage("", channel, id, "", payload, nil); string(got) != string(want) {
			t.Fatalf("direct frame:\n got %s\nwant %s", got, want)
		}
	})
}
