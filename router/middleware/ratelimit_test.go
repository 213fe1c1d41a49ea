package middleware_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/time/rate"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/router/middleware"
)

func TestRateLimitRefusesWhenALimiterIsEmptyAndPassesOtherwise(t *testing.T) {
	conn := rate.NewLimiter(0, 1) // one token, never refilled
	user := rate.NewLimiter(rate.Inf, 0)
	h := &counting{out: []*message.Message{newMsg("out")}}
	mw := middleware.RateLimit(func(*message.Message) []*rate.Limiter { return []*rate.Limiter{user, nil, conn} })(h.handle)

	out, err := mw(newMsg("1"))
	if err != nil || len(out) != 1 || h.calls != 1 {
		t.Fatalf("first message: out %d, err %v, handler calls %d; want it passed", len(out), err, h.calls)
	}
	out, err = mw(newMsg("2"))
	wantCode(t, err, protocol.CodeRateLimited)
	if out != nil || h.calls != 1 {
		t.Fatalf("refused message reached the handler (calls %d) or produced %d messages", h.calls, len(out))
	}
}

func TestRateLimitPassesMessagesWithoutLimiters(t *testing.T) {
	h := &counting{}
	mw := middleware.RateLimit(func(*message.Message) []*rate.Limiter { return nil })(h.handle)
	for i := 0; i < 3; i++ {
		if _, err := mw(newMsg("x")); err != nil {
			t.Fatal(err)
		}
	}
	if h.calls != 3 {
		t.Fatalf("handler calls %d, want 3", h.calls)
	}
}
