package wsclient

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/wsgateway/gateway/protocol"
)

// HistoryPage is a page of a channel's history (the answer to a `history` frame).
type HistoryPage struct {
	// Messages are the channel's messages (and joins and leaves) as Subscription.Messages
	// delivers them: oldest first, or newest first WithReverse.
	Messages []Message
	// Next, when not "", is where the next page starts: pass it HistorySince.
	Next string
}

// HistoryOption changes a History call.
type HistoryOption func(*historyOptions)

type historyOptions struct {
	since   string
	limit   int
	reverse bool
}

// HistorySince asks for the messages after position (before it WithReverse): a Message.Position,
// or the Next of the previous page.
func HistorySince(position string) HistoryOption {
	return func(o *historyOptions) { o.since = position }
}

// HistoryLimit asks for at most n messages (1 to protocol.MaxHistoryPage; the server's default
// page is protocol.HistoryPage, and history.max_replay caps it).
func HistoryLimit(n int) HistoryOption {
	return func(o *historyOptions) { o.limit = n }
}

// HistoryReverse reads backwards: from HistorySince (or from the newest message), newest first.
func HistoryReverse() HistoryOption {
	return func(o *historyOptions) { o.reverse = true }
}

// History returns a page of channel's history, for a channel the client may subscribe to; it
// need not be subscribed. Without HistorySince: the newest messages (oldest first, or newest
// first with HistoryReverse). It fails with an *Error when the server refuses (CodeForbidden,
// CodeNotFound when the history no longer reaches HistorySince, CodeUnavailable on a broker
// that keeps no history). While the client is disconnected it waits for the connection
// (bounded by ctx); a reply lost with its connection is ErrConnectionLost, not retried.
func (c *Client) History(ctx context.Context, channel string, opts ...HistoryOption) (*HistoryPage, error) {
	var o historyOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.limit < 0 || o.limit > protocol.MaxHistoryPage {
		return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("limit must be between 1 and %d", protocol.MaxHistoryPage)}
	}
	f, err := c.request(ctx, outFrame{Type: protocol.TypeHistory, Channel: channel, Since: o.since, Limit: o.limit, Reverse: o.reverse})
	if err != nil {
		return nil, err
	}
	p := &HistoryPage{Messages: make([]Message, 0, len(f.Messages)), Next: f.Next}
	for _, raw := range f.Messages {
		var m frame
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("wsclient: history message: %w", err)
		}
		switch m.Type {
		case protocol.TypeJoin, protocol.TypeLeave:
			p.Messages = append(p.Messages, m.joinLeave())
		default:
			p.Messages = append(p.Messages, m.message())
		}
	}
	return p, nil
}
