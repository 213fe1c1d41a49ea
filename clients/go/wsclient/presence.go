package wsclient

import (
	"context"
	"fmt"

	"github.com/wsgateway/gateway/protocol"
)

// PresencePage is a page of a presence channel's members (the answer to a `presence` frame).
type PresencePage struct {
	// Members are ordered by session id.
	Members []Member
	// Next, when not "", is where the next page starts: pass it WithAfter.
	Next string
	// Stats is set, and Members empty, when the channel has more members than the server lists
	// (presence.max_members): the server answered with the counts only.
	Stats *PresenceStats
}

// PresenceOption changes a Presence call.
type PresenceOption func(*presenceOptions)

type presenceOptions struct {
	after string
	limit int
}

// WithAfter asks for the members after the session id after: the Next of the previous page.
func WithAfter(after string) PresenceOption {
	return func(o *presenceOptions) { o.after = after }
}

// WithLimit asks for at most n members (1 to protocol.MaxPresencePage; the server's default
// page is protocol.PresencePage).
func WithLimit(n int) PresenceOption {
	return func(o *presenceOptions) { o.limit = n }
}

// Presence returns a page of the members of channel, a presence channel (presence.channels)
// the client may subscribe to; it need not be subscribed. The first page is without WithAfter;
// the next one WithAfter(page.Next), until Next is "". It fails with an *Error when the server
// refuses (CodeForbidden, CodeBadRequest for a channel without presence, CodeUnavailable on a
// broker that keeps no presence). While the client is disconnected it waits for the connection
// (bounded by ctx); a reply lost with its connection is ErrConnectionLost, not retried.
func (c *Client) Presence(ctx context.Context, channel string, opts ...PresenceOption) (*PresencePage, error) {
	var o presenceOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.limit < 0 || o.limit > protocol.MaxPresencePage {
		return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("limit must be between 1 and %d", protocol.MaxPresencePage)}
	}
	f, err := c.request(ctx, outFrame{Type: protocol.TypePresence, Channel: channel, After: o.after, Limit: o.limit})
	if err != nil {
		return nil, err
	}
	p := &PresencePage{Members: f.Members, Next: f.Next}
	if f.Members == nil && f.Connections != nil {
		p.Stats = &PresenceStats{Connections: *f.Connections, Users: f.Users}
	}
	if p.Members == nil {
		p.Members = []Member{}
	}
	return p, nil
}

// PresenceAll returns every member of channel, reading the pages one after the other (see
// Presence). Members that join or leave meanwhile may or may not be in it. When the server
// answers with the counts only (more members than presence.max_members), it returns no members
// and the counts.
func (c *Client) PresenceAll(ctx context.Context, channel string) ([]Member, *PresenceStats, error) {
	var all []Member
	after := ""
	for {
		p, err := c.Presence(ctx, channel, WithAfter(after), WithLimit(protocol.MaxPresencePage))
		if err != nil {
			return nil, nil, err
		}
		if p.Stats != nil {
			return nil, p.Stats, nil
		}
		all = append(all, p.Members...)
		if p.Next == "" {
			if all == nil {
				all = []Member{}
			}
			return all, nil, nil
		}
		after = p.Next
	}
}

// PresenceStats returns the number of members (connections) of channel and of distinct users
// among them; errors as Presence.
func (c *Client) PresenceStats(ctx context.Context, channel string) (PresenceStats, error) {
	f, err := c.request(ctx, outFrame{Type: protocol.TypePresenceStats, Channel: channel})
	if err != nil {
		return PresenceStats{}, err
	}
	if f.Connections == nil {
		return PresenceStats{}, fmt.Errorf("wsclient: presence_stats answered without counts")
	}
	return PresenceStats{Connections: *f.Connections, Users: f.Users}, nil
}

// request sends a request of type f.Type on the live connection and returns the reply, which
// must have the same type.
func (c *Client) request(ctx context.Context, f outFrame) (*frame, error) {
	cn, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.roundTrip(ctx, cn, f)
	if err != nil {
		return nil, err
	}
	if r.Type != f.Type {
		return nil, fmt.Errorf("wsclient: %s answered by %q", f.Type, r.Type)
	}
	return r, nil
}
