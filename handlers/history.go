package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// HistoryConfig is what a HistoryReader needs.
type HistoryConfig struct {
	History History // the node's view of the broker's history (router.Feed)
	// MaxReplay is the most messages one read returns (history.max_replay).
	MaxReplay int
	// Bounds gives the count and age a read of channel may reach back (history.channels); zero
	// for no bound of its own. Nil: none.
	Bounds func(channel string) (size int, ttl time.Duration)
}

// HistoryReader is the one place a node reads channel history, within the history rules: the
// resume of a subscribe (since), its rewind, the `history` frame and GET /api/history. Channel
// names are the node's ($user:<id>, not $user). Safe for concurrent use; it holds no state.
type HistoryReader struct {
	cfg HistoryConfig
}

// NewHistoryReader makes the reader.
func NewHistoryReader(cfg HistoryConfig) *HistoryReader {
	return &HistoryReader{cfg: cfg}
}

// errNoHistory answers a history read on a broker that keeps none.
var errNoHistory = protocol.Errorf(protocol.CodeUnavailable, "this broker keeps no history (core NATS): use jetstream, redis, kafka or memory")

// errOutOfReach answers a forward page whose since the history (or the channel's rule) no
// longer reaches.
var errOutOfReach = protocol.Errorf(protocol.CodeNotFound, "the history no longer reaches since: read without since for the newest messages")

// bounds are the count (0: none but MaxReplay) and age (0: none) of channel's rule.
func (h *HistoryReader) bounds(channel string) (size int, ttl time.Duration) {
	if h.cfg.Bounds != nil {
		return h.cfg.Bounds(channel)
	}
	return 0, 0
}

// Keeps reports whether the broker keeps history.
func (h *HistoryReader) Keeps() bool { return h.cfg.History.KeepsHistory() }

// Last is the channel's current position: after it comes what is published next.
func (h *HistoryReader) Last(ctx context.Context, channel string) (protocol.Position, error) {
	return h.cfg.History.Last(ctx, channel)
}

// Resume returns, oldest first, what channel had after since, when all of it is within reach:
// within MaxReplay, the channel's count and age rules and the broker's history; complete false
// (and no message) otherwise.
func (h *HistoryReader) Resume(ctx context.Context, channel string, since protocol.Position) ([]*message.Message, bool, error) {
	limit := h.cfg.MaxReplay
	size, ttl := h.bounds(channel)
	if size > 0 && size < limit {
		limit = size // more missed than the channel's rule keeps: not recoverable
	}
	msgs, complete, err := h.cfg.History.Replay(ctx, channel, since, limit)
	if err != nil {
		return nil, false, err
	}
	if complete && ttl > 0 && len(msgs) > 0 && tooOld(msgs[0], ttl) {
		complete = false // the first missed message is past the channel's age bound
	}
	if !complete {
		return nil, false, nil
	}
	return msgs, true, nil
}

// Rewind returns, oldest first, the channel's newest messages (at most n, and within the
// channel's count and age rules), and the position live messages follow: the newest of them,
// or, when there is none, the channel's position before the read. A subscribe joins the
// channel (holding its live messages) before it calls Rewind, so that every message after the
// returned position comes live: no gap, no duplicate. kept is false when the broker keeps no
// history (then there are no messages and the position is Last).
func (h *HistoryReader) Rewind(ctx context.Context, channel string, n int) (msgs []*message.Message, cut protocol.Position, kept bool, err error) {
	cut, err = h.cfg.History.Last(ctx, channel) // before the read: see above
	if err != nil {
		return nil, cut, false, err
	}
	if !h.Keeps() {
		return nil, cut, false, nil
	}
	size, ttl := h.bounds(channel)
	if size > 0 {
		n = min(n, size)
	}
	msgs, err = h.cfg.History.Before(ctx, channel, protocol.Position{}, min(n, h.cfg.MaxReplay))
	if errors.Is(err, transports.ErrNoHistory) {
		return nil, cut, false, nil
	}
	if err != nil {
		return nil, cut, false, err
	}
	msgs = young(msgs, ttl)
	if len(msgs) > 0 {
		if p, perr := protocol.ParsePosition(msgs[0].Metadata.Get(protocol.MetaPosition)); perr == nil {
			cut = p
		}
	}
	slices.Reverse(msgs)
	return msgs, cut, true, nil
}

// young returns the messages of msgs (newest first) up to the first one older than ttl.
func young(msgs []*message.Message, ttl time.Duration) []*message.Message {
	if ttl <= 0 {
		return msgs
	}
	for i, m := range msgs {
		if tooOld(m, ttl) {
			return msgs[:i]
		}
	}
	return msgs
}

// HistoryPage is a page of a channel's history: Messages oldest first, or newest first for a
// reverse page, and Next, when not zero, the since of the next page.
type HistoryPage struct {
	Messages []*message.Message
	Next     protocol.Position
}

// Page reads a page of at most limit messages (0: protocol.HistoryPage; never more than
// MaxReplay) of channel. Forward (reverse false): the messages after since, oldest first, or
// without since the newest limit messages, oldest first; Next is set when more follow the page.
// Reverse: the messages before since (without since: from the newest), newest first; Next is set
// when the page is full and older messages may remain within the rules. A read never reaches
// past the channel's rule: no message older than its ttl, none beyond its newest size messages.
// A forward since the history or the rules no longer reach (what follows it is not all there,
// as for a resume) gives not_found; a reverse one an empty page. On a broker without history: unavailable.
func (h *HistoryReader) Page(ctx context.Context, channel string, since protocol.Position, limit int, reverse bool) (HistoryPage, error) {
	if !h.Keeps() {
		return HistoryPage{}, errNoHistory
	}
	if limit <= 0 {
		limit = protocol.HistoryPage
	}
	limit = min(limit, h.cfg.MaxReplay)
	size, ttl := h.bounds(channel)
	if since.IsZero() {
		if size > 0 {
			limit = min(limit, size)
		}
		msgs, err := h.before(ctx, channel, since, limit)
		if err != nil {
			return HistoryPage{}, err
		}
		msgs = young(msgs, ttl)
		page := HistoryPage{Messages: msgs}
		if !reverse {
			slices.Reverse(page.Messages)
		} else if len(msgs) == limit && (size == 0 || limit < size) {
			page.Next = positionOf(msgs[len(msgs)-1])
		}
		return page, nil
	}
	if !reverse {
		return h.forward(ctx, channel, since, limit, size, ttl)
	}
	// Backwards from since: within the count rule only while since is among the newest size.
	room := -1 // how many messages before since the rule still lets in; -1: no count rule
	if size > 0 {
		after, complete, err := h.cfg.History.Replay(ctx, channel, since, size)
		if err != nil {
			return HistoryPage{}, err
		}
		if !complete {
			return HistoryPage{}, nil // since is beyond the rule (or the history): nothing older
		}
		room = max(size-len(after)-1, 0) // since itself counts as one of the size
		limit = min(limit, room)
		if limit == 0 {
			return HistoryPage{}, nil
		}
	}
	msgs, err := h.before(ctx, channel, since, limit)
	if err != nil {
		return HistoryPage{}, err
	}
	kept := young(msgs, ttl)
	page := HistoryPage{Messages: kept}
	if len(kept) == limit && len(msgs) == limit && (room < 0 || room > limit) {
		page.Next = positionOf(kept[len(kept)-1])
	}
	return page, nil
}

// forward reads the page after since.
func (h *HistoryReader) forward(ctx context.Context, channel string, since protocol.Position, limit, size int, ttl time.Duration) (HistoryPage, error) {
	want := limit
	if size > 0 {
		want = size // everything after since must be among the newest size
	}
	msgs, complete, err := h.cfg.History.Replay(ctx, channel, since, want)
	if err != nil {
		return HistoryPage{}, err
	}
	// Out of reach: the broker's history no longer reaches since (fewer than asked and not all
	// of them), or more than the count rule's size messages followed it, or the first of them
	// is older than the age rule: as for a resume, what follows since is not all there.
	if !complete && (len(msgs) < want || size > 0) || ttl > 0 && len(msgs) > 0 && tooOld(msgs[0], ttl) {
		return HistoryPage{}, errOutOfReach
	}
	more := !complete
	if len(msgs) > limit {
		msgs, more = msgs[:limit], true
	}
	page := HistoryPage{Messages: msgs}
	if more && len(msgs) > 0 {
		page.Next = positionOf(msgs[len(msgs)-1])
	}
	return page, nil
}

// before is History.Before, with a broker that cannot read backwards answered as one without
// history.
func (h *HistoryReader) before(ctx context.Context, channel string, before protocol.Position, limit int) ([]*message.Message, error) {
	msgs, err := h.cfg.History.Before(ctx, channel, before, limit)
	if errors.Is(err, transports.ErrNoHistory) {
		return nil, errNoHistory
	}
	return msgs, err
}

func positionOf(m *message.Message) protocol.Position {
	p, _ := protocol.ParsePosition(m.Metadata.Get(protocol.MetaPosition))
	return p
}

// Frames encodes the page's messages for a client of channel (clientName: the name the client
// knows it by) exactly as live frames, skipping a message repeated with the same msg_id (one
// published through two nodes is in the history twice).
func (p HistoryPage) Frames(channel, clientName string) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(p.Messages))
	sent := map[string]bool{}
	for _, m := range p.Messages {
		if m.Metadata.Get(protocol.MetaIdempotent) == "1" {
			if sent[m.UUID] {
				continue
			}
			sent[m.UUID] = true
		}
		frame, _ := channelFrame(m, channel, clientName)
		out = append(out, frame)
	}
	return out
}
