// Package redis is the Redis Streams broker.
//
// Channel topics live on a fixed number of shard streams ("<prefix>:ch:<n>", n =
// fnv32a(channel) % Shards) that every node reads with one XREAD loop, routing each entry by its
// channel field to the node's local subscriptions; the entry id is the message's position, so
// any node can replay a channel from the shard (History). Other topics are one stream each
// ("<prefix>:inbound", "<prefix>:direct", "<prefix>:events", "<prefix>:control", "<prefix>:hooks",
// "<prefix>:replies"): SubscribeGroup consumes them with watermill-redisstream consumer groups,
// Subscribe reads them in fan-out from the current end. Every stream is trimmed with XADD
// MAXLEN ~ MaxLen; the hooks and replies streams, whose entries are worthless after their
// deadline, with MAXLEN ~ HookMaxLen (the services' group on hooks is TopicHooks' competing
// consumers). docs/brokers/redis.md has the entry format
// services write with redis-cli, and the costs.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	goredis "github.com/redis/go-redis/v9"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

// pingTimeout bounds Ping.
const pingTimeout = 2 * time.Second

// Broker is a gateway node's (or a service's) connection to Redis. Safe for concurrent use.
type Broker struct {
	cfg    Config
	given  goredis.UniversalClient // NewFromClient's client; nil: Start makes one
	client goredis.UniversalClient // set by Start, before started
	owned  bool                    // Start made client: Close closes it
	logger *slog.Logger
	wlog   watermill.LoggerAdapter

	shardKeys   []string
	shardEpochs []string
	retryWindow string   // Config.RetryWindow in ms, addScript's ARGV[1]
	scripts     sync.Map // address (a cluster primary's; "" for the one server) -> true: it holds addScript

	presence *presence // transports.Presence (presence.go)

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	quiet  atomic.Bool // set by Close: silences the Watermill goroutines Close cannot wait for
	wg     sync.WaitGroup
	once   sync.Once

	startMu sync.Mutex // serializes the start of readers

	mu      sync.Mutex
	started bool
	closed  bool
	readers map[string]*reader // "" for the channel reader, else a topic's stream key
}

var (
	_ transports.Broker         = (*Broker)(nil)
	_ transports.FuncSubscriber = (*Broker)(nil)
	_ transports.History        = (*Broker)(nil)
	_ transports.Presence       = (*Broker)(nil)
)

// New returns a Broker for the Redis server of cfg. It only checks cfg: no I/O, no goroutine
// until Start.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBroker(cfg, nil, logger), nil
}

// NewFromClient uses an existing client, which Close leaves open; cfg's Mode, Addr, Password,
// DB, Sentinel and cluster settings are ignored: a *goredis.ClusterClient makes the broker work
// as in ModeCluster, any other client as on one server. Enable the client's ContextTimeoutEnabled so that
// Timeout bounds socket I/O too; with MinReplicas, its ReadTimeout must be at least Timeout (a
// publish's WAIT lasts nearly Timeout). Like New it starts nothing until Start.
func NewFromClient(client goredis.UniversalClient, cfg Config, logger *slog.Logger) (*Broker, error) {
	if client == nil {
		return nil, errors.New("redis: nil client")
	}
	cfg.Mode, cfg.DB = ModeSingle, 0
	if cluster, ok := client.(*goredis.ClusterClient); ok {
		cfg.Mode, cfg.ClusterAddrs = ModeCluster, cluster.Options().Addrs
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newBroker(cfg, client, logger), nil
}

func newBroker(cfg Config, given goredis.UniversalClient, logger *slog.Logger) *Broker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Broker{cfg: cfg, given: given, logger: logger, readers: map[string]*reader{}, presence: newPresence(cfg.Presence.Heartbeat)}
	b.wlog = quietLogger{watermill.NewSlogLogger(logger), &b.quiet}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.retryWindow = strconv.FormatInt(max(cfg.RetryWindow.Milliseconds(), 1), 10)
	for n := range cfg.Shards {
		key := ShardKey(cfg.Prefix, n)
		b.shardKeys = append(b.shardKeys, key)
		b.shardEpochs = append(b.shardEpochs, ShardEpoch(cfg.Prefix, n))
	}
	return b
}

// Start implements transports.Broker: it makes the go-redis client (New's Broker) and starts the
// presence goroutines (renewal of the node's lease once it joined a member, twice per
// Config.Presence.Heartbeat, and reaping when OnReap was given a function, every quarter
// heartbeat). It does not fail when the server is down: go-redis connects on first
// use and again after every failure, and Ping reports the state. Readers start with the first
// subscriptions.
func (b *Broker) Start(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return transports.ErrClosed
	case b.started:
		return nil
	}
	if b.given != nil {
		b.client = b.given
	} else {
		b.client = NewClient(b.cfg)
		b.owned = true
	}
	b.started = true
	b.startPresence()
	return nil
}

// NewClient returns the go-redis client the broker makes for cfg: a plain client in ModeSingle,
// a failover client in ModeSentinel, which asks the Sentinels for the primary and again after
// a failover, a cluster client in ModeCluster, which routes each command to the primary of its
// key's slot, follows MOVED and ASK, and reloads the slot map after a failover; its pool per
// cluster node has room for the shard readers' blocked XREADs besides the default 10 per CPU.
// The gateway's Redis dedupe store uses it too. It connects on first use; cfg is
// expected to be valid (Config.Check). Close it when done.
func NewClient(cfg Config) goredis.UniversalClient {
	opts := &goredis.UniversalOptions{
		Addrs:    []string{cfg.Addr},
		Password: cfg.Password,
		DB:       cfg.DB,
		// Deadlines of our contexts reach the socket: Publish fails within Timeout even when
		// the server does not answer.
		ContextTimeoutEnabled: true,
		// One dial attempt per try: go-redis already retries the command (MaxRetries), and a
		// refused connection should fail a call in well under Timeout.
		DialerRetries:   1,
		DisableIdentity: true,
		// Reads end at our contexts' deadlines (above), not earlier: a publish's WAIT
		// (MinReplicas) may take nearly Timeout.
		ReadTimeout: max(cfg.Timeout, 5*time.Second),
	}
	switch cfg.Mode {
	case ModeSentinel:
		opts.Addrs, opts.MasterName, opts.SentinelPassword = cfg.SentinelAddrs, cfg.MasterName, cfg.SentinelPassword
		return goredis.NewFailoverClient(opts.Failover())
	case ModeCluster:
		opts.Addrs = cfg.ClusterAddrs
		opts.PoolSize = 10*runtime.GOMAXPROCS(0) + cfg.Shards
		return goredis.NewClusterClient(opts.Cluster())
	}
	return goredis.NewClient(opts.Simple())
}

// usable is nil once Start has run and until Close: ErrNotStarted before, ErrClosed after.
func (b *Broker) usable() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return transports.ErrClosed
	case !b.started:
		return transports.ErrNotStarted
	}
	return nil
}

// route is where a logical topic lives.
type route struct {
	key     string // stream key
	channel string // channel name, for channel topics
	isCh    bool
	epoch   string // Epoch of positions on this stream (other topics: only in derived UUIDs)
	maxLen  int64  // XADD MAXLEN ~ of the stream
}

// HookMaxLen is the MAXLEN of the hooks and replies streams (Config.MaxLen when smaller): a hook
// request or reply is worthless after its deadline, so the streams are trimmed short.
const HookMaxLen = 1000

func (b *Broker) route(topic string) route {
	if channel, ok := protocol.ChannelOf(topic); ok {
		n := Shard(channel, b.cfg.Shards)
		return route{key: b.shardKeys[n], channel: channel, isCh: true, epoch: b.shardEpochs[n], maxLen: b.cfg.MaxLen}
	}
	rt := route{key: TopicKey(b.cfg.Prefix, topic), epoch: epochBase(b.cfg.Prefix) + "-" + transports.SafeName(topic), maxLen: b.cfg.MaxLen}
	if topic == protocol.TopicHooks || topic == protocol.TopicReplies {
		rt.maxLen = min(b.cfg.MaxLen, HookMaxLen)
	}
	return rt
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// track counts a goroutine about to start, unless the broker is closed.
func (b *Broker) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

// Publish implements transports.Broker: one XADD per message, all of them pipelined in one
// round trip, bounded by Config.Timeout; with Config.MinReplicas, one append script per message
// (which adds a message published again within Config.RetryWindow only once) and a WAIT in the
// same pipeline (see add).
//
// It uses go-redis rather than redisstream's Publisher: that one writes one XADD per message
// with the message's own context (no timeout can be set without modifying the caller's
// messages), and its Marshaller only sees the stream key, not the channel each entry must name.
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	if err := b.usable(); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	_, err := b.add(b.route(topic), msgs)
	return err
}

var (
	_ transports.PositionPublisher = (*Broker)(nil)
	_ transports.ReverseHistory    = (*Broker)(nil)
)

// PublishPositions implements transports.PositionPublisher: the entry id XADD returned for each
// message of a channel topic (pipelined as Publish does); nil positions for other topics.
func (b *Broker) PublishPositions(topic string, msgs ...*message.Message) ([]protocol.Position, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	rt := b.route(topic)
	ids, err := b.add(rt, msgs)
	if err != nil || !rt.isCh {
		return nil, err
	}
	pos := make([]protocol.Position, len(ids))
	for i, s := range ids {
		id, err := parseID(s)
		if err != nil {
			return nil, fmt.Errorf("redis: publish to %s: %w", rt.key, err)
		}
		pos[i] = protocol.Position{Epoch: rt.epoch, Hi: id.ms, Lo: id.seq}
	}
	return pos, nil
}

// add appends msgs to rt's stream, in one pipeline on one connection and within Timeout, and
// returns their entry ids. With MinReplicas, each message is appended by addScript (at most once
// per RetryWindow, see there), and the pipeline ends with WAIT MinReplicas, which counts the
// replicas that acknowledged this connection's writes so far, waiting up to half of the time
// left (waitFor): fewer than MinReplicas then fails the publish (ErrUnavailable), though the
// entries are on the primary; a retry of the same messages finds them there and waits for the
// replicas again.
//
// On a Redis Cluster, WAIT counts the replicas of the primary the connection is on, so the
// pipeline goes to the primary of the stream's slot through its own client. When every command
// was redirected (ASK: the slot is being migrated and the stream has moved; MOVED: the slot has
// moved) or refused with TRYAGAIN (the slot is being migrated and the script's keys are split
// between the two primaries), none ran: the pipeline is sent again after a short pause (and a
// reload of the slot map after MOVED), until Timeout. Without MinReplicas the cluster client
// follows the redirections itself.
func (b *Broker) add(rt route, msgs []*message.Message) ([]string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Timeout)
	defer cancel()
	cmds := make([]goredis.Cmder, len(msgs))
	var wait *goredis.Cmd
	var client goredis.Cmdable = b.client
	server := "" // the server's address in b.scripts
	cluster, _ := b.client.(*goredis.ClusterClient)
	for try := 0; ; try++ {
		if cluster != nil && b.cfg.MinReplicas > 0 {
			primary, err := cluster.MasterForKey(ctx, rt.key)
			if err != nil {
				return nil, b.wrap("publish to "+rt.key, err)
			}
			client, server = primary, primary.Options().Addr
		}
		_, known := b.scripts.Load(server)
		err := b.pipelineAdd(ctx, client, rt, msgs, cmds, &wait, known)
		if b.cfg.MinReplicas > 0 {
			if noScript(cmds, err) {
				// The server lost addScript (it restarted, or is a replica just promoted):
				// nothing was added; EVAL sends it again.
				b.scripts.Delete(server)
				if known {
					continue
				}
			} else if !known && err == nil {
				b.scripts.Store(server, true)
			}
		}
		if err != nil && cluster != nil && redirected(cmds) {
			if goredis.HasErrorPrefix(err, "MOVED") {
				cluster.ReloadState(ctx)
			}
			t := time.NewTimer(min(time.Millisecond<<min(try, 7), 100*time.Millisecond))
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		if err != nil {
			return nil, b.wrap("publish to "+rt.key, err)
		}
		break
	}
	if wait != nil {
		if n, _ := wait.Int64(); n < int64(b.cfg.MinReplicas) {
			ms, _ := wait.Args()[2].(int64)
			return nil, fmt.Errorf("redis: publish to %s: %w: %d of %d replicas acknowledged within %v (redis.min_replicas)",
				rt.key, transports.ErrUnavailable, n, b.cfg.MinReplicas, time.Duration(ms)*time.Millisecond)
		}
	}
	ids := make([]string, len(cmds))
	for i, c := range cmds {
		ids[i] = entryID(c)
	}
	return ids, nil
}

// entryID is the entry id a command of pipelineAdd answered: XADD's, or addScript's.
func entryID(c goredis.Cmder) string {
	switch c := c.(type) {
	case *goredis.StringCmd:
		return c.Val()
	case *goredis.Cmd:
		s, _ := c.Text()
		return s
	}
	return ""
}

// redirected reports whether every command of cmds was answered MOVED, ASK or TRYAGAIN: none ran.
func redirected(cmds []goredis.Cmder) bool {
	for _, c := range cmds {
		if err := c.Err(); !goredis.HasErrorPrefix(err, "MOVED") && !goredis.HasErrorPrefix(err, "ASK") && !goredis.HasErrorPrefix(err, "TRYAGAIN") {
			return false
		}
	}
	return true
}

// pipelineAdd sends add's pipeline on client: an XADD per message, or with MinReplicas an
// addScript per message (by EVALSHA when the server is known to hold it, else by EVAL) and
// WAIT.
func (b *Broker) pipelineAdd(ctx context.Context, client goredis.Cmdable, rt route, msgs []*message.Message, cmds []goredis.Cmder, wait **goredis.Cmd, known bool) error {
	*wait = nil
	_, err := client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, m := range msgs {
			if b.cfg.MinReplicas == 0 {
				cmds[i] = p.XAdd(ctx, &goredis.XAddArgs{Stream: rt.key, MaxLen: rt.maxLen, Approx: true, Values: encode(rt.channel, rt.isCh, m)})
				continue
			}
			window := b.retryWindow
			if m.UUID == "" {
				window = "" // nothing tells a retry of it from another message
			}
			keys, args := []string{rt.key, retryKey(rt, m.UUID)}, append([]any{window, rt.maxLen}, encode(rt.channel, rt.isCh, m)...)
			if known {
				cmds[i] = addScript.EvalSha(ctx, p, keys, args...)
			} else {
				cmds[i] = addScript.Eval(ctx, p, keys, args...) // and the server keeps it
			}
		}
		if b.cfg.MinReplicas > 0 {
			*wait = p.Do(ctx, "WAIT", b.cfg.MinReplicas, waitFor(ctx).Milliseconds())
		}
		return nil
	})
	return err
}

// waitFor is how long WAIT may wait within ctx: half of the time left (half of Timeout in a
// first attempt), so that its answer (Redis ends the wait on its own clock, which ticks
// coarsely) arrives before the deadline, and a second attempt (after NOSCRIPT or a redirection)
// still has time for its own WAIT; at least 1 ms, since 0 would wait for ever.
func waitFor(ctx context.Context) time.Duration {
	d, _ := ctx.Deadline() // add's context has one
	return max(time.Until(d)/2, time.Millisecond)
}

// addScript appends one message to stream KEYS[1] (XADD MAXLEN ~ ARGV[2], fields ARGV[3..]) and
// returns its entry id, remembering the id in KEYS[2] (retryKey) for ARGV[1] ms: while KEYS[2]
// exists, it returns the id it holds instead, adding nothing, and renews it. That renewal is a
// write, so that the connection's WAIT then counts the replicas that caught up with the
// primary's current offset, hence with that entry: a connection that wrote nothing would have
// WAIT count every connected replica at once. ARGV[1] empty: always append, remember nothing
// (a message without UUID). Both writes replicate together (a script's effects are one
// transaction): a replica, promoted or not, holds the entry and its key or neither. Lua's
// unpack takes up to about 8,000 values: a message of more than ~3,990 metadata keys fails.
var addScript = goredis.NewScript(`
if ARGV[1] ~= '' then
  local id = redis.call('GET', KEYS[2])
  if id then
    redis.call('PEXPIRE', KEYS[2], ARGV[1])
    return id
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
end
return id
`)

// retryKey is the key in which addScript remembers the entry of the message of that UUID on rt's
// stream: "{<stream key>}:dup:<uuid>", or on a channel's shard stream
// "{<stream key>}:dup:<len(channel)>:<channel>:<uuid>" (the same message may be published to
// several channels of one shard). Its hash tag is the stream key's, so that it lies in the
// stream's slot on a Redis Cluster, and under the prefix: "{ws:ch:6}:dup:4:news:<uuid>".
func retryKey(rt route, uuid string) string {
	if !rt.isCh {
		return "{" + slotTag(rt.key) + "}:dup:" + uuid
	}
	return "{" + slotTag(rt.key) + "}:dup:" + strconv.Itoa(len(rt.channel)) + ":" + rt.channel + ":" + uuid
}

// slotTag is the part of key a Redis Cluster hashes to find its slot: the content of its first
// "{...}" when not empty, else the whole key.
func slotTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Subscribe implements transports.Broker. Channel topics are served by the node's channel
// reader, other topics by a fan-out reader of their stream; the subscription receives the
// entries added after Subscribe looked up the stream's last id, which it does before returning.
func (b *Broker) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return transports.SubscribeChan(ctx, b, topic)
}

// SubscribeFunc implements transports.FuncSubscriber, as Subscribe does. The subscription holds no
// goroutine and no buffer while it has nothing to deliver: the reader queues entries on it, and
// the first one queued while none runs starts a goroutine that delivers until the queue is empty.
func (b *Broker) SubscribeFunc(ctx context.Context, topic string, deliver func(*message.Message) bool, ended func()) error {
	if err := b.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rt := b.route(topic)
	r, err := b.readerFor(rt)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	ids, err := b.lastIDs(lctx, []string{rt.key})
	cancel()
	if err != nil {
		return b.wrap("subscribe to "+rt.key, err)
	}
	after, err := parseID(ids[0])
	if err != nil {
		return err
	}
	if !b.track() { // done when the subscription ends
		return transports.ErrClosed
	}
	s := &subscription{r: r, key: rt.channel, after: after, ended: ended}
	s.Init(ctx)
	cancelSub := s.Cancel
	s.relay = transports.NewRelay(s.Context(), cancelSub, transports.RelayConfig{
		Deliver: deliver, Limit: b.cfg.SubscriptionBuffer, WG: &b.wg,
	})
	r.add(s)
	s.stopNode = context.AfterFunc(b.ctx, cancelSub) // the node closed
	s.Start(ctx, s.end)
	return nil
}

// readerFor returns the running reader of rt's streams, starting it from the streams' current
// last ids if needed.
func (b *Broker) readerFor(rt route) (*reader, error) {
	name, keys, epochs := rt.key, []string{rt.key}, []string{rt.epoch}
	if rt.isCh {
		name, keys, epochs = "", b.shardKeys, b.shardEpochs
	}
	b.startMu.Lock()
	defer b.startMu.Unlock()
	b.mu.Lock()
	r := b.readers[name]
	b.mu.Unlock()
	if r != nil {
		return r, nil
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Timeout)
	defer cancel()
	ids, err := b.lastIDs(ctx, keys)
	if err != nil {
		return nil, b.wrap("start reading "+keys[0], err)
	}
	r = newReader(b, keys, epochs, ids, rt.isCh)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, transports.ErrClosed
	}
	b.readers[name] = r
	for _, part := range r.parts() {
		b.wg.Add(1)
		go r.run(part)
	}
	return r, nil
}

// lastIDs returns the id of the newest entry of each stream ("0-0" when empty or missing), in
// one round trip. Every entry added later has a greater id.
func (b *Broker) lastIDs(ctx context.Context, keys []string) ([]string, error) {
	cmds := make([]*goredis.XMessageSliceCmd, len(keys))
	_, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.XRevRangeN(ctx, k, "+", "-", 1)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(keys))
	for i, c := range cmds {
		ids[i] = "0-0"
		if msgs := c.Val(); len(msgs) > 0 {
			ids[i] = msgs[0].ID
		}
	}
	return ids, nil
}

// SubscribeGroup implements transports.Broker with a Redis consumer group named group on the
// topic's stream, through watermill-redisstream. An entry stays with the member that read it
// while its subscriber holds it (neither acked nor nacked; the member renews it, hold.go); the
// entries of a member that stopped are claimed by the others after ClaimIdle (a minute); idle
// members are removed after ten minutes. The group is
// created, if new, at the stream's current end before SubscribeGroup returns; from then on the
// group keeps its place, so what is published while no member runs is delivered later, as far as
// MaxLen keeps it. When the group vanishes (Redis restarted without persistence, or XGROUP
// DESTROY), it is created again from the start of the stream and consumption goes on. Channel
// topics are not supported: their shard streams hold many channels.
func (b *Broker) SubscribeGroup(ctx context.Context, topic, group string) (<-chan *message.Message, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	if protocol.IsChannelTopic(topic) {
		return nil, fmt.Errorf("redis: SubscribeGroup on channel topic %q: channels share shard streams, use Subscribe", topic)
	}
	if group == "" {
		return nil, errors.New("redis: SubscribeGroup needs a group name")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rt := b.route(topic)
	if err := b.createGroup(ctx, rt.key, group, "$"); err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	stopAfter := context.AfterFunc(b.ctx, stop)
	in, end, err := b.groupAttempt(sctx, rt.key, group)
	if err == nil && !b.track() {
		end()
		err = transports.ErrClosed
	}
	if err != nil {
		stopAfter()
		stop()
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer b.wg.Done()
		defer close(out)
		defer stopAfter()
		for {
			for m := range in {
				select {
				case out <- m: // the same message: its ack reaches redisstream
				case <-sctx.Done(): // left pending in the group, claimed by another member
				}
			}
			end()
			if sctx.Err() != nil {
				return
			}
			if in, end = b.regroup(sctx, rt.key, group); in == nil {
				return
			}
		}
	}()
	return out, nil
}

// groupAttempt starts a redisstream subscriber of group. end stops it and waits until in is
// closed. in also closes by itself when Redis answers NOGROUP: the group is gone.
func (b *Broker) groupAttempt(ctx context.Context, key, group string) (in <-chan *message.Message, end func(), err error) {
	actx, cancel := context.WithCancel(ctx)
	consumer := watermill.NewShortUUID()
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:                        sharedClient{b.client},
		Unmarshaller:                  codec{},
		Consumer:                      consumer,
		ConsumerGroup:                 group,
		MaxIdleTime:                   b.cfg.ClaimIdle,
		ClaimInterval:                 min(redisstream.DefaultClaimInterval, b.cfg.ClaimIdle/2),
		OldestId:                      "$",
		BlockTime:                     b.cfg.BlockTimeout,
		DisableIndefiniteInitialBlock: true,
		ShouldStopOnReadErrors: func(err error) bool {
			if goredis.HasErrorPrefix(err, "NOGROUP") {
				cancel() // also ends an XACK retry loop that would never succeed
				return true
			}
			return actx.Err() != nil || errors.Is(err, goredis.ErrClosed)
		},
	}, b.wlog)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	in, err = sub.Subscribe(actx, key)
	if err != nil {
		cancel()
		_ = sub.Close()
		return nil, nil, b.wrap("subscribe group "+group+" on "+key, err)
	}
	hold := b.startRenewer(actx, key, group, consumer) // see hold.go
	return in, func() { cancel(); hold.stop(); _ = sub.Close() }, nil
}

// regroup creates group again, from the start of the stream (after a restart without
// persistence the stream holds only what was published since), and subscribes it, backing off
// while Redis is unreachable. It returns nil when ctx ends first.
func (b *Broker) regroup(ctx context.Context, key, group string) (<-chan *message.Message, func()) {
	b.logger.Warn("redis: consumer group vanished, creating it again", "stream", key, "group", group)
	for fails := 0; ; fails++ {
		t := time.NewTimer(min(backoffMin<<min(fails, 10), backoffMax))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		}
		err := b.createGroup(ctx, key, group, "0")
		if err == nil {
			var in <-chan *message.Message
			var end func()
			if in, end, err = b.groupAttempt(ctx, key, group); err == nil {
				return in, end
			}
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		b.logger.Debug("redis: creating consumer group failed, retrying", "stream", key, "group", group, "error", err)
	}
}

// createGroup creates group on stream key (and the stream) at id, unless it exists.
func (b *Broker) createGroup(ctx context.Context, key, group, id string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	err := b.client.XGroupCreateMkStream(ctx, key, group, id).Err()
	if err != nil && !goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return b.wrap("create group "+group+" on "+key, err)
	}
	return nil
}

// Ping implements transports.Broker: a PING bounded by 2 s.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.usable(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return b.wrap("ping", err)
	}
	return nil
}

// Close ends every subscription and reader and the presence goroutine, and closes the client
// when Start made it. Safe to call twice, and before Start. It leaves the node's presence
// members recorded, as a crash would (they are reaped when its lease runs out): a clean
// shutdown is expected to Leave them first (the gateway drains its sessions, which leave).
func (b *Broker) Close() error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		b.quiet.Store(true)
		b.cancel()
		if b.owned { // set by Start, under mu: seen since closed was set
			err = b.client.Close() // also ends the XREADs blocked on it
		}
		done := make(chan struct{})
		go func() {
			b.wg.Wait()
			close(done)
		}()
		limit := b.cfg.BlockTimeout + b.cfg.Timeout
		select {
		case <-done:
		case <-time.After(limit):
			b.logger.Error("redis: broker goroutines still running after Close", "waited", limit)
		}
	})
	return err
}

// wrap makes err a broker error: ErrClosed after Close, ErrUnavailable when Redis could not be
// reached or cannot serve now, else the Redis error as it is.
func (b *Broker) wrap(op string, err error) error {
	if b.isClosed() || errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %s: %w", op, transports.ErrClosed)
	}
	if unavailable(err) {
		return fmt.Errorf("redis: %s: %w: %w", op, transports.ErrUnavailable, err)
	}
	return fmt.Errorf("redis: %s: %w", op, err)
}

func unavailable(err error) bool {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return true // network error, timeout, full pool
	}
	msg := rerr.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "OOM", "BUSY ", "NOAUTH", "WRONGPASS", "NOPERM", "MOVED", "ASK"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// sharedClient hands the broker's client to redisstream, whose Subscriber.Close closes the
// client it was given: the broker closes it itself.
type sharedClient struct{ goredis.UniversalClient }

func (sharedClient) Close() error { return nil }

// quietLogger drops what Watermill logs after Close: redisstream's read goroutines are not
// waited for by its Subscriber.Close and may log once more while they notice the end.
type quietLogger struct {
	watermill.LoggerAdapter
	quiet *atomic.Bool
}

func (l quietLogger) Error(msg string, err error, f watermill.LogFields) {
	if !l.quiet.Load() {
		l.LoggerAdapter.Error(msg, err, f)
	}
}

func (l quietLogger) Info(msg string, f watermill.LogFields) {
	if !l.quiet.Load() {
		l.LoggerAdapter.Info(msg, f)
	}
}

func (l quietLogger) Debug(msg string, f watermill.LogFields) {
	if !l.quiet.Load() {
		l.LoggerAdapter.Debug(msg, f)
	}
}

func (l quietLogger) Trace(msg string, f watermill.LogFields) {
	if !l.quiet.Load() {
		l.LoggerAdapter.Trace(msg, f)
	}
}

func (l quietLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(f), l.quiet}
}
