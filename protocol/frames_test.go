package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	str := func(s string) *string { return &s }
	tests := []struct {
		name string
		in   string
		want Frame  // compared when code is ""
		code string // expected error code; "" for success
		id   string // id the returned frame carries on error
		msg  string // substring of the error message
	}{
		// Every type.
		{name: "presence", in: `{"type":"presence","id":"1","channel":"room:1","after":"s9","limit":1000}`,
			want: Frame{Type: TypePresence, ID: "1", Channel: "room:1", After: "s9", Limit: 1000}},
		{name: "presence_stats", in: `{"type":"presence_stats","id":"1","channel":"room:1"}`,
			want: Frame{Type: TypePresenceStats, ID: "1", Channel: "room:1"}},
		{name: "presence without channel", in: `{"type":"presence","id":"1"}`, code: CodeBadRequest, id: "1", msg: "channel"},
		{name: "presence of $user", in: `{"type":"presence","id":"1","channel":"$user"}`, code: CodeBadRequest, id: "1", msg: "$user"},
		{name: "presence limit too big", in: `{"type":"presence","id":"1","channel":"c","limit":1001}`, code: CodeBadRequest, id: "1", msg: "limit"},
		{name: "presence negative limit", in: `{"type":"presence","id":"1","channel":"c","limit":-1}`, code: CodeBadRequest, id: "1", msg: "limit"},
		{name: "presence after too long", in: `{"type":"presence","id":"1","channel":"c","after":"` + long(129) + `"}`, code: CodeBadRequest, id: "1", msg: "after"},
		{name: "subscribe", in: `{"type":"subscribe","id":"1","channel":"room:42"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "room:42"}},
		{name: "subscribe since", in: `{"type":"subscribe","id":"1","channel":"room:42","since":"0-17"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "room:42", Since: str("0-17")}},
		{name: "subscribe empty since", in: `{"type":"subscribe","id":"1","channel":"c","since":""}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "c", Since: str("")}},
		{name: "subscribe null since", in: `{"type":"subscribe","id":"1","channel":"c","since":null}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "c"}},
		{name: "subscribe $user", in: `{"type":"subscribe","id":"1","channel":"$user"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: UserChannel}},
		{name: "subscribe every allowed character", in: `{"type":"subscribe","id":"1","channel":"Az09_:.-"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "Az09_:.-"}},
		{name: "subscribe 128 chars", in: `{"type":"subscribe","id":"1","channel":"` + long(128) + `"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: long(128)}},
		{name: "subscribe since 256", in: `{"type":"subscribe","id":"1","channel":"c","since":"` + long(256) + `"}`,
			want: Frame{Type: TypeSubscribe, ID: "1", Channel: "c", Since: str(long(256))}},
		{name: "unsubscribe", in: `{"type":"unsubscribe","id":"2","channel":"news"}`,
			want: Frame{Type: TypeUnsubscribe, ID: "2", Channel: "news"}},
		{name: "unsubscribe $user", in: `{"type":"unsubscribe","id":"2","channel":"$user"}`,
			want: Frame{Type: TypeUnsubscribe, ID: "2", Channel: UserChannel}},
		{name: "publish", in: `{"type":"publish","id":"3","channel":"chat","data":{"text":"hi"},"msg_id":"m1"}`,
			want: Frame{Type: TypePublish, ID: "3", Channel: "chat", Data: json.RawMessage(`{"text":"hi"}`), MsgID: "m1"}},
		{name: "publish string data", in: `{"type":"publish","id":"3","channel":"chat","data":"x"}`,
			want: Frame{Type: TypePublish, ID: "3", Channel: "chat", Data: json.RawMessage(`"x"`)}},
		{name: "publish null data is data", in: `{"type":"publish","id":"3","channel":"chat","data":null}`,
			want: Frame{Type: TypePublish, ID: "3", Channel: "chat", Data: json.RawMessage(`null`)}},
		{name: "publish msg_id 64", in: `{"type":"publish","id":"3","channel":"chat","data":1,"msg_id":"` + long(64) + `"}`,
			want: Frame{Type: TypePublish, ID: "3", Channel: "chat", Data: json.RawMessage(`1`), MsgID: long(64)}},
		{name: "send", in: `{"type":"send","id":"4","data":[1,2],"msg_id":"k"}`,
			want: Frame{Type: TypeSend, ID: "4", Data: json.RawMessage(`[1,2]`), MsgID: "k"}},
		{name: "ping", in: `{"type":"ping","id":"5"}`,
			want: Frame{Type: TypePing, ID: "5"}},
		{name: "ping without id", in: `{"type":"ping"}`,
			want: Frame{Type: TypePing}},
		{name: "id 64 chars", in: `{"type":"ping","id":"` + long(64) + `"}`,
			want: Frame{Type: TypePing, ID: long(64)}},
		{name: "surrounding whitespace", in: " \r\n\t{\"type\":\"ping\",\"id\":\"5\"}\n",
			want: Frame{Type: TypePing, ID: "5"}},
		{name: "unknown fields ignored", in: `{"type":"ping","id":"5","extra":{"a":[1]}}`,
			want: Frame{Type: TypePing, ID: "5"}},

		// Missing required fields.
		{name: "missing type", in: `{"id":"6","channel":"c"}`, code: CodeBadRequest, id: "6", msg: "type is required"},
		{name: "empty object", in: `{}`, code: CodeBadRequest, msg: "type is required"},
		{name: "subscribe without channel", in: `{"type":"subscribe","id":"7"}`, code: CodeBadRequest, id: "7", msg: "channel is required"},
		{name: "subscribe empty channel", in: `{"type":"subscribe","id":"7","channel":""}`, code: CodeBadRequest, id: "7", msg: "channel is required"},
		{name: "unsubscribe without channel", in: `{"type":"unsubscribe","id":"8"}`, code: CodeBadRequest, id: "8", msg: "channel is required"},
		{name: "publish without channel", in: `{"type":"publish","id":"9","data":1}`, code: CodeBadRequest, id: "9", msg: "channel is required"},
		{name: "publish without data", in: `{"type":"publish","id":"10","channel":"c"}`, code: CodeBadRequest, id: "10", msg: "data is required"},
		{name: "send without data", in: `{"type":"send","id":"11"}`, code: CodeBadRequest, id: "11", msg: "data is required"},

		// Bad channel names.
		{name: "channel 129 chars", in: `{"type":"subscribe","id":"12","channel":"` + long(129) + `"}`, code: CodeBadRequest, id: "12", msg: "channel must match"},
		{name: "publish channel 129 chars", in: `{"type":"publish","id":"12","channel":"` + long(129) + `","data":1}`, code: CodeBadRequest, id: "12", msg: "channel must match"},
		{name: "channel with space", in: `{"type":"subscribe","id":"13","channel":"a b"}`, code: CodeBadRequest, id: "13"},
		{name: "channel with slash", in: `{"type":"subscribe","id":"13","channel":"a/b"}`, code: CodeBadRequest, id: "13"},
		{name: "channel with star", in: `{"type":"subscribe","id":"13","channel":"room:*"}`, code: CodeBadRequest, id: "13"},
		{name: "channel with >", in: `{"type":"unsubscribe","id":"13","channel":"a.>"}`, code: CodeBadRequest, id: "13"},
		{name: "channel with $", in: `{"type":"subscribe","id":"13","channel":"$users"}`, code: CodeBadRequest, id: "13"},
		{name: "channel $user:other", in: `{"type":"subscribe","id":"13","channel":"$user:bob"}`, code: CodeBadRequest, id: "13"},
		{name: "channel non-ASCII", in: `{"type":"subscribe","id":"13","channel":"caf\u00e9"}`, code: CodeBadRequest, id: "13"},
		{name: "channel NUL", in: `{"type":"subscribe","id":"13","channel":"a\u0000b"}`, code: CodeBadRequest, id: "13"},
		{name: "channel newline", in: `{"type":"publish","id":"13","channel":"a\nb","data":1}`, code: CodeBadRequest, id: "13"},
		{name: "channel not a string", in: `{"type":"subscribe","id":"13","channel":5}`, code: CodeBadRequest, id: "13", msg: "channel"},
		{name: "publish to $user", in: `{"type":"publish","id":"14","channel":"$user","data":1}`, code: CodeForbidden, id: "14"},

		// id and msg_id.
		{name: "id 65 chars", in: `{"type":"ping","id":"` + long(65) + `"}`, code: CodeBadRequest, msg: "id must be"},
		{name: "id number", in: `{"type":"ping","id":5}`, code: CodeBadRequest},
		{name: "id object", in: `{"type":"ping","id":{"a":"b"}}`, code: CodeBadRequest},
		{name: "id bool", in: `{"type":"ping","id":true}`, code: CodeBadRequest},
		{name: "id null is no id", in: `{"type":"ping","id":null}`, want: Frame{Type: TypePing}},
		{name: "msg_id 65 chars", in: `{"type":"publish","id":"15","channel":"c","data":1,"msg_id":"` + long(65) + `"}`, code: CodeBadRequest, id: "15", msg: "msg_id"},
		{name: "send msg_id 65 chars", in: `{"type":"send","id":"15","data":1,"msg_id":"` + long(65) + `"}`, code: CodeBadRequest, id: "15", msg: "msg_id"},
		{name: "msg_id number", in: `{"type":"send","id":"15","data":1,"msg_id":7}`, code: CodeBadRequest, id: "15", msg: "msg_id"},
		{name: "since too long", in: `{"type":"subscribe","id":"16","channel":"c","since":"` + long(257) + `"}`, code: CodeBadRequest, id: "16", msg: "since"},
		{name: "since number", in: `{"type":"subscribe","id":"16","channel":"c","since":5}`, code: CodeBadRequest, id: "16", msg: "since"},

		// Not an object.
		{name: "array", in: `[]`, code: CodeBadRequest, msg: "JSON object"},
		{name: "array of frames", in: `[{"type":"ping","id":"1"}]`, code: CodeBadRequest, msg: "JSON object"},
		{name: "string", in: `"x"`, code: CodeBadRequest, msg: "JSON object"},
		{name: "number", in: `1`, code: CodeBadRequest, msg: "JSON object"},
		{name: "null", in: `null`, code: CodeBadRequest, msg: "JSON object"},
		{name: "true", in: `true`, code: CodeBadRequest, msg: "JSON object"},
		{name: "empty", in: ``, code: CodeBadRequest, msg: "JSON object"},
		{name: "whitespace only", in: " \n\t ", code: CodeBadRequest, msg: "JSON object"},
		{name: "text", in: `ping`, code: CodeBadRequest, msg: "JSON object"},

		// Unknown type.
		{name: "unknown type", in: `{"type":"subscribed","id":"17","channel":"c"}`, code: CodeBadRequest, id: "17", msg: "unknown type"},
		{name: "type wrong case", in: `{"type":"PING","id":"17"}`, code: CodeBadRequest, id: "17", msg: "unknown type"},
		{name: "server type", in: `{"type":"message","id":"17"}`, code: CodeBadRequest, id: "17", msg: "unknown type"},
		{name: "long unknown type is truncated", in: `{"type":"` + long(1000) + `","id":"17"}`, code: CodeBadRequest, id: "17", msg: `"` + long(32) + `"`},
		{name: "type not a string", in: `{"type":1,"id":"17"}`, code: CodeBadRequest, id: "17", msg: "type"},

		// Malformed JSON, with the id when it can be read.
		{name: "truncated keeps id", in: `{"id":"18","type":"ping"`, code: CodeBadRequest, id: "18", msg: "malformed JSON"},
		{name: "trailing comma keeps id", in: `{"id":"18","type":"ping",}`, code: CodeBadRequest, id: "18", msg: "malformed JSON"},
		{name: "garbage after id keeps id", in: `{"id":"18",,}`, code: CodeBadRequest, id: "18", msg: "malformed JSON"},
		{name: "id after the error is lost", in: `{"type":"ping",,"id":"18"}`, code: CodeBadRequest, msg: "malformed JSON"},
		{name: "trailing data keeps id", in: `{"type":"ping","id":"18"} {}`, code: CodeBadRequest, id: "18", msg: "malformed JSON"},
		{name: "truncated before id", in: `{"type":"pi`, code: CodeBadRequest, msg: "malformed JSON"},
		{name: "truncated id", in: `{"id":"1`, code: CodeBadRequest, msg: "malformed JSON"},
		{name: "single quotes", in: `{'id':'18'}`, code: CodeBadRequest, msg: "malformed JSON"},
		{name: "just a brace", in: `{`, code: CodeBadRequest},
		{name: "too long id not recovered", in: `{"id":"` + long(65) + `","type":"ping"`, code: CodeBadRequest},
		{name: "nested id not recovered", in: `{"data":{"id":"18"},"type":"ping"`, code: CodeBadRequest},
		{name: "wrong field type keeps id", in: `{"id":"19","type":"publish","channel":"c","data":1,"msg_id":[]}`, code: CodeBadRequest, id: "19", msg: "msg_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Decode([]byte(tt.in))
			if f == nil {
				t.Fatal("Decode returned a nil frame")
			}
			if tt.code == "" {
				if err != nil {
					t.Fatalf("Decode(%s): %v", tt.in, err)
				}
				got, _ := json.Marshal(f)
				want, _ := json.Marshal(tt.want)
				if string(got) != string(want) {
					t.Fatalf("Decode(%s)\n got %s\nwant %s", tt.in, got, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want a %s error", tt.in, f, tt.code)
			}
			if err.Code != tt.code {
				t.Errorf("code = %q (%s), want %q", err.Code, err.Message, tt.code)
			}
			if f.ID != tt.id {
				t.Errorf("id = %q, want %q", f.ID, tt.id)
			}
			if !strings.Contains(err.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", err.Message, tt.msg)
			}
		})
	}
}

func TestValidChannel(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "Az09_:.-": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "$user": false, "a*": false, "a b": false, "é": false,
	} {
		if got := ValidChannel(name); got != want {
			t.Errorf("ValidChannel(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSetPayload(t *testing.T) {
	b64 := func(s string) string { return `"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"` }
	tests := []struct {
		name     string
		in       string
		data     string // Data after SetPayload
		encoding string
		wire     string // the message marshalled
	}{
		{name: "object", in: `{"a":1}`, data: `{"a":1}`,
			wire: `{"type":"message","channel":"c","id":"m","data":{"a":1}}`},
		{name: "array", in: `[1,"x",null]`, data: `[1,"x",null]`,
			wire: `{"type":"message","channel":"c","id":"m","data":[1,"x",null]}`},
		{name: "string", in: `"hi"`, data: `"hi"`,
			wire: `{"type":"message","channel":"c","id":"m","data":"hi"}`},
		{name: "number", in: `42`, data: `42`,
			wire: `{"type":"message","channel":"c","id":"m","data":42}`},
		{name: "null", in: `null`, data: `null`,
			wire: `{"type":"message","channel":"c","id":"m","data":null}`},
		{name: "spaced JSON is compacted on the wire", in: " { \"a\" : [ 1 , 2 ] } ", data: " { \"a\" : [ 1 , 2 ] } ",
			wire: `{"type":"message","channel":"c","id":"m","data":{"a":[1,2]}}`},
		{name: "text", in: `hello`, data: b64("hello"), encoding: "base64",
			wire: `{"type":"message","channel":"c","id":"m","data":` + b64("hello") + `,"encoding":"base64"}`},
		{name: "broken JSON", in: `{"a":`, data: b64(`{"a":`), encoding: "base64"},
		{name: "two values", in: `1 2`, data: b64(`1 2`), encoding: "base64"},
		{name: "binary", in: "\x00\x01\xfe\xff", data: b64("\x00\x01\xfe\xff"), encoding: "base64"},
		{name: "JSON string with invalid UTF-8", in: "\"\xff\"", data: b64("\"\xff\""), encoding: "base64"},
		{name: "empty", in: ``, data: `""`, encoding: "base64",
			wire: `{"type":"message","channel":"c","id":"m","data":"","encoding":"base64"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Message{Type: "message", Channel: "c", ID: "m"}
			m.SetPayload([]byte(tt.in))
			if string(m.Data) != tt.data || m.Encoding != tt.encoding {
				t.Fatalf("SetPayload(%q): data %s encoding %q, want %s %q", tt.in, m.Data, m.Encoding, tt.data, tt.encoding)
			}
			wire := Encode(m)
			if !json.Valid(wire) {
				t.Fatalf("Encode: %s is not valid JSON", wire)
			}
			if tt.wire != "" && string(wire) != tt.wire {
				t.Fatalf("Encode\n got %s\nwant %s", wire, tt.wire)
			}
		})
	}
}

func TestSetPayloadTwice(t *testing.T) {
	var m Message
	m.SetPayload([]byte("not json"))
	m.SetPayload([]byte(`{"ok":true}`))
	if m.Encoding != "" || string(m.Data) != `{"ok":true}` {
		t.Fatalf("after a JSON payload: data %s encoding %q", m.Data, m.Encoding)
	}
}

func TestErrorReply(t *testing.T) {
	tests := []struct {
		id   string
		err  *Error
		want string
	}{
		{"7", Errorf(CodeBadRequest, "channel is required"), `{"type":"error","id":"7","code":"bad_request","message":"channel is required"}`},
		{"", Errorf(CodeRateLimited, "slow down"), `{"type":"error","code":"rate_limited","message":"slow down"}`},
		{"x", Errorf(CodeForbidden, "no %s to %q", "publish", "$user"), `{"type":"error","id":"x","code":"forbidden","message":"no publish to \"$user\""}`},
		{"<&>", Errorf(CodeInternal, "a<b"), `{"type":"error","id":"\u003c\u0026\u003e","code":"internal","message":"a\u003cb"}`},
	}
	for _, tt := range tests {
		if got := string(ErrorReply(tt.id, tt.err)); got != tt.want {
			t.Errorf("ErrorReply(%q, %v)\n got %s\nwant %s", tt.id, tt.err, got, tt.want)
		}
	}
}

func TestEncodeFailure(t *testing.T) {
	got := string(Encode(map[string]any{"bad": make(chan int)}))
	if want := `{"type":"error","code":"internal","message":"cannot encode frame"}`; got != want {
		t.Fatalf("Encode(unencodable) = %s, want %s", got, want)
	}
}

func TestCodeOf(t *testing.T) {
	pe := Errorf(CodeUnavailable, "broker down")
	tests := []struct {
		name     string
		err      error
		fallback string
		code     string
		msg      string
	}{
		{"protocol error", pe, CodeInternal, CodeUnavailable, "broker down"},
		{"wrapped protocol error", fmt.Errorf("publish: %w", pe), CodeInternal, CodeUnavailable, "broker down"},
		{"joined", errors.Join(errors.New("other"), Errorf(CodeTooLarge, "big")), CodeInternal, CodeTooLarge, "big"},
		{"plain error", errors.New("boom"), CodeInternal, CodeInternal, "boom"},
		{"plain error other fallback", errors.New("later"), CodeUnavailable, CodeUnavailable, "later"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := CodeOf(tt.err, tt.fallback)
			if code != tt.code || msg != tt.msg {
				t.Fatalf("CodeOf = %q, %q; want %q, %q", code, msg, tt.code, tt.msg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	if got := Errorf(CodeNotFound, "no channel %s", "x").Error(); got != "not_found: no channel x" {
		t.Fatalf("Error() = %q", got)
	}
}

// TestServerFrames pins the bytes of every server frame the gateway builds.
func TestServerFrames(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"welcome", WelcomeFrame("s1", "n1", "alice"), `{"type":"welcome","session":"s1","node":"n1","user":"alice"}`},
		{"welcome anonymous", WelcomeFrame("s1", "n1", ""), `{"type":"welcome","session":"s1","node":"n1","user":""}`},
		{"subscribed", SubscribedFrame("1", "chat", "e:7", true), `{"type":"subscribed","id":"1","channel":"chat","position":"e:7","recovered":true}`},
		{"subscribed no id", SubscribedFrame("", "$user", "", false), `{"type":"subscribed","id":"","channel":"$user","position":"","recovered":false}`},
		{"unsubscribed", UnsubscribedFrame("2", "chat"), `{"type":"unsubscribed","id":"2","channel":"chat"}`},
		{"ack", AckFrame("3", "m-1"), `{"type":"ack","id":"3","msg_id":"m-1"}`},
		{"pong", PongFrame("4"), `{"type":"pong","id":"4"}`},
		{"pong no id", PongFrame(""), `{"type":"pong","id":""}`},
		{"channel message", ChannelMessageFrame("chat", "u1", "e:8", []byte(`{"a":1}`), &From{User: "bob", Session: "s2"}),
			`{"type":"message","channel":"chat","id":"u1","position":"e:8","data":{"a":1},"from":{"user":"bob","session":"s2"}}`},
		{"channel message from a service, not JSON", ChannelMessageFrame("chat", "u2", "e:9", []byte("hi"), nil),
			`{"type":"message","channel":"chat","id":"u2","position":"e:9","data":"aGk=","encoding":"base64"}`},
		{"direct message", DirectMessageFrame(TargetSession, "u3", []byte(`"x"`)), `{"type":"message","to":"session","id":"u3","data":"x"}`},
		{"broadcast", DirectMessageFrame(TargetAll, "u4", []byte(`[1]`)), `{"type":"message","to":"all","id":"u4","data":[1]}`},
		{"presence", PresenceFrame("5", "room", []Member{{User: "ann", Session: "s1", Node: "n1", Info: json.RawMessage(`{"name":"Ann"}`)}, {Session: "s2", Node: "n2"}}, "s2"),
			`{"type":"presence","id":"5","channel":"room","members":[{"user":"ann","session":"s1","node":"n1","info":{"name":"Ann"}},{"user":"","session":"s2","node":"n2"}],"next":"s2"}`},
		{"presence empty", PresenceFrame("6", "room", nil, ""), `{"type":"presence","id":"6","channel":"room","members":[]}`},
		{"presence counts only", PresenceCountsFrame(TypePresence, "7", "big", PresenceStats{Connections: 20000, Users: 15000}),
			`{"type":"presence","id":"7","channel":"big","connections":20000,"users":15000}`},
		{"presence_stats", PresenceCountsFrame(TypePresenceStats, "8", "room", PresenceStats{Connections: 3, Users: 2}),
			`{"type":"presence_stats","id":"8","channel":"room","connections":3,"users":2}`},
		{"join", JoinLeaveFrame(TypeJoin, "room", "e:10", Member{User: "ann", Session: "s1", Node: "n1"}),
			`{"type":"join","channel":"room","member":{"user":"ann","session":"s1","node":"n1"},"position":"e:10"}`},
		{"leave", JoinLeaveFrame(TypeLeave, "room", "e:11", Member{User: "ann", Session: "s1", Node: "n1"}),
			`{"type":"leave","channel":"room","member":{"user":"ann","session":"s1","node":"n1"},"position":"e:11"}`},
		{"join of several", JoinLeaveManyFrame(TypeJoin, "room", "e:12", []Member{{User: "ann", Session: "s1", Node: "n1"}, {Session: "s2", Node: "n2"}}),
			`{"type":"join","channel":"room","members":[{"user":"ann","session":"s1","node":"n1"},{"user":"","session":"s2","node":"n2"}],"position":"e:12"}`},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s\n got %s\nwant %s", tt.name, tt.got, tt.want)
		}
	}
}

// TestDisconnects pins every disconnect the gateway sends: its frame, and the close code after it.
func TestDisconnects(t *testing.T) {
	tests := []struct {
		d     Disconnect
		frame string
		close int
	}{
		{DisconnectShutdown, `{"type":"disconnect","code":"shutdown","reason":"node is shutting down","reconnect":true}`, 1001},
		{DisconnectSlowConsumer, `{"type":"disconnect","code":"slow_consumer","reason":"send buffer full","reconnect":true}`, 1013},
		{DisconnectTokenExpired, `{"type":"disconnect","code":"token_expired","reason":"token expired","reconnect":true}`, 4001},
		{DisconnectPolicy, `{"type":"disconnect","code":"policy","reason":"closed by policy","reconnect":false}`, 1008},
		{DisconnectResubscribe, `{"type":"disconnect","code":"resubscribe","reason":"the node lost its broker subscription; resume","reconnect":true}`, 1000},
		{DisconnectRateLimited, `{"type":"disconnect","code":"rate_limited","reason":"kept sending over the rate limits","reconnect":false}`, 1008},
		{Disconnect{Code: "other", Reason: "r"}, `{"type":"disconnect","code":"other","reason":"r","reconnect":false}`, 1000},
	}
	for _, tt := range tests {
		if got := string(tt.d.Frame()); got != tt.frame {
			t.Errorf("%s frame\n got %s\nwant %s", tt.d.Code, got, tt.frame)
		}
		if got := tt.d.CloseCode(); got != tt.close {
			t.Errorf("%s: close code %d, want %d", tt.d.Code, got, tt.close)
		}
		if got := tt.d.CloseReason(); got != tt.d.Code {
			t.Errorf("%s: close reason %q, want the code", tt.d.Code, got)
		}
	}
}

// TestPayloadRoundTrip: Payload gives back exactly what SetPayload was given, JSON or not.
func TestPayloadRoundTrip(t *testing.T) {
	for _, p := range [][]byte{[]byte(`{"a":1}`), []byte(`"text"`), {0xff, 0x00, 'x'}, []byte("not json"), {}} {
		var m Message
		m.SetPayload(p)
		got, binary := m.Payload()
		if !bytes.Equal(got, p) && !(len(p) == 0 && len(got) == 0) {
			t.Errorf("SetPayload(%q) then Payload() = %q", p, got)
		}
		if binary != (m.Encoding == "base64") {
			t.Errorf("SetPayload(%q): binary %v with encoding %q", p, binary, m.Encoding)
		}
	}
}

// encodeMessage is the reference encoding of a message frame: Message, SetPayload, Encode.
func encodeMessage(channel, to, id, position string, payload []byte, from *From) []byte {
	m := Message{Type: TypeMessage, Channel: channel, To: to, ID: id, Position: position, From: from}
	m.SetPayload(payload)
	return Encode(m)
}

// TestMessageFrameSameAsEncode: ChannelMessageFrame and DirectMessageFrame write, byte for byte,
// what encoding a Message writes, for payloads and strings on either side of their direct path
// (escapes, HTML characters, non-ASCII, whitespace to compact, invalid JSON, empty).
func TestMessageFrameSameAsEncode(t *testing.T) {
	payloads := []string{`{"a":1}`, "{ \"a\" : [1, 2,\n3] }", `"x"`, `1`, `[]`, `null`, `{"h":"<b>&"}`, `{"u":"é"}`,
		"{\"ls\":\"\u2028\"}", `{"a":`, `hi`, ``, "\xff", `{"e":"\u00e9 \n"}`, `{"t":1764230400000000000,"seq":7,"pad":"xxxx"}`,
		"\t[1]\r\n", `{"a":"b\"c"}`}
	strs := []string{"", "chat", "a\"b", `a\b`, "<x>", "a&b", "é", "\x01", "0:0:5:abc", "user-1", "\x7f"}
	froms := []*From{nil, {}, {User: "bob", Session: "s2"}, {User: "<b>", Session: "\""}}
	for _, p := range payloads {
		for _, s := range strs {
			for _, f := range froms {
				want := encodeMessage(s, "", "id-"+s, s, []byte(p), f)
				if got := ChannelMessageFrame(s, "id-"+s, s, []byte(p), f); string(got) != string(want) {
					t.Fatalf("channel frame of %q, %q, %+v:\n got %s\nwant %s", p, s, f, got, want)
				}
			}
			want := encodeMessage("", s, s, "", []byte(p), nil)
			if got := DirectMessageFrame(s, s, []byte(p)); string(got) != string(want) {
				t.Fatalf("direct frame of %q, %q:\n got %s\nwant %s", p, s, got, want)
			}
		}
	}
}
