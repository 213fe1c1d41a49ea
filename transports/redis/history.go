package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
)

// lastScript returns the id of a stream's newest entry; on an empty or missing stream it first
// adds a lineage marker entry (no channel field, so no subscriber sees it) and returns its id.
// Every position the broker hands out is thereby the id of a real entry of the stream, and
// Replay can trust a position only while that entry is still in the stream (see kept): a "0-0"
// for an empty stream could not tell an intact history from one lost with a restart.
var lastScript = goredis.NewScript(`
local e = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #e > 0 then return e[1][1] end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'lineage', ARGV[2])
`)

// Last implements transports.History: the id of the newest entry of the channel's shard stream
// (whichever channel it belongs to), so that Replay(Last()) returns what comes next.
func (b *Broker) Last(ctx context.Context, topic string) (protocol.Position, error) {
	if err := b.usable(); err != nil {
		return protocol.Position{}, err
	}
	rt, err := b.channelRoute(topic)
	if err != nil {
		return protocol.Position{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	s, err := lastScript.Run(ctx, b.client, []string{rt.key}, b.cfg.MaxLen, "start").Text()
	if err != nil {
		return protocol.Position{}, b.wrap("last of "+rt.key, err)
	}
	id, err := parseID(s)
	if err != nil {
		return protocol.Position{}, err
	}
	return protocol.Position{Epoch: rt.epoch, Hi: id.ms, Lo: id.seq}, nil
}

// Replay implements transports.History. It scans the channel's shard stream with XRANGE from
// since (exclusive) to the stream's last id when called, ReplayCount entries per round trip,
// keeping the entries of this channel; the entries of the shard's other channels are read and
// dropped. complete is false when more than limit match, or when the stream no longer holds
// everything after since (see kept).
func (b *Broker) Replay(ctx context.Context, topic string, since protocol.Position, limit int) ([]*message.Message, bool, error) {
	if err := b.usable(); err != nil {
		return nil, false, err
	}
	rt, err := b.channelRoute(topic)
	if err != nil {
		return nil, false, err
	}
	if since.Epoch != rt.epoch {
		return nil, false, nil
	}
	limit = max(limit, 0)
	from := idOf(since)
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()

	info, err := b.client.XInfoStream(ctx, rt.key).Result()
	if noSuchKey(err) {
		return nil, from == streamID{}, nil
	}
	if err != nil {
		return nil, false, b.wrap("replay of "+rt.key, err)
	}
	top, err := parseID(info.LastGeneratedID)
	if err != nil {
		return nil, false, err
	}
	if top.less(from) {
		return nil, false, nil // a position this stream never reached: another lineage
	}
	var msgs []*message.Message
	for start := "(" + from.String(); from.less(top); { // pages of XRANGE (start, top]
		page, err := b.client.XRangeN(ctx, rt.key, start, top.String(), b.cfg.ReplayCount).Result()
		if err != nil {
			return nil, false, b.wrap("replay of "+rt.key, err)
		}
		for _, e := range page {
			if ch, ok := e.Values[fieldChannel]; !ok || str(ch) != rt.channel {
				continue
			}
			id, err := parseID(e.ID)
			if err != nil {
				continue
			}
			msgs = append(msgs, decodeAt(e.Values, rt.epoch, id, true))
			if len(msgs) > limit {
				// More than limit: still none unless the stream reaches back to since (a
				// page of what is left after a trim would hide the gap before it).
				info, err := b.client.XInfoStream(ctx, rt.key).Result()
				if err != nil && !noSuchKey(err) {
					return nil, false, b.wrap("replay of "+rt.key, err)
				}
				if err != nil || !kept(info, from) {
					return nil, false, nil
				}
				return msgs[:limit], false, nil
			}
		}
		if int64(len(page)) < b.cfg.ReplayCount {
			break
		}
		start = "(" + page[len(page)-1].ID
	}
	// Checked after the scan: if nothing after since had been deleted by now, the scan saw all.
	info, err = b.client.XInfoStream(ctx, rt.key).Result()
	if noSuchKey(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, b.wrap("replay of "+rt.key, err)
	}
	if !kept(info, from) {
		return nil, false, nil
	}
	return msgs, true, nil
}

// kept reports whether the stream described by info still holds every entry it ever had after
// since: since is not before the first entry (MAXLEN trimming, which removes the oldest entries,
// has not passed it), not after the last generated id, and no entry after since was deleted one
// by one (max-deleted-entry-id, Redis 7, counts XDEL only). A since before the first entry is
// not trusted even when nothing was trimmed in between: it may come from another lineage of the
// stream (recreated, for instance by a restart without persistence), whose ids are all smaller.
func kept(info *goredis.XInfoStream, since streamID) bool {
	top, err := parseID(info.LastGeneratedID)
	if err != nil || top.less(since) || info.Length == 0 {
		return false
	}
	first, err := parseID(info.FirstEntry.ID)
	if err != nil || since.less(first) {
		return false
	}
	if info.MaxDeletedEntryID != "" {
		deleted, err := parseID(info.MaxDeletedEntryID)
		if err != nil || since.less(deleted) {
			return false
		}
	}
	return true
}

func (b *Broker) channelRoute(topic string) (route, error) {
	if !protocol.IsChannelTopic(topic) {
		return route{}, fmt.Errorf("redis: %q is not a channel topic: only channel topics keep history", topic)
	}
	return b.route(topic), nil
}

func noSuchKey(err error) bool {
	var rerr goredis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "no such key")
}

// Before implements transports.ReverseHistory. It scans the channel's shard stream backwards
// with XREVRANGE from before (exclusive; the zero position: the newest entry), ReplayCount
// entries per round trip, keeping the entries of this channel; those of the shard's other
// channels are read and dropped.
func (b *Broker) Before(ctx context.Context, topic string, before protocol.Position, limit int) ([]*message.Message, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	rt, err := b.channelRoute(topic)
	if err != nil {
		return nil, err
	}
	end := "+"
	if !before.IsZero() {
		if before.Epoch != rt.epoch {
			return nil, nil
		}
		end = "(" + idOf(before).String()
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	var msgs []*message.Message
	for limit > 0 {
		page, err := b.client.XRevRangeN(ctx, rt.key, end, "-", b.cfg.ReplayCount).Result()
		if err != nil {
			return nil, b.wrap("history of "+rt.key, err)
		}
		for _, e := range page {
			if ch, ok := e.Values[fieldChannel]; !ok || str(ch) != rt.channel {
				continue
			}
			id, err := parseID(e.ID)
			if err != nil {
				continue
			}
			msgs = append(msgs, decodeAt(e.Values, rt.epoch, id, true))
			if len(msgs) == limit {
				return msgs, nil
			}
		}
		if int64(len(page)) < b.cfg.ReplayCount {
			break
		}
		end = "(" + page[len(page)-1].ID
	}
	return msgs, nil
}
