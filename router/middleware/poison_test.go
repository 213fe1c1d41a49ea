package middleware_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
)

// poisonSink records what Poison publishes.
type poisonSink struct {
	topics []string
	msgs   []*message.Message
}

func (s *poisonSink) publish(topic string, msg *message.Message) error {
	s.topics, s.msgs = append(s.topics, topic), append(s.msgs, msg)
	return nil
}

func TestPoisonCopiesWhatFailedForGoodToTheTopicWithTheReason(t *testing.T) {
	for _, cause := range []error{
		errors.New("broker down"),
		protocol.Errorf(protocol.CodeUnavailable, "breaker open"),
		fmt.Errorf("%w: after 3 attempts", middleware.ErrTimeout),
	} {
		sink, poisoned := &poisonSink{}, prometheus.NewCounter(prometheus.CounterOpts{Name: "poisoned"})
		h := &counting{err: cause}
		msg := newMsg(`{"n":1}`)
		msg.Metadata.Set("channel", "doomed")
		if _, err := middleware.Poison(middleware.PoisonConfig{Topic: "poison", Publish: sink.publish, Poisoned: poisoned})(h.handle)(msg); !errors.Is(err, cause) {
			t.Fatalf("error %v, want the handler's %v (the client is still told)", err, cause)
		}
		if len(sink.msgs) != 1 || sink.topics[0] != "poison" {
			t.Fatalf("%v: published to %v, want one copy on the poison topic", cause, sink.topics)
		}
		c := sink.msgs[0]
		if c == msg || string(c.Payload) != `{"n":1}` || c.Metadata.Get("channel") != "doomed" ||
			c.Metadata.Get(middleware.ReasonForPoisonedKey) != cause.Error() {
			t.Fatalf("copy %q %v, want the message with reason %q", c.Payload, c.Metadata, cause.Error())
		}
		if _, ok := c.Metadata[middleware.PoisonedHandlerKey]; !ok {
			t.Fatalf("copy without %s: %v", middleware.PoisonedHandlerKey, c.Metadata)
		}
		if msg.Metadata.Get(middleware.ReasonForPoisonedKey) != "" {
			t.Fatal("the original message was modified")
		}
		if n := counterValue(t, poisoned); n != 1 {
			t.Fatalf("poisoned counter %v, want 1", n)
		}
	}
}

func TestPoisonLeavesSuccessAndTheClientsFaultsAlone(t *testing.T) {
	sink, poisoned := &poisonSink{}, prometheus.NewCounter(prometheus.CounterOpts{Name: "poisoned"})
	for _, err := range []error{nil, protocol.Errorf(protocol.CodeForbidden, "no"), protocol.Errorf(protocol.CodeRateLimited, "slow")} {
		h := &counting{err: err}
		if _, got := middleware.Poison(middleware.PoisonConfig{Topic: "poison", Publish: sink.publish, Poisoned: poisoned})(h.handle)(newMsg("x")); !errors.Is(got, err) {
			t.Fatalf("error %v, want %v", got, err)
		}
	}
	if len(sink.msgs) != 0 || counterValue(t, poisoned) != 0 {
		t.Fatalf("poisoned %d messages, want none", len(sink.msgs))
	}
}

func TestQuarantinePublishesACopyWithTheReason(t *testing.T) {
	sink, poisoned := &poisonSink{}, prometheus.NewCounter(prometheus.CounterOpts{Name: "poisoned"})
	middleware.PoisonConfig{Topic: "poison", Publish: sink.publish, Poisoned: poisoned}.Quarantine(newMsg("x"), "message is not signed")
	if len(sink.msgs) != 1 || sink.msgs[0].Metadata.Get(middleware.ReasonForPoisonedKey) != "message is not signed" {
		t.Fatalf("quarantined %v", sink.msgs)
	}
	if counterValue(t, poisoned) != 1 {
		t.Fatal("quarantine not counted")
	}
}
