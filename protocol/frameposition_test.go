package protocol

import "testing"

func TestFramePosition(t *testing.T) {
	m := Member{User: "u", Session: "s", Info: []byte(`{"channel":"x","position":"y"}`)}
	for _, tc := range []struct {
		name         string
		frame        []byte
		channel, pos string
		ok           bool
	}{
		{"message", ChannelMessageFrame("news", "id-1", "0:0:5:abc", []byte(`{"channel":"no","position":"no"}`), &From{User: "u"}), "news", "0:0:5:abc", true},
		{"message with escapes in the id", ChannelMessageFrame("news", `a"b`, "0:0:6:abc", []byte(`1`), nil), "news", "0:0:6:abc", true},
		{"binary message", ChannelMessageFrame("news", "id-2", "0:0:7:abc", []byte{0xff}, nil), "news", "0:0:7:abc", true},
		{"message without a position", ChannelMessageFrame("news", "id-3", "", []byte(`1`), nil), "", "", false},
		{"join", JoinLeaveFrame(TypeJoin, "room", "0:0:8:abc", m), "room", "0:0:8:abc", true},
		{"leave of many", JoinLeaveManyFrame(TypeLeave, "room", "0:0:9:abc", []Member{m, m}), "room", "0:0:9:abc", true},
		{"subscribed", SubscribedFrame("1", "$user", "0:0:10:abc", true), "$user", "0:0:10:abc", true},
		{"direct message", DirectMessageFrame(TargetSession, "id-4", []byte(`{"channel":"x","position":"y"}`)), "", "", false},
		{"error", ErrorReply("1", Errorf(CodeForbidden, "no")), "", "", false},
		{"welcome", Encode(Welcome{Type: TypeWelcome, Session: "s"}), "", "", false},
	} {
		ch, pos, ok := FramePosition(tc.frame)
		if ch != tc.channel || pos != tc.pos || ok != tc.ok {
			t.Errorf("%s: FramePosition(%s) = %q, %q, %v; want %q, %q, %v", tc.name, tc.frame, ch, pos, ok, tc.channel, tc.pos, tc.ok)
		}
	}
}

func BenchmarkFramePosition(b *testing.B) {
	frame := ChannelMessageFrame("news", "0b9f7c1e-2f6e-4c55-9a5e-0c3f1f6f1d2a", "ws-ch6:1733480000000:0:1dd39950", []byte(`{"text":"hello"}`), nil)
	for b.Loop() {
		if _, _, ok := FramePosition(frame); !ok {
			b.Fatal("no position")
		}
	}
}
