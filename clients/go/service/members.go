package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// ErrNoPresence is returned by Members, PresenceStats and Channels when the Service's broker
// keeps no presence (it does not implement transports.Presence; every broker of the gateway does).
var ErrNoPresence = errors.New("service: this broker keeps no presence")

// The channel presence of the gateway nodes (presence.channels, docs/presence.md) is read from
// the broker directly: the Service asks the broker the nodes record their members in, without a
// round trip through a node. A Service only reads it: it never joins, so its broker holds no
// lease and reaps nothing (reaping is left to the nodes).
//
// These differ from Presence, which follows connections from the lifecycle events: use Members,
// PresenceStats and Channels for who is in a presence channel, across the cluster; Presence for
// the sessions of every node (connected, disconnected, and those of a node that died).

// presence is the broker's presence, or ErrNoPresence.
func (s *Service) presence() (transports.Presence, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	p, ok := s.broker.(transports.Presence)
	if !ok {
		return nil, ErrNoPresence
	}
	return p, nil
}

func checkLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return protocol.PresencePage, nil
	case limit < 0 || limit > protocol.MaxPresencePage:
		return 0, fmt.Errorf("%w: limit must be between 1 and %d (0: %d)", ErrInvalid, protocol.MaxPresencePage, protocol.PresencePage)
	}
	return limit, nil
}

// Members returns a page of the members of channel, a presence channel of the gateway nodes:
// at most limit (0: protocol.PresencePage; at most protocol.MaxPresencePage), ordered by session
// id, those after the session id after ("" from the start). next, when not "", is the after of
// the next page. Unlike the `presence` frame and GET /api/presence, it pages whatever the
// channel's size (presence.max_members is a node's setting). A channel that is not a presence
// channel simply has no members.
func (s *Service) Members(ctx context.Context, channel, after string, limit int) (members []protocol.Member, next string, err error) {
	p, err := s.presence()
	if err != nil {
		return nil, "", err
	}
	if !protocol.ValidChannel(channel) {
		return nil, "", fmt.Errorf("%w: channel %q must match ^[A-Za-z0-9_:.\\-]{1,128}$", ErrInvalid, channel)
	}
	if limit, err = checkLimit(limit); err != nil {
		return nil, "", err
	}
	ms, more, err := p.Members(ctx, channel, after, limit)
	if err != nil {
		return nil, "", fmt.Errorf("service: presence members: %w", err)
	}
	if ms == nil {
		ms = []protocol.Member{}
	}
	if more && len(ms) > 0 {
		next = ms[len(ms)-1].Session
	}
	return ms, next, nil
}

// PresenceStats returns the number of members (connections) of channel, a presence channel,
// and of distinct users among them (each anonymous connection counts as a user of its own).
func (s *Service) PresenceStats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	p, err := s.presence()
	if err != nil {
		return protocol.PresenceStats{}, err
	}
	if !protocol.ValidChannel(channel) {
		return protocol.PresenceStats{}, fmt.Errorf("%w: channel %q must match ^[A-Za-z0-9_:.\\-]{1,128}$", ErrInvalid, channel)
	}
	st, err := p.Stats(ctx, channel)
	if err != nil {
		return protocol.PresenceStats{}, fmt.Errorf("service: presence stats: %w", err)
	}
	return st, nil
}

// Channels returns a page of the presence channels that have members, whose name starts with
// prefix ("" for all), ordered by name, those after the channel after, with their counts: at
// most limit (as for Members); next, when not "", is the after of the next page.
func (s *Service) Channels(ctx context.Context, prefix, after string, limit int) (channels []protocol.ChannelStats, next string, err error) {
	p, err := s.presence()
	if err != nil {
		return nil, "", err
	}
	if limit, err = checkLimit(limit); err != nil {
		return nil, "", err
	}
	cs, more, err := p.Channels(ctx, prefix, after, limit)
	if err != nil {
		return nil, "", fmt.Errorf("service: presence channels: %w", err)
	}
	if cs == nil {
		cs = []protocol.ChannelStats{}
	}
	if more && len(cs) > 0 {
		next = cs[len(cs)-1].Channel
	}
	return cs, next, nil
}
