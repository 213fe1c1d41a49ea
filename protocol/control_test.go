package protocol

import (
	"strings"
	"testing"
	"time"
)

func TestControlPrepare(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	tests := []struct {
		name string
		in   Control
		err  string // a part of the error; "" for none
	}{
		{"disconnect user", Control{Kind: ControlDisconnect, User: "u"}, ""},
		{"disconnect session", Control{Kind: ControlDisconnect, Session: "s", Code: "kicked"}, ""},
		{"disconnect both", Control{Kind: ControlDisconnect, User: "u", Session: "s"}, "exactly one of user and session"},
		{"disconnect none", Control{Kind: ControlDisconnect}, "exactly one of user and session"},
		{"disconnect bad code", Control{Kind: ControlDisconnect, User: "u", Code: "a b"}, "code must match"},
		{"subscribe", Control{Kind: ControlSubscribe, User: "u", Channel: "room:1"}, ""},
		{"subscribe no user", Control{Kind: ControlSubscribe, Channel: "room:1"}, "user is required"},
		{"subscribe bad channel", Control{Kind: ControlSubscribe, User: "u", Channel: "$user"}, "channel must match"},
		{"unsubscribe", Control{Kind: ControlUnsubscribe, User: "u", Channel: "room:1"}, ""},
		{"revoke user", Control{Kind: ControlRevoke, User: "u", Until: later}, ""},
		{"revoke jti", Control{Kind: ControlRevoke, JTI: "j", Until: later}, ""},
		{"revoke both", Control{Kind: ControlRevoke, User: "u", JTI: "j", Until: later}, "exactly one of user and jti"},
		{"revoke no until", Control{Kind: ControlRevoke, User: "u"}, "until is required"},
		{"revoke past", Control{Kind: ControlRevoke, User: "u", Until: now}, "until must be in the future"},
		{"revoke jti before", Control{Kind: ControlRevoke, JTI: "j", Before: now, Until: later}, "before applies"},
		{"unknown kind", Control{Kind: "kick", User: "u"}, "kind must be"},
		{"long id", Control{ID: strings.Repeat("x", MaxMsgIDLen+1), Kind: ControlDisconnect, User: "u"}, "id must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in
			err := c.Prepare(now)
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				if c.ID == "" {
					t.Fatal("no id made")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Prepare = %v, want an error with %q", err, tt.err)
			}
			if code, _ := CodeOf(err, ""); code != CodeBadRequest {
				t.Fatalf("code %q, want bad_request", code)
			}
		})
	}
}

func TestControlDefaultsAndKeys(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	d := Control{ID: "given", Kind: ControlDisconnect, User: "u"}
	if err := d.Prepare(now); err != nil {
		t.Fatal(err)
	}
	if d.ID != "given" || d.Code != DisconnectCodeControl || d.Reason == "" || d.Reconnect {
		t.Fatalf("disconnect defaults %+v", d)
	}
	r := Control{Kind: ControlRevoke, User: "u", Until: now.Add(time.Hour)}
	if err := r.Prepare(now); err != nil {
		t.Fatal(err)
	}
	if !r.Before.Equal(now) {
		t.Fatalf("a user revocation's before %v, want now", r.Before)
	}
	if r.Expired(now) || !r.Expired(now.Add(time.Hour)) {
		t.Fatal("Expired wrong around until")
	}
	back, err := DecodeControl(r.Encode())
	if err != nil || back.ID != r.ID || !back.Until.Equal(r.Until) || !back.Before.Equal(r.Before) {
		t.Fatalf("round trip %+v, %v", back, err)
	}
	keys := map[string]Control{
		"revoke/user/u":      {Kind: ControlRevoke, User: "u"},
		"revoke/jti/j":       {Kind: ControlRevoke, JTI: "j"},
		"subscribe/u/room:1": {Kind: ControlUnsubscribe, User: "u", Channel: "room:1"},
	}
	for want, c := range keys {
		if got := c.StoreKey(); got != want {
			t.Fatalf("StoreKey %q, want %q", got, want)
		}
	}
	sub := Control{Kind: ControlSubscribe, User: "u", Channel: "room:1"}
	if sub.StoreKey() != keys["subscribe/u/room:1"].StoreKey() {
		t.Fatal("a subscribe and its unsubscribe have different keys")
	}
	if DisconnectRevoked.CloseCode() != CloseRevoked || (Disconnect{Code: "kicked"}).CloseCode() != CloseNormal {
		t.Fatal("close codes")
	}
}
