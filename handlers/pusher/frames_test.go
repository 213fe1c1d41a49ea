package pusher

import (
	"encoding/json"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports/websocket"
)

func TestDataRule(t *testing.T) {
	cases := []struct {
		data    string // a Pusher data string
		payload string // the message payload
	}{
		{`{"a":1}`, `{"a":1}`},
		{`hello world`, `"hello world"`},
		{`42`, `42`},
		{`"quoted"`, `"quoted"`},
		{``, `""`},
	}
	for _, tc := range cases {
		if got := string(payloadOf(tc.data)); got != tc.payload {
			t.Errorf("payloadOf(%q) = %s, want %s", tc.data, got, tc.payload)
		}
		var back string
		if err := json.Unmarshal(dataOf([]byte(tc.payload)), &back); err != nil {
			t.Fatal(err)
		}
		// Back to Pusher: what pusher-js makes of it is the same as of the original string.
		if tc.data != `"quoted"` && back != tc.data {
			t.Errorf("dataOf(%s) = %q, want %q", tc.payload, back, tc.data)
		}
	}
	if got := string(payloadOfValue(json.RawMessage(`{"x":[1]}`))); got != `{"x":[1]}` {
		t.Errorf("a client event's object: %s", got)
	}
	if got := string(payloadOfValue(json.RawMessage(`"not json"`))); got != `"not json"` {
		t.Errorf("a client event's string: %s", got)
	}
}

func TestFrames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{string(connectedFrame("12.34", 120)), `{"event":"pusher:connection_established","data":"{\"activity_timeout\":120,\"socket_id\":\"12.34\"}"}`},
		{string(pongFrame), `{"event":"pusher:pong","data":"{}"}`},
		{string(errorFrame(4001, "no")), `{"event":"pusher:error","data":{"code":4001,"message":"no"}}`},
		{string(errorFrame(0, "no")), `{"event":"pusher:error","data":{"code":null,"message":"no"}}`},
		{string(subscriptionErrorFrame("private-a", "AuthError", "bad", 401)), `{"event":"pusher:subscription_error","channel":"private-a","data":{"error":"bad","status":401,"type":"AuthError"}}`},
		{string(subscribedFrame("a", nil)), `{"event":"pusher_internal:subscription_succeeded","channel":"a","data":"{}"}`},
		{string(subscribedFrame("presence-a", &presenceData{IDs: []string{"u"}, Hash: map[string]json.RawMessage{"u": json.RawMessage(`{"n":1}`)}, Count: 1})),
			`{"event":"pusher_internal:subscription_succeeded","channel":"presence-a","data":"{\"presence\":{\"ids\":[\"u\"],\"hash\":{\"u\":{\"n\":1}},\"count\":1}}"}`},
		{string(memberAddedFrame("presence-a", "u", nil)), `{"event":"pusher_internal:member_added","channel":"presence-a","data":"{\"user_id\":\"u\",\"user_info\":null}"}`},
		{string(memberRemovedFrame("presence-a", "u")), `{"event":"pusher_internal:member_removed","channel":"presence-a","data":"{\"user_id\":\"u\"}"}`},
		{string(eventFrame("ev", "presence-a", []byte(`{"a":1}`), "u")), `{"event":"ev","channel":"presence-a","data":"{\"a\":1}","user_id":"u"}`},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

func TestUserID(t *testing.T) {
	for raw, want := range map[string]string{`"alice"`: "alice", `10`: "10", `1.5`: "1.5"} {
		if got, ok := userIDString(json.RawMessage(raw)); !ok || got != want {
			t.Errorf("%s: %q %v", raw, got, ok)
		}
	}
	for _, raw := range []string{`""`, `null`, `{}`, `[1]`, `true`} {
		if got, ok := userIDString(json.RawMessage(raw)); ok {
			t.Errorf("%s accepted as %q", raw, got)
		}
	}
}

func channelMessage(kind, payload string, md map[string]string) *message.Message {
	m := message.NewMessage("id", []byte(payload))
	m.Metadata.Set(protocol.MetaKind, kind)
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	return m
}

func TestEncodeEvents(t *testing.T) {
	s := New(Config{})
	native, _ := NativeChannel("app1", "presence-room")
	got := s.Encode(websocket.FormatPusher, channelMessage(protocol.KindPublish, `{"t":1}`, map[string]string{
		protocol.MetaPusherEvent: "client-typing", protocol.MetaExcept: "1.2", protocol.MetaUser: "alice"}), native, protocol.Position{})
	want := `{"event":"client-typing","channel":"presence-room","data":"{\"t\":1}","user_id":"alice"}`
	if string(got.Frame) != want || got.Except != "1.2" {
		t.Errorf("client event: %s except %q", got.Frame, got.Except)
	}
	public, _ := NativeChannel("app1", "news")
	got = s.Encode(websocket.FormatPusher, channelMessage(protocol.KindAPI, `"hi"`, map[string]string{protocol.MetaUser: "x"}), public, protocol.Position{})
	if want := `{"event":"message","channel":"news","data":"hi"}`; string(got.Frame) != want || got.Except != "" {
		t.Errorf("a native message: %s except %q", got.Frame, got.Except)
	}
	if got := s.Encode(websocket.FormatPusher, channelMessage(protocol.KindAPI, `1`, nil), "news", protocol.Position{}); got.Frame != nil {
		t.Errorf("a channel no app's: %s", got.Frame)
	}
	if got := s.Encode(websocket.FormatNative, channelMessage(protocol.KindAPI, `1`, nil), public, protocol.Position{}); got.Frame != nil {
		t.Errorf("the native format: %s", got.Frame)
	}
}

// frames lists an Encoded's frames with their exceptions.
func frames(e websocket.Encoded) []string {
	if e.Frame == nil {
		return nil
	}
	out := []string{string(e.Frame) + " except " + e.Except}
	for _, m := range e.More {
		out = append(out, frames(m)...)
	}
	return out
}

func member(user, session string) string {
	b, _ := json.Marshal(protocol.Member{User: user, Session: session, Info: json.RawMessage(`{"n":"` + user + `"}`)})
	return string(b)
}

func TestEncodeMembersOncePerUser(t *testing.T) {
	s := New(Config{})
	native, _ := NativeChannel("app1", "presence-room")
	enc := func(kind, payload string) []string {
		return frames(s.Encode(websocket.FormatPusher, channelMessage(kind, payload, nil), native, protocol.Position{}))
	}
	if got := enc(protocol.KindJoin, member("bob", "1.1")); got != nil {
		t.Fatalf("a join without a Pusher connection on the channel: %v", got)
	}
	s.roster.acquire(native)
	s.roster.seed(native, []protocol.Member{{User: "alice", Session: "9.9"}})
	added := `{"event":"pusher_internal:member_added","channel":"presence-room","data":"{\"user_id\":\"bob\",\"user_info\":{\"n\":\"bob\"}}"} except 1.1`
	if got := enc(protocol.KindJoin, member("bob", "1.1")); len(got) != 1 || got[0] != added {
		t.Fatalf("bob's first connection: %v", got)
	}
	if got := enc(protocol.KindJoin, member("bob", "1.2")); got != nil {
		t.Fatalf("bob's second connection: %v", got)
	}
	if got := enc(protocol.KindJoin, member("alice", "9.9")); got != nil {
		t.Fatalf("alice, seeded: %v", got)
	}
	if got := enc(protocol.KindLeave, member("bob", "1.1")); got != nil {
		t.Fatalf("one of bob's two connections left: %v", got)
	}
	// Coalesced: bob's last connection leaves and carol joins, in one message.
	got := enc(protocol.KindLeave, "["+member("bob", "1.2")+"]")
	if want := `{"event":"pusher_internal:member_removed","channel":"presence-room","data":"{\"user_id\":\"bob\"}"} except `; len(got) != 1 || got[0] != want {
		t.Fatalf("bob's last connection: %v", got)
	}
	got = enc(protocol.KindJoin, "["+member("carol", "2.1")+","+member("dave", "3.1")+","+member("carol", "2.2")+"]")
	if len(got) != 2 {
		t.Fatalf("carol and dave joining: %v", got)
	}
	public, _ := NativeChannel("app1", "room")
	if got := frames(s.Encode(websocket.FormatPusher, channelMessage(protocol.KindJoin, member("x", "4.4"), nil), public, protocol.Position{})); got != nil {
		t.Fatalf("a join on a public channel: %v", got)
	}
	s.roster.release(native)
	if got := enc(protocol.KindJoin, member("erin", "5.1")); got != nil {
		t.Fatalf("after the last Pusher connection left: %v", got)
	}
}
