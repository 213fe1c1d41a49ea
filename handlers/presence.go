package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/wsgateway/gateway/internal/auth"
	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// PresenceConfig is what Presence needs.
type PresenceConfig struct {
	NodeID string
	// Presence is the broker's; nil when the broker keeps none (every query answers
	// `unavailable`, and nothing is joined).
	Presence   transports.Presence
	Channels   []string // patterns of presence channels (presence.channels)
	JoinLeave  []string // patterns of the presence channels with join and leave frames
	MaxMembers int      // most members a `presence` answer lists (beyond: counts only); -1: no cap
	Inbox      Submitter
	Events     *Events       // nil: lifecycle events disabled
	Timeout    time.Duration // of each broker call and each join/leave publish
	// Coalesce is the window for which this node gathers the joins and leaves it announces in a
	// channel before it publishes them, as few messages (presence.coalesce); 0: one message
	// per join or leave, published at once.
	Coalesce time.Duration
	// Sessions records every connection as a member of SessionsChannel, so that a node that dies
	// has its connections told disconnected (reason node_lost) by a surviving one (events.node_lost).
	Sessions bool
	Log      *slog.Logger
}

// Presence records the members of presence channels in the broker, publishes their joins and
// leaves into the channel's stream, emits the presence lifecycle events, and answers presence
// queries (frames and HTTP API). Safe for concurrent use; a nil *Presence is presence off.
type Presence struct {
	cfg PresenceConfig

	coalesce *coalescer // nil: presence.coalesce 0

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // the announces of reaped members' leaves
	ctx    context.Context
	cancel context.CancelFunc
}

// NewPresence makes the presence handler and sets it as the broker's OnReap (before the broker
// starts). It starts nothing; Close ends its work.
func NewPresence(cfg PresenceConfig) *Presence {
	p := &Presence{cfg: cfg}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.Coalesce > 0 {
		p.coalesce = newCoalescer(cfg.Coalesce, p.publish)
	}
	if cfg.Presence != nil && (len(cfg.Channels) > 0 || cfg.Sessions) {
		cfg.Presence.OnReap(p.reaped)
	}
	return p
}

// Close announces no more reaped members, publishes the joins and leaves gathered by the
// coalescing window at once (a node closing after its drain tells its members' leaves; the
// publishes are given the broker timeout, together), and waits for it. Safe on nil and twice.
func (p *Presence) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.coalesce != nil {
		p.wg.Wait() // the reaped members' leaves, gathered
		giveUp := time.AfterFunc(p.cfg.Timeout, p.cancel)
		p.coalesce.Close()
		giveUp.Stop()
	}
	p.cancel()
	p.wg.Wait()
}

// Enabled reports whether channel (a client's name for it) is a presence channel on a broker
// that keeps presence. A user's own channel ($user) never is.
func (p *Presence) Enabled(channel string) bool {
	return p != nil && p.cfg.Presence != nil && !strings.HasPrefix(channel, "$") && auth.Match(p.cfg.Channels, channel)
}

// Join records m in channel and returns the function that announces it, to call once the
// client has its `subscribed`: member_joined (and channel_occupied when it was the first member
// in the cluster), and a join into the channel's stream on join_leave channels. It returns nil
// when the record failed, which is logged (the subscribe itself has succeeded).
func (p *Presence) Join(channel string, m protocol.Member) (announce func()) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	occupied, err := p.cfg.Presence.Join(ctx, channel, m)
	if err != nil {
		p.cfg.Log.Warn("presence join failed", "channel", channel, "session_id", m.Session, "error", err)
		return nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		defer cancel()
		if occupied {
			p.cfg.Events.Emit(protocol.Event{Type: protocol.EventChannelOccupied, Channel: channel})
		}
		p.cfg.Events.Emit(protocol.Event{Type: protocol.EventMemberJoined, User: m.User, Session: m.Session, Channel: channel})
		p.announce(ctx, protocol.KindJoin, channel, m)
	}
}

// Leave removes m from channel and announces it as Join does (member_left, channel_vacated, a
// leave in the stream). A Leave the broker failed is announced all the same, but for
// channel_vacated, which is not known then: the broker has taken the member out of the node's
// own record and removes it from the cluster's later, silently (transports.Presence). Only a
// broker not started or closed (the node is going away: its members are reaped, and announced,
// by another node) announces nothing.
func (p *Presence) Leave(channel string, m protocol.Member) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	vacated, err := p.cfg.Presence.Leave(ctx, channel, m.Session)
	if err != nil {
		p.cfg.Log.Warn("presence leave failed", "channel", channel, "session_id", m.Session, "error", err)
		if errors.Is(err, transports.ErrClosed) || errors.Is(err, transports.ErrNotStarted) {
			return
		}
		vacated = false
	}
	p.left(ctx, channel, m, vacated, "")
}

// Withdraw removes m from channel without a word: for a member whose Join was never announced
// (a subscribe refused after the record), so that nobody is told of a leave without its join.
// A failure is logged; the broker removes the member with its node's lease at the latest.
func (p *Presence) Withdraw(channel string, m protocol.Member) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	if _, err := p.cfg.Presence.Leave(ctx, channel, m.Session); err != nil {
		p.cfg.Log.Warn("presence withdraw failed", "channel", channel, "session_id", m.Session, "error", err)
	}
}

// left announces that m left channel (reason "reaped" when its node's lease ran out).
func (p *Presence) left(ctx context.Context, channel string, m protocol.Member, vacated bool, reason string) {
	p.cfg.Events.Emit(protocol.Event{Type: protocol.EventMemberLeft, User: m.User, Session: m.Session, Channel: channel, Reason: reason})
	if vacated {
		p.cfg.Events.Emit(protocol.Event{Type: protocol.EventChannelVacated, Channel: channel})
	}
	p.announce(ctx, protocol.KindLeave, channel, m)
}

// SessionsChannel is the internal presence channel of every connection of the cluster
// (events.node_lost). No client can name it (channel names never start with '$' but $user), and
// it is left out of the channels the API lists.
const SessionsChannel = "$sessions"

// Sessions reports whether connections are recorded in SessionsChannel (events.node_lost).
func (p *Presence) Sessions() bool { return p != nil && p.cfg.Presence != nil && p.cfg.Sessions }

// JoinSession records connection m in SessionsChannel; a failure is logged (the connection
// stays, but would not be told node_lost).
func (p *Presence) JoinSession(m protocol.Member) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	if _, err := p.cfg.Presence.Join(ctx, SessionsChannel, m); err != nil {
		p.cfg.Log.Warn("presence: connection not recorded for node_lost", "session_id", m.Session, "error", err)
	}
}

// LeaveSession removes connection session from SessionsChannel.
func (p *Presence) LeaveSession(session string) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	if _, err := p.cfg.Presence.Leave(ctx, SessionsChannel, session); err != nil {
		p.cfg.Log.Warn("presence: connection record not removed", "session_id", session, "error", err)
	}
}

// reaped is the broker's OnReap: it announces the leave of a member of a node that died, once
// in the cluster (the broker calls it on one node), or, for SessionsChannel, the connection's
// disconnect (reason node_lost). It must not block the broker: the announce runs on a goroutine
// of its own, which Close waits for.
func (p *Presence) reaped(channel string, m protocol.Member, vacated bool) {
	if channel == SessionsChannel {
		p.cfg.Events.Emit(protocol.Event{Type: protocol.EventDisconnected, User: m.User, Session: m.Session, Node: m.Node,
			Reason: protocol.ReasonNodeLost})
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
		defer cancel()
		p.left(ctx, channel, m, vacated, "reaped")
	}()
}

// announce publishes a join or leave (kind) of m into channel's stream, on join_leave channels:
// at once, or gathered with the others of the coalescing window.
func (p *Presence) announce(ctx context.Context, kind, channel string, m protocol.Member) {
	if !auth.Match(p.cfg.JoinLeave, channel) {
		return
	}
	if p.coalesce != nil {
		p.coalesce.add(channel, kind, m) // dropped after Close: the node is going away
		return
	}
	p.submit(ctx, kind, channel, []protocol.Member{m})
}

// publish is the coalescer's: it publishes members joining or leaving (kind) channel as one
// message, within the broker timeout.
func (p *Presence) publish(channel, kind string, members []protocol.Member) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.Timeout)
	defer cancel()
	p.submit(ctx, kind, channel, members)
}

// submit publishes members (one or more) joining or leaving (kind) channel as one message of
// its stream: its payload is the member (one), or the array of members in order (several).
func (p *Presence) submit(ctx context.Context, kind, channel string, members []protocol.Member) {
	var payload []byte
	if len(members) == 1 {
		payload, _ = json.Marshal(members[0])
	} else {
		payload, _ = json.Marshal(members)
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	md := msg.Metadata
	md.Set(protocol.MetaKind, kind)
	md.Set(protocol.MetaTarget, protocol.TargetChannel)
	md.Set(protocol.MetaChannel, channel)
	if len(members) == 1 {
		md.Set(protocol.MetaUser, members[0].User)
		md.Set(protocol.MetaSession, members[0].Session)
	}
	md.Set(protocol.MetaNode, p.cfg.NodeID)
	md.Set(protocol.MetaSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := p.cfg.Inbox.Submit(ctx, msg); err != nil {
		p.cfg.Log.Warn("presence "+kind+" not published", "channel", channel, "session_id", members[0].Session,
			"members", len(members), "error", err)
	}
}

// errNoPresence answers presence queries on a broker that keeps no presence.
var errNoPresence = protocol.Errorf(protocol.CodeUnavailable, "this broker keeps no presence yet (docs/presence.md)")

// check refuses a query of channel: `unavailable` without a broker's presence, `bad_request`
// on a channel that is not a presence channel.
func (p *Presence) check(channel string) error {
	if p == nil || p.cfg.Presence == nil {
		return errNoPresence
	}
	if !p.Enabled(channel) {
		return protocol.Errorf(protocol.CodeBadRequest, "%s is not a presence channel (presence.channels)", channel)
	}
	return nil
}

// Page is a page of members, or only the counts of a channel over the cap.
type Page struct {
	Members []protocol.Member
	Next    string                  // after of the next page; "" on the last
	Counts  *protocol.PresenceStats // set instead of Members beyond presence.max_members
}

// Members returns the page of channel's members after after (limit 0: protocol.PresencePage).
func (p *Presence) Members(ctx context.Context, channel, after string, limit int) (Page, error) {
	if err := p.check(channel); err != nil {
		return Page{}, err
	}
	if limit <= 0 {
		limit = protocol.PresencePage
	}
	limit = min(limit, protocol.MaxPresencePage)
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	if p.cfg.MaxMembers >= 0 {
		st, err := p.cfg.Presence.Stats(ctx, channel)
		if err != nil {
			return Page{}, unavailable("presence", err)
		}
		if st.Connections > p.cfg.MaxMembers {
			return Page{Counts: &st}, nil
		}
	}
	ms, more, err := p.cfg.Presence.Members(ctx, channel, after, limit)
	if err != nil {
		return Page{}, unavailable("presence", err)
	}
	pg := Page{Members: ms}
	if more && len(ms) > 0 {
		pg.Next = ms[len(ms)-1].Session
	}
	return pg, nil
}

// Stats returns channel's counts.
func (p *Presence) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	if err := p.check(channel); err != nil {
		return protocol.PresenceStats{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	st, err := p.cfg.Presence.Stats(ctx, channel)
	if err != nil {
		return st, unavailable("presence_stats", err)
	}
	return st, nil
}

// Channels returns a page of the channels with members whose name starts with prefix.
func (p *Presence) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, string, error) {
	if p == nil || p.cfg.Presence == nil {
		return nil, "", errNoPresence
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	cs, more, err := p.cfg.Presence.Channels(ctx, prefix, after, limit)
	if err != nil {
		return nil, "", unavailable("channels", err)
	}
	if len(cs) > 0 && cs[0].Channel == SessionsChannel { // '$' sorts first: only ever the first
		cs = cs[1:]
		if len(cs) == 0 && more { // it was the page's only channel
			return p.Channels(ctx, prefix, SessionsChannel, limit)
		}
	}
	next := ""
	if more && len(cs) > 0 {
		next = cs[len(cs)-1].Channel
	}
	return cs, next, nil
}

// joinLeaveFrame encodes a join or leave message of the channel's stream: a member (the
// `member` frame) or an array of members (coalesced: the `members` frame); false when its payload
// is neither.
func joinLeaveFrame(msg *message.Message, kind, channel, clientName string, pos protocol.Position) ([]byte, bool) {
	typ := protocol.TypeJoin
	if kind == protocol.KindLeave {
		typ = protocol.TypeLeave
	}
	if p := bytes.TrimLeft(msg.Payload, " \t\r\n"); len(p) > 0 && p[0] == '[' {
		var ms []protocol.Member
		if err := json.Unmarshal(p, &ms); err != nil || len(ms) == 0 || slices.ContainsFunc(ms, func(m protocol.Member) bool { return m.Session == "" }) {
			return nil, false
		}
		return protocol.JoinLeaveManyFrame(typ, clientName, pos.ForChannel(channel), ms), true
	}
	var m protocol.Member
	if err := json.Unmarshal(msg.Payload, &m); err != nil || m.Session == "" {
		return nil, false
	}
	return protocol.JoinLeaveFrame(typ, clientName, pos.ForChannel(channel), m), true
}
