package middleware_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/internal/signing"
	"github.com/wsgateway/gateway/router/middleware"
)

func TestVerifySignatureDeliversOnlySignedMessages(t *testing.T) {
	keys, err := signing.ParseKeys([]string{"k2:new-secret", "k1:old-secret"})
	if err != nil {
		t.Fatal(err)
	}
	oldKeys, _ := signing.ParseKeys([]string{"k1:old-secret"})
	strangers, _ := signing.ParseKeys([]string{"k1:another-secret"})
	const topic = "channel.news"
	signed := func(k *signing.Keys, topic string) *message.Message {
		m := newMsg("hello")
		k.Sign(topic, m)
		return m
	}

	for _, tt := range []struct {
		name    string
		msg     *message.Message
		deliver bool
		reason  error
	}{
		{"signed with the current key", signed(keys, topic), true, nil},
		{"signed with an older key", signed(oldKeys, topic), true, nil},
		{"unsigned", newMsg("hello"), false, signing.ErrUnsigned},
		{"signed for another topic", signed(keys, "channel.other"), false, signing.ErrBadSignature},
		{"signed with a wrong secret", signed(strangers, topic), false, signing.ErrBadSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rejected := prometheus.NewCounter(prometheus.CounterOpts{Name: "unsigned"})
			var quarantined []string
			h := &counting{}
			mw := middleware.VerifySignature(middleware.SignatureConfig{
				Keys:       keys,
				TopicOf:    func(*message.Message) string { return topic },
				Rejected:   rejected,
				Quarantine: func(_ *message.Message, reason string) { quarantined = append(quarantined, reason) },
				Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
			})(h.handle)
			if _, err := mw(tt.msg); err != nil {
				t.Fatalf("error %v: a dropped message is acked, never nacked", err)
			}
			if delivered := h.calls == 1; delivered != tt.deliver {
				t.Fatalf("delivered %v, want %v", delivered, tt.deliver)
			}
			if tt.deliver {
				if len(quarantined) != 0 || counterValue(t, rejected) != 0 {
					t.Fatal("a signed message was quarantined or counted")
				}
				return
			}
			if len(quarantined) != 1 || quarantined[0] != tt.reason.Error() || counterValue(t, rejected) != 1 {
				t.Fatalf("quarantined %q, counted %v; want %q once", quarantined, counterValue(t, rejected), tt.reason)
			}
		})
	}
}
