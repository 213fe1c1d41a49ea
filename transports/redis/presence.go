package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// Presence keys (docs/brokers/redis.md, Presence). The keys of one channel share a hash tag,
// the node-wide keys the hash tag {<prefix>:presence}, so that every script touches one slot.
// In single and sentinel mode the channel's tag is {<prefix>:presence:<channel>} and one index
// of channels with members is node-wide:
//
//	{P:presence:C}:m     sorted set of the session ids of channel C, all scored 0 (paged by lex)
//	{P:presence:C}:e     hash session id → "<lease>\n<member JSON>\n<user key>"
//	{P:presence:C}:u     hash user key → connections of that user in C ("u:<user>", or
//	                     "a:<session>" for an anonymous member)
//	{P:presence}:channels  sorted set of the channels with members, all scored 0
//	{P:presence}:leases    sorted set of live leases, scored by their expiry (ms, server time)
//	{P:presence}:reaping   sorted set of expired leases being reaped, scored by the claim's end
//	{P:presence}:own:<lease>  set of "<len(C)>:<C><session>" the lease's node joined
//
// (the join, leave and reap scripts then touch two slots, which one server does not mind). In
// cluster mode a channel's keys take the tag of its shard n (Shard(C, Shards), as its messages),
// with the index of that shard's channels in the same slot, so that those scripts touch one
// slot; Channels merges the Shards indexes:
//
//	{P:presence:shard<n>}:m:C, {P:presence:shard<n>}:e:C, {P:presence:shard<n>}:u:C
//	{P:presence:shard<n>}:channels  sorted set of the channels of shard n with members
func presenceChannelKeys(prefix, channel string) (members, entries, users string) {
	tag := "{" + prefix + ":presence:" + channel + "}"
	return tag + ":m", tag + ":e", tag + ":u"
}

func presenceNodeKey(prefix, name string) string {
	return "{" + prefix + ":presence}:" + name
}

func presenceShardTag(prefix string, shard int) string {
	return "{" + prefix + ":presence:shard" + strconv.Itoa(shard) + "}"
}

// presenceKeys are the keys of channel's presence and the index of channels that its join,
// leave and reap scripts keep.
func (b *Broker) presenceKeys(channel string) (members, entries, users, index string) {
	if b.cfg.Mode == ModeCluster {
		tag := presenceShardTag(b.cfg.Prefix, Shard(channel, b.cfg.Shards))
		return tag + ":m:" + channel, tag + ":e:" + channel, tag + ":u:" + channel, tag + ":channels"
	}
	m, e, u := presenceChannelKeys(b.cfg.Prefix, channel)
	return m, e, u, presenceNodeKey(b.cfg.Prefix, "channels")
}

// presenceIndexes are the indexes of channels with members: one, or one per shard in cluster mode.
func (b *Broker) presenceIndexes() []string {
	if b.cfg.Mode != ModeCluster {
		return []string{presenceNodeKey(b.cfg.Prefix, "channels")}
	}
	out := make([]string, b.cfg.Shards)
	for n := range out {
		out[n] = presenceShardTag(b.cfg.Prefix, n) + ":channels"
	}
	return out
}

// userKey is the key a member counts under in its channel's users hash.
func userKey(m protocol.Member) string {
	if m.User == "" {
		return "a:" + m.Session
	}
	return "u:" + m.User
}

func ownEntry(channel, session string) string {
	return strconv.Itoa(len(channel)) + ":" + channel + session
}

func parseOwnEntry(s string) (channel, session string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return "", "", false
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil || n < 0 || i+1+n > len(s) {
		return "", "", false
	}
	return s[i+1 : i+1+n], s[i+1+n:], true
}

// luaParse splits an entry of the e hash: lease, member JSON (compact: no newline), user key.
const luaParse = `
local function parse(v)
  local i = string.find(v, "\n", 1, true)
  local j = string.find(v, "\n", i + 1, true)
  return string.sub(v, 1, i - 1), string.sub(v, i + 1, j - 1), string.sub(v, j + 1)
end
local function uncount(u, k)
  if redis.call('HINCRBY', u, k, -1) <= 0 then redis.call('HDEL', u, k) end
end
`

// joinScript records a member. KEYS: m, e, u, channels. ARGV: channel, session, entry, user key.
// Returns 1 when the channel had no member before.
var joinScript = goredis.NewScript(luaParse + `
local old = redis.call('HGET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if old then
  local _, _, ok = parse(old)
  if ok ~= ARGV[4] then
    uncount(KEYS[3], ok)
    redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  end
  return 0
end
local occupied = redis.call('ZCARD', KEYS[1]) == 0
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
if occupied then
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  return 1
end
return 0
`)

// leaveScript removes a member. KEYS: m, e, u, channels. ARGV: channel, session, and a lease:
// when given, the member is removed only if that lease recorded it (reaping). Returns
// {0} (not there), {1, member JSON} (removed) or {2, member JSON} (removed, channel vacated).
var leaveScript = goredis.NewScript(luaParse + `
local v = redis.call('HGET', KEYS[2], ARGV[2])
if not v then return {0} end
local lease, member, uk = parse(v)
if ARGV[3] ~= "" and lease ~= ARGV[3] then return {0} end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
uncount(KEYS[3], uk)
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {2, member}
end
return {1, member}
`)

// membersScript reads a page. KEYS: m, e. ARGV: lex min, count. Returns the member JSONs.
var membersScript = goredis.NewScript(luaParse + `
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    local _, member = parse(v)
    out[#out + 1] = member
  end
end
return out
`)

// luaNow is the server's clock in milliseconds: leases do not depend on the nodes' clocks.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// renewScript renews a lease. KEYS: leases, own. ARGV: lease, ttl ms, "1" when the node holds
// members. Returns 0 when the lease is lost (reaped, claimed, or the data is gone), else 1.
var renewScript = goredis.NewScript(luaNow + `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if ARGV[3] == "1" and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
`)

// registerScript adds a new lease and drops the member set of the node's previous lease unless
// a reaper holds it. KEYS: leases, reaping, previous own. ARGV: lease, ttl ms, previous lease.
var registerScript = goredis.NewScript(luaNow + `
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] ~= "" and not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[3])
end
return 1
`)

// claimScript claims up to ARGV[1] expired leases for reaping, and reaps whose claim ran out
// (their reaper died), for ARGV[2] ms. KEYS: leases, reaping. Returns the claimed leases.
var claimScript = goredis.NewScript(luaNow + `
local out = {}
for _, key in ipairs(KEYS) do
  local due = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[1]))
  for _, l in ipairs(due) do
    redis.call('ZREM', KEYS[1], l)
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), l)
    out[#out + 1] = l
  end
end
return out
`)

// reapBatch is how many members one round trip of a reap or a re-record handles.
const reapBatch = 256

// presence is the Broker's transports.Presence state.
type presence struct {
	hb time.Duration

	// leaseMu is held shared by Join and Leave for their whole call, and exclusively while the
	// node takes a new lease and records its members again: no member is recorded under a
	// lease after it was replaced.
	leaseMu sync.RWMutex
	lease   string // the node's current lease id (random hex)

	mu     sync.Mutex
	record map[string]map[string]protocol.Member // what this broker joined and did not leave
	gone   map[string]map[string]struct{}        // left here, but Redis could not be told yet
	onReap func(channel string, m protocol.Member, vacated bool)

	// registered is set by the first Join: a broker that never joins (a service's) writes
	// no lease.
	registered atomic.Bool
	paused     atomic.Bool // lease renewal stopped, as by a network cut (tests, export_test.go)

	redo bool // a re-recording failed: do it again (the renewal goroutine's own)
}

func newPresence(hb time.Duration) *presence {
	return &presence{hb: hb, lease: newLease(), record: map[string]map[string]protocol.Member{},
		gone: map[string]map[string]struct{}{}}
}

func newLease() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var _ transports.Presence = (*Broker)(nil)

// presenceCtx bounds one presence call by ctx and Config.Timeout, and ends it when the broker
// closes.
func (b *Broker) presenceCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	stop := context.AfterFunc(b.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// runScripts runs cmds (script calls and others) in one pipeline by EVALSHA; when the server
// does not know a script (it restarted), it loads them and runs the pipeline once more. Every
// command queued must be safe to run twice.
func (b *Broker) runScripts(ctx context.Context, queue func(p goredis.Pipeliner) []goredis.Cmder) ([]goredis.Cmder, error) {
	for try := 0; ; try++ {
		var cmds []goredis.Cmder
		_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			cmds = queue(p)
			return nil
		})
		if err != nil && try == 0 && noScript(cmds, err) {
			for _, s := range []*goredis.Script{joinScript, leaveScript, membersScript, renewScript, registerScript, claimScript} {
				if err := s.Load(ctx, b.client).Err(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return cmds, err
	}
}

// inOrder runs the commands of first, then those of then, and returns then's: in one pipeline
// on one server (commands run in the order sent), in two on a Redis Cluster, whose client sends
// the commands of one pipeline to their slots' primaries at once. first failing, then is not run.
func (b *Broker) inOrder(ctx context.Context, first, then func(p goredis.Pipeliner) []goredis.Cmder) ([]goredis.Cmder, error) {
	if b.cfg.Mode != ModeCluster {
		return b.runScripts(ctx, func(p goredis.Pipeliner) []goredis.Cmder {
			first(p)
			return then(p)
		})
	}
	if _, err := b.runScripts(ctx, first); err != nil {
		return nil, err
	}
	return b.runScripts(ctx, then)
}

func noScript(cmds []goredis.Cmder, err error) bool {
	if goredis.HasErrorPrefix(err, "NOSCRIPT") {
		return true
	}
	for _, c := range cmds {
		if goredis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// Join implements transports.Presence: one round trip (the join script, atomic in the
// channel's keys, and an SADD to the node's member set), O(log N).
func (b *Broker) Join(ctx context.Context, channel string, m protocol.Member) (bool, error) {
	if err := b.usable(); err != nil {
		return false, err
	}
	if m.Session == "" {
		return false, errors.New("redis: presence join without a session id")
	}
	p := b.presence
	p.leaseMu.RLock()
	defer p.leaseMu.RUnlock()
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	occupied, err := b.join(ctx, p.lease, []joinArgs{{channel, m}}, !p.registered.Load())
	if err != nil {
		return false, b.wrap("presence join "+channel, err)
	}
	p.registered.Store(true)
	p.remember(channel, m)
	return occupied[0], nil
}

type joinArgs struct {
	channel string
	m       protocol.Member
}

// join records joins under lease in one pipeline and reports whether each occupied its channel.
// With register, the pipeline first registers the lease (the node's first Join).
func (b *Broker) join(ctx context.Context, lease string, joins []joinArgs, register bool) ([]bool, error) {
	own := presenceNodeKey(b.cfg.Prefix, "own:"+lease)
	entries := make([]string, len(joins))
	for i, j := range joins {
		data, err := json.Marshal(j.m) // compact: no newline
		if err != nil {
			return nil, err
		}
		entries[i] = lease + "\n" + string(data) + "\n" + userKey(j.m)
	}
	// The node's set first: a member recorded in a channel is always one its reaper can find
	// (a stale set entry is harmless, the reap script checks the lease).
	cmds, err := b.inOrder(ctx, func(p goredis.Pipeliner) []goredis.Cmder {
		if register {
			b.queueRegister(ctx, p, lease, "")
		}
		for _, j := range joins {
			p.SAdd(ctx, own, ownEntry(j.channel, j.m.Session))
		}
		return nil
	}, func(p goredis.Pipeliner) []goredis.Cmder {
		var cmds []goredis.Cmder
		for i, j := range joins {
			m, e, u, index := b.presenceKeys(j.channel)
			cmds = append(cmds, joinScript.EvalSha(ctx, p, []string{m, e, u, index}, j.channel, j.m.Session, entries[i], userKey(j.m)))
		}
		return cmds
	})
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(joins))
	for i, c := range cmds {
		n, _ := c.(*goredis.Cmd).Int64()
		out[i] = n == 1
	}
	return out, nil
}

// Leave implements transports.Presence: one round trip (the leave script, atomic in the
// channel's keys, and an SREM from the node's member set), O(log N).
func (b *Broker) Leave(ctx context.Context, channel, session string) (bool, error) {
	if err := b.usable(); err != nil {
		return false, err
	}
	p := b.presence
	p.leaseMu.RLock()
	defer p.leaseMu.RUnlock()
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	m, e, u, index := b.presenceKeys(channel)
	var leave *goredis.Cmd
	_, err := b.inOrder(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
		leave = leaveScript.EvalSha(ctx, pl, []string{m, e, u, index}, channel, session, "")
		return []goredis.Cmder{leave}
	}, func(pl goredis.Pipeliner) []goredis.Cmder {
		pl.SRem(ctx, presenceNodeKey(b.cfg.Prefix, "own:"+p.lease), ownEntry(channel, session))
		return nil
	})
	if err != nil {
		// The node's truth is that the member left: out of its record (a re-recording does not
		// bring it back), and removed from Redis after the next renewal, silently.
		p.forget(channel, session)
		p.markGone(channel, session)
		return false, b.wrap("presence leave "+channel, err)
	}
	p.forget(channel, session)
	code, _, err := leaveResult(leave)
	return code == 2, err
}

// markGone notes that session left channel but Redis could not be told.
func (p *presence) markGone(channel, session string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone[channel] == nil {
		p.gone[channel] = map[string]struct{}{}
	}
	p.gone[channel][session] = struct{}{}
}

// removeGone removes from Redis, in one round trip, up to reapBatch members whose Leave failed
// and that did not join again; Join and Leave wait meanwhile (as for a re-recording), so that
// none joins again between the reading of gone and the removal. Run after a renewal.
func (b *Broker) removeGone(ctx context.Context) {
	p := b.presence
	p.mu.Lock()
	none := len(p.gone) == 0
	p.mu.Unlock()
	if none {
		return
	}
	p.leaseMu.Lock()
	defer p.leaseMu.Unlock()
	type entry struct{ channel, session string }
	var gone []entry
	p.mu.Lock()
	for c, ss := range p.gone {
		for s := range ss {
			if len(gone) < reapBatch {
				gone = append(gone, entry{c, s})
			}
		}
	}
	p.mu.Unlock()
	own := presenceNodeKey(b.cfg.Prefix, "own:"+p.lease)
	_, err := b.inOrder(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
		var cmds []goredis.Cmder
		for _, e := range gone {
			m, en, u, index := b.presenceKeys(e.channel)
			cmds = append(cmds, leaveScript.EvalSha(ctx, pl, []string{m, en, u, index}, e.channel, e.session, ""))
		}
		return cmds
	}, func(pl goredis.Pipeliner) []goredis.Cmder {
		for _, e := range gone {
			pl.SRem(ctx, own, ownEntry(e.channel, e.session))
		}
		return nil
	})
	if err != nil {
		if b.ctx.Err() == nil {
			b.logger.Warn("redis: presence members that left not removed yet; the next renewal tries again", "error", err)
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range gone {
		p.unmarkGone(e.channel, e.session)
	}
}

// unmarkGone forgets that session left channel unannounced (it joined again, or Redis was
// told); p.mu is held.
func (p *presence) unmarkGone(channel, session string) {
	delete(p.gone[channel], session)
	if len(p.gone[channel]) == 0 {
		delete(p.gone, channel)
	}
}

func leaveResult(c *goredis.Cmd) (code int64, member string, err error) {
	vals, err := c.Slice()
	if err != nil || len(vals) == 0 {
		return 0, "", err
	}
	code, _ = vals[0].(int64)
	if len(vals) > 1 {
		member, _ = vals[1].(string)
	}
	return code, member, nil
}

func (p *presence) remember(channel string, m protocol.Member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.record[channel] == nil {
		p.record[channel] = map[string]protocol.Member{}
	}
	p.record[channel][m.Session] = m
	p.unmarkGone(channel, m.Session)
}

func (p *presence) forget(channel, session string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.record[channel], session)
	if len(p.record[channel]) == 0 {
		delete(p.record, channel)
	}
}

func (p *presence) reaper() func(channel string, m protocol.Member, vacated bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.onReap
}

// Members implements transports.Presence: one round trip, O(log N + limit) (ZRANGEBYLEX and
// one HGET per member, in a script).
func (b *Broker) Members(ctx context.Context, channel, after string, limit int) ([]protocol.Member, bool, error) {
	if err := b.usable(); err != nil {
		return nil, false, err
	}
	limit = max(limit, 0)
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	m, e, _, _ := b.presenceKeys(channel)
	from := "-"
	if after != "" {
		from = "(" + after
	}
	var page *goredis.Cmd
	_, err := b.runScripts(ctx, func(p goredis.Pipeliner) []goredis.Cmder {
		page = membersScript.EvalSha(ctx, p, []string{m, e}, from, limit+1)
		return []goredis.Cmder{page}
	})
	if err != nil {
		return nil, false, b.wrap("presence members "+channel, err)
	}
	vals, err := page.StringSlice()
	if err != nil {
		return nil, false, b.wrap("presence members "+channel, err)
	}
	more := len(vals) > limit
	if more {
		vals = vals[:limit]
	}
	members := make([]protocol.Member, 0, len(vals))
	for _, v := range vals {
		var mb protocol.Member
		if err := json.Unmarshal([]byte(v), &mb); err != nil {
			return nil, false, fmt.Errorf("redis: presence members %s: %w", channel, err)
		}
		members = append(members, mb)
	}
	return members, more, nil
}

// Stats implements transports.Presence: one round trip, ZCARD and HLEN, O(1).
func (b *Broker) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	if err := b.usable(); err != nil {
		return protocol.PresenceStats{}, err
	}
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	stats, err := b.stats(ctx, []string{channel})
	if err != nil {
		return protocol.PresenceStats{}, b.wrap("presence stats "+channel, err)
	}
	return stats[0], nil
}

func (b *Broker) stats(ctx context.Context, channels []string) ([]protocol.PresenceStats, error) {
	conns := make([]*goredis.IntCmd, len(channels))
	users := make([]*goredis.IntCmd, len(channels))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, c := range channels {
			m, _, u, _ := b.presenceKeys(c)
			conns[i] = p.ZCard(ctx, m)
			users[i] = p.HLen(ctx, u)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]protocol.PresenceStats, len(channels))
	for i := range channels {
		out[i] = protocol.PresenceStats{Connections: int(conns[i].Val()), Users: int(users[i].Val())}
	}
	return out, nil
}

// Channels implements transports.Presence: two round trips, ZRANGEBYLEX on the index of
// channels (O(log C + limit)) and ZCARD and HLEN per channel returned. In cluster mode the
// first is a ZRANGEBYLEX on each shard's index, pipelined, whose names are merged.
func (b *Broker) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, bool, error) {
	if err := b.usable(); err != nil {
		return nil, false, err
	}
	limit = max(limit, 0)
	ctx, cancel := b.presenceCtx(ctx)
	defer cancel()
	from := "[" + prefix
	if after != "" && after >= prefix {
		from = "(" + after
	}
	indexes := b.presenceIndexes()
	pages := make([]*goredis.StringSliceCmd, len(indexes))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, index := range indexes {
			pages[i] = p.ZRangeByLex(ctx, index, &goredis.ZRangeBy{Min: from, Max: "+", Count: int64(limit + 1)})
		}
		return nil
	})
	if err != nil {
		return nil, false, b.wrap("presence channels", err)
	}
	var names []string
	for _, page := range pages {
		names = append(names, page.Val()...)
	}
	if len(pages) > 1 { // the limit+1 first of the merged pages, each sorted
		slices.Sort(names)
		names = names[:min(len(names), limit+1)]
	}
	// The names with prefix are contiguous in lex order: stop at the first without it.
	for i, n := range names {
		if !strings.HasPrefix(n, prefix) {
			names = names[:i]
			break
		}
	}
	more := len(names) > limit
	if more {
		names = names[:limit]
	}
	if len(names) == 0 {
		return nil, more, nil
	}
	stats, err := b.stats(ctx, names)
	if err != nil {
		return nil, false, b.wrap("presence channels", err)
	}
	out := make([]protocol.ChannelStats, 0, len(names))
	for i, n := range names {
		if stats[i].Connections > 0 { // vacated since the index was read
			out = append(out, protocol.ChannelStats{Channel: n, PresenceStats: stats[i]})
		}
	}
	return out, more, nil
}

// OnReap implements transports.Presence. Only brokers given a function reap: a service's
// broker, which has none, leaves reaping to the gateway nodes.
func (b *Broker) OnReap(fn func(channel string, m protocol.Member, vacated bool)) {
	b.presence.mu.Lock()
	defer b.presence.mu.Unlock()
	b.presence.onReap = fn
}

// startPresence starts the presence goroutines, which run until Close: the renewal of the
// node's lease (once it joined a member), twice per heartbeat, and, apart so that a long reap or
// a slow OnReap function never delays the renewal, the reaping of expired leases (when OnReap
// was given a function), every quarter heartbeat. A lease runs 1.5 heartbeats from its renewal
// (leaseTTL): a renewal may come a whole heartbeat late, and a node that stops is reaped within
// 1.75 heartbeats plus the reaping's round trips. Called by Start, under b.mu.
func (b *Broker) startPresence() {
	p := b.presence
	b.wg.Add(2)
	go b.every(p.hb/2, func() {
		if p.registered.Load() && !p.paused.Load() {
			b.renew()
		}
	})
	go b.every(p.hb/4, func() {
		if p.reaper() != nil {
			b.reap()
		}
	})
}

// every calls fn now and every period until Close; it is a goroutine counted in b.wg.
func (b *Broker) every(period time.Duration, fn func()) {
	defer b.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		fn()
		select {
		case <-t.C:
		case <-b.ctx.Done():
			return
		}
	}
}

// leaseTTL is how long a renewal keeps a lease: 1.5 heartbeats (renewals come every half
// heartbeat, so one may be a whole heartbeat late).
func (p *presence) leaseTTL() int64 { return (3 * p.hb / 2).Milliseconds() }

// renew renews the node's lease. When the lease is lost (it ran out and was reaped, or the
// server lost its data), the node takes a new lease and records again every member it joined
// and did not leave.
func (b *Broker) renew() {
	p := b.presence
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Timeout)
	defer cancel()
	p.leaseMu.RLock()
	lease := p.lease
	p.leaseMu.RUnlock()
	p.mu.Lock()
	holds := len(p.record) > 0
	p.mu.Unlock()
	var renewed *goredis.Cmd
	_, err := b.runScripts(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
		h := "0"
		if holds {
			h = "1"
		}
		renewed = renewScript.EvalSha(ctx, pl, []string{presenceNodeKey(b.cfg.Prefix, "leases"), presenceNodeKey(b.cfg.Prefix, "own:"+lease)}, lease, p.leaseTTL(), h)
		return []goredis.Cmder{renewed}
	})
	if err != nil {
		if b.ctx.Err() == nil {
			b.logger.Warn("redis: presence lease not renewed", "error", err)
		}
		return
	}
	if n, _ := renewed.Int64(); n == 1 && !p.redo {
		b.removeGone(ctx)
		return
	}
	p.redo = false
	if err := b.rerecord(ctx, lease); err != nil {
		p.redo = true // on the next heartbeat, with another new lease
		if b.ctx.Err() == nil {
			b.logger.Warn("redis: presence members not recorded again", "error", err)
		}
		return
	}
	b.removeGone(ctx) // their entries name the lost lease, which no reaper will claim
}

// register adds the lease (and drops the previous one unless it is being reaped).
func (b *Broker) register(ctx context.Context, lease, previous string) error {
	_, err := b.runScripts(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
		return []goredis.Cmder{b.queueRegister(ctx, pl, lease, previous)}
	})
	return err
}

func (b *Broker) queueRegister(ctx context.Context, pl goredis.Pipeliner, lease, previous string) *goredis.Cmd {
	return registerScript.EvalSha(ctx, pl,
		[]string{presenceNodeKey(b.cfg.Prefix, "leases"), presenceNodeKey(b.cfg.Prefix, "reaping"), presenceNodeKey(b.cfg.Prefix, "own:"+previous)},
		lease, b.presence.leaseTTL(), previous)
}

// rerecord replaces the lost lease previous with a new one and records again, under it, the
// members of the node's local record. Join and Leave wait meanwhile, so none is recorded under
// the lost lease afterwards. A member a reaper removed meanwhile comes back; one it has not
// reached yet it leaves alone (its entry names the new lease). When it fails midway, the next
// heartbeat does it all again under yet another lease.
func (b *Broker) rerecord(ctx context.Context, previous string) error {
	p := b.presence
	p.leaseMu.Lock()
	defer p.leaseMu.Unlock()
	lease := newLease()
	if err := b.register(ctx, lease, previous); err != nil {
		return err
	}
	p.lease = lease
	var joins []joinArgs
	p.mu.Lock()
	for c, ms := range p.record {
		for _, m := range ms {
			joins = append(joins, joinArgs{c, m})
		}
	}
	p.mu.Unlock()
	b.logger.Warn("redis: presence lease lost, recording the node's members again", "members", len(joins))
	for len(joins) > 0 {
		n := min(len(joins), reapBatch)
		if _, err := b.join(ctx, lease, joins[:n], false); err != nil {
			return err
		}
		joins = joins[n:]
	}
	return nil
}

// reap claims the expired leases, at most reapBatch per pass, and removes their members, each
// channel's in one script, calling the OnReap function for each member removed. It runs on the
// reaping goroutine only.
func (b *Broker) reap() {
	p := b.presence
	claim := 4*p.hb + b.cfg.Timeout // a reaper that takes longer is relieved by another
	ctx, cancel := context.WithTimeout(b.ctx, claim)
	defer cancel()
	var claimed *goredis.Cmd
	_, err := b.runScripts(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
		claimed = claimScript.EvalSha(ctx, pl, []string{presenceNodeKey(b.cfg.Prefix, "leases"), presenceNodeKey(b.cfg.Prefix, "reaping")}, reapBatch, claim.Milliseconds())
		return []goredis.Cmder{claimed}
	})
	if err != nil {
		if b.ctx.Err() == nil {
			b.logger.Warn("redis: presence reaping failed", "error", err)
		}
		return
	}
	leases, _ := claimed.StringSlice()
	for _, l := range leases {
		if err := b.reapLease(ctx, l); err != nil {
			if b.ctx.Err() == nil {
				b.logger.Warn("redis: presence reaping failed", "lease", l, "error", err)
			}
			return
		}
	}
}

func (b *Broker) reapLease(ctx context.Context, lease string) error {
	own := presenceNodeKey(b.cfg.Prefix, "own:"+lease)
	for {
		batch, err := b.client.SRandMemberN(ctx, own, reapBatch).Result()
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		type reaped struct {
			channel string
			cmd     *goredis.Cmd
		}
		var rs []reaped
		_, err = b.runScripts(ctx, func(pl goredis.Pipeliner) []goredis.Cmder {
			rs = rs[:0]
			var cmds []goredis.Cmder
			for _, entry := range batch {
				c, s, ok := parseOwnEntry(entry)
				if !ok {
					continue
				}
				m, e, u, index := b.presenceKeys(c)
				cmd := leaveScript.EvalSha(ctx, pl, []string{m, e, u, index}, c, s, lease)
				rs = append(rs, reaped{c, cmd})
				cmds = append(cmds, cmd)
			}
			return cmds
		})
		if err != nil {
			return err
		}
		fn := b.presence.reaper()
		for _, r := range rs {
			code, data, err := leaveResult(r.cmd)
			if err != nil || code == 0 {
				continue
			}
			var m protocol.Member
			if json.Unmarshal([]byte(data), &m) == nil && fn != nil {
				fn(r.channel, m, code == 2)
			}
		}
		members := make([]any, len(batch))
		for i, s := range batch {
			members[i] = s
		}
		if err := b.client.SRem(ctx, own, members...).Err(); err != nil {
			return err
		}
	}
	_, err := b.client.Pipelined(ctx, func(pl goredis.Pipeliner) error {
		pl.Del(ctx, own)
		pl.ZRem(ctx, presenceNodeKey(b.cfg.Prefix, "reaping"), lease)
		return nil
	})
	return err
}
