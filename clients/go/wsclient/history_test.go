package wsclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wsgateway/gateway/clients/go/wsclient"
)

// TestHistoryAndRewind: History pages a channel's history both ways, acks carry the message's
// position, WithRewind gives the newest messages before the live ones, and a channel the token
// does not allow is refused.
func TestHistoryAndRewind(t *testing.T) {
	broker, prefix := newBroker(t)
	n := startNode(t, broker, prefix, "node-a")
	alice := dial(t, wsclient.Options{URL: n.URL, Token: allowAll(t, "alice")})
	var acks []wsclient.Ack
	for i := range 5 {
		acks = append(acks, publish(t, alice, "log", i))
		if acks[i].Position == "" {
			t.Fatalf("ack %d without a position: %+v", i, acks[i])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	data := func(p *wsclient.HistoryPage) string {
		s := ""
		for _, m := range p.Messages {
			s += string(m.Data)
		}
		return s
	}
	p, err := alice.History(ctx, "log", wsclient.HistoryReverse(), wsclient.HistoryLimit(3))
	if err != nil || data(p) != "432" || p.Next != acks[2].Position || p.Messages[0].Position != acks[4].Position || p.Messages[0].Channel != "log" {
		t.Fatalf("reverse page: %+v %v", p, err)
	}
	if p, err = alice.History(ctx, "log", wsclient.HistoryReverse(), wsclient.HistorySince(p.Next)); err != nil || data(p) != "10" || p.Next != "" {
		t.Fatalf("reverse page 2: %+v %v", p, err)
	}
	if p, err = alice.History(ctx, "log", wsclient.HistorySince(acks[0].Position), wsclient.HistoryLimit(2)); err != nil || data(p) != "12" || p.Next != acks[2].Position {
		t.Fatalf("forward page: %+v %v", p, err)
	}
	if _, err = alice.History(ctx, "log", wsclient.HistoryLimit(1001)); err == nil {
		t.Fatal("limit 1001 accepted")
	}

	sub := subscribe(t, alice, "log", wsclient.WithRewind(2))
	expectData(t, sub.Messages(), "3", "4")
	if !sub.Recovered() || sub.Position() != acks[4].Position {
		t.Fatalf("after the rewind: recovered %v position %q", sub.Recovered(), sub.Position())
	}
	publish(t, alice, "log", 5)
	expectData(t, sub.Messages(), "5")

	bob := dial(t, wsclient.Options{URL: n.URL, Token: token(t, "bob", time.Hour, []string{"other"}, nil)})
	var e *wsclient.Error
	if _, err := bob.History(ctx, "log"); !errors.As(err, &e) || e.Code != wsclient.CodeForbidden {
		t.Fatalf("history of a channel bob may not subscribe to: %v", err)
	}
}
