package handlers

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// fakeHistory is a channel's history of messages 1..n (position Lo = n), of which those from
// first on are kept; stored[i] is when message i+1 was stored.
type fakeHistory struct {
	n, first int
	stored   []time.Time
	reverse  bool // Before works
}

func (h *fakeHistory) msg(i int) *message.Message {
	m := message.NewMessage("m"+strconv.Itoa(i), []byte(strconv.Itoa(i)))
	m.Metadata.Set(protocol.MetaPosition, protocol.Position{Epoch: "e", Lo: uint64(i)}.String())
	if h.stored != nil {
		m.Metadata.Set(protocol.MetaStoredAt, strconv.FormatInt(h.stored[i-1].UnixMilli(), 10))
	}
	return m
}

func (h *fakeHistory) Last(context.Context, string) (protocol.Position, error) {
	return protocol.Position{Epoch: "e", Lo: uint64(h.n)}, nil
}

func (h *fakeHistory) Replay(_ context.Context, _ string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	if int(since.Lo)+1 < h.first {
		return nil, false, nil // trimmed past since
	}
	var out []*message.Message
	for i := int(since.Lo) + 1; i <= h.n; i++ {
		if len(out) == limit {
			return out, false, nil
		}
		out = append(out, h.msg(i))
	}
	return out, true, nil
}

func (h *fakeHistory) Before(_ context.Context, _ string, before protocol.Position, limit int) ([]*message.Message, error) {
	if !h.reverse {
		return nil, transports.ErrNoHistory
	}
	end := h.n
	if !before.IsZero() {
		end = int(before.Lo) - 1
	}
	var out []*message.Message
	for i := end; i >= h.first && len(out) < limit; i-- {
		out = append(out, h.msg(i))
	}
	return out, nil
}

func (h *fakeHistory) KeepsHistory() bool { return true }

func pageData(p HistoryPage) string {
	var s []string
	for _, m := range p.Messages {
		s = append(s, string(m.Payload))
	}
	return strings.Join(s, ",")
}

func codeOf(err error) string {
	if err == nil {
		return ""
	}
	code, _ := protocol.CodeOf(err, "")
	return code
}

func at(i int) protocol.Position { return protocol.Position{Epoch: "e", Lo: uint64(i)} }

func TestHistoryReaderPage(t *testing.T) {
	ctx := context.Background()
	h := &fakeHistory{n: 10, first: 4, reverse: true}
	r := NewHistoryReader(HistoryConfig{History: h, MaxReplay: 5})
	for _, tc := range []struct {
		name    string
		since   protocol.Position
		limit   int
		reverse bool
		want    string
		next    protocol.Position
		code    string
	}{
		{name: "newest, capped by max_replay", limit: 100, want: "6,7,8,9,10"},
		{name: "forward", since: at(5), limit: 2, want: "6,7", next: at(7)},
		{name: "forward to the end", since: at(7), limit: 5, want: "8,9,10"},
		{name: "forward from a trimmed since", since: at(2), limit: 100, code: protocol.CodeNotFound},
		{name: "reverse", reverse: true, limit: 3, want: "10,9,8", next: at(8)},
		{name: "reverse to the oldest kept", since: at(6), reverse: true, limit: 3, want: "5,4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := r.Page(ctx, "c", tc.since, tc.limit, tc.reverse)
			if tc.code != "" || err != nil {
				if code := codeOf(err); code != tc.code {
					t.Fatalf("error %v; want code %q", err, tc.code)
				}
				return
			}
			if pageData(p) != tc.want || p.Next != tc.next {
				t.Fatalf("page %s next %v; want %s next %v", pageData(p), p.Next, tc.want, tc.next)
			}
		})
	}

	// Rules: size 3 (the newest 3: 8, 9, 10), and an age of an hour for messages 1..7.
	now := time.Now()
	h = &fakeHistory{n: 10, first: 1, reverse: true, stored: make([]time.Time, 10)}
	for i := range h.stored {
		h.stored[i] = now
		if i < 7 {
			h.stored[i] = now.Add(-2 * time.Hour)
		}
	}
	sized := NewHistoryReader(HistoryConfig{History: h, MaxReplay: 100, Bounds: func(string) (int, time.Duration) { return 3, 0 }})
	aged := NewHistoryReader(HistoryConfig{History: h, MaxReplay: 100, Bounds: func(string) (int, time.Duration) { return 0, time.Hour }})
	for _, tc := range []struct {
		name    string
		r       *HistoryReader
		since   protocol.Position
		limit   int
		reverse bool
		want    string
		next    protocol.Position
		code    string
	}{
		{name: "size: newest", r: sized, limit: 10, want: "8,9,10"},
		{name: "size: reverse pages stop at the rule", r: sized, reverse: true, limit: 2, want: "10,9", next: at(9)},
		{name: "size: reverse page 2", r: sized, since: at(9), reverse: true, limit: 2, want: "8"},
		{name: "size: reverse beyond the rule", r: sized, since: at(8), reverse: true, limit: 2, want: ""},
		{name: "size: forward within", r: sized, since: at(7), limit: 10, want: "8,9,10"},
		{name: "size: forward beyond", r: sized, since: at(6), limit: 10, code: protocol.CodeNotFound},
		{name: "age: newest", r: aged, limit: 10, want: "8,9,10"},
		{name: "age: reverse stops at the first too old", r: aged, reverse: true, limit: 5, want: "10,9,8"},
		{name: "age: forward from before old ones", r: aged, since: at(5), limit: 10, code: protocol.CodeNotFound},
		{name: "age: forward from young", r: aged, since: at(7), limit: 2, want: "8,9", next: at(9)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.r.Page(ctx, "c", tc.since, tc.limit, tc.reverse)
			if tc.code != "" || err != nil {
				if code := codeOf(err); code != tc.code {
					t.Fatalf("error %v; want code %q", err, tc.code)
				}
				return
			}
			if pageData(p) != tc.want || p.Next != tc.next {
				t.Fatalf("page %q next %v; want %q next %v", pageData(p), p.Next, tc.want, tc.next)
			}
		})
	}
}

func TestHistoryReaderRewind(t *testing.T) {
	ctx := context.Background()
	h := &fakeHistory{n: 10, first: 1, reverse: true}
	r := NewHistoryReader(HistoryConfig{History: h, MaxReplay: 100, Bounds: func(string) (int, time.Duration) { return 4, 0 }})
	msgs, cut, kept, err := r.Rewind(ctx, "c", 6)
	if err != nil || !kept || pageData(HistoryPage{Messages: msgs}) != "7,8,9,10" || cut != at(10) {
		t.Fatalf("rewind 6 under size 4: %s cut %v kept %v err %v", pageData(HistoryPage{Messages: msgs}), cut, kept, err)
	}
	h.reverse = false // a broker that cannot read backwards: nothing, and the current position
	if msgs, cut, kept, err = r.Rewind(ctx, "c", 3); err != nil || kept || len(msgs) != 0 || cut != at(10) {
		t.Fatalf("rewind without Before: %d msgs cut %v kept %v err %v", len(msgs), cut, kept, err)
	}
}
