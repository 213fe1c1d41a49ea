package nats

// Presence on core NATS: nothing is stored on the server. Each node keeps its own members (its
// truth) in memory, and each channel has an owner node, which keeps the channel's whole member
// list and answers for it; the nodes talk by request/reply. Subjects (P = Config.Prefix):
//
//	P.presence.hb               heartbeats: every node that takes part, every Heartbeat/2
//	P.presence.hello            a starting node asks who takes part (request, many replies)
//	P.presence.node.<id>.<inc>  one node: joins, leaves and queries of the channels it owns,
//	                            and the syncs that rebuild them
//
// Liveness: a node that takes part (its OnReap was set, or it joined a member) publishes a
// heartbeat with its id and incarnation (a random id per Broker, so that a restarted node with
// the same id is another peer) every Heartbeat/2, from a goroutine that takes no lock held long,
// on a connection of its own (heartbeats only; a Broker given its connection has that one only),
// so that heartbeats wait neither for the presence lock nor behind a large sync. Every node
// keeps the peers it heard, and every Heartbeat/4 drops one not heard for more than 1.5
// Heartbeats: dead (a node behind itself, or whose own heartbeats come back late, skips those
// checks while it is, up to 4 Heartbeats of silence). The live peers (the view) change when a
// peer appears, dies or comes back with another incarnation.
//
// Ownership: the owner of a channel is the peer of the view with the highest rendezvous hash of
// (peer id, channel); the second highest is its backup. Adding a peer moves to it only the
// channels it wins; removing one moves only its channels, each to its backup.
//
// Rebuild: a node that adopts a new view drops the channels it no longer owns and asks every
// other peer of the view to sync (a new epoch): each answers, in order on one connection, with
// its own members of each channel the asker owns in that view, its own members of the channels
// it owns itself whose backup is the asker, and "done". The asker replaces that peer's entries
// with what it sent (what a peer did not send is gone: a leave that was lost). A channel the
// node owned in every view since its last complete sync is answered at once; one it gained waits
// ("retry") until every peer answered. The members of peers no longer in the view are removed
// and given to OnReap at once in the channels the node kept (it has them whole), and at the end
// of the sync in those it gained, with the backup copies of a dead owner's own members there
// (the vacated of the last needs the whole channel): once in the cluster, since one node owns
// each channel, and once on the node, which remembers what it reaped of a dead incarnation (a
// late join or backup copy of it lists no ghost and is not reaped twice).
//
// So a SIGKILLed node's members are reaped within 1¾ Heartbeats of its death (its last message
// was at its death or before; 1.5 of silence and a quarter to the next check), plus the sync
// of the new view in a channel the dead node owned (a round trip to each live node).
//
// A server restart loses nothing (the nodes hold everything); while its connection is down a
// node judges no peer, and after it reconnects it syncs its channels again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/internal/roster"
)

var _ transports.Presence = (*Broker)(nil)

// Presence limits.
const (
	// maxPage bounds the members or channels one request asks of a node (a page of 1,000
	// members is about 100 KB, far below NATS's 1 MB payload limit).
	maxPage = 1000
	// syncChunk is how many members one sync message carries.
	syncChunk = 200
	// maxCopyHops bounds how often copies of a dead node's members are sent on to the node that
	// owns their channel (nodes whose views differ for a moment could otherwise pass them round).
	maxCopyHops = 4
)

// Liveness, in heartbeats (Config.Presence.Heartbeat). A node beats every half heartbeat and
// judges its peers every quarter heartbeat; a peer silent for more than dropAfter is dropped
// from the view at the next check, so at most dropAfter + ¼ heartbeat after its last message:
// 1¾ heartbeats after its death, under the bound of 2. A node behind itself (tick) skips the
// checks while it is, up to lagAfter of silence.
func (p *presence) dropAfter() time.Duration   { return p.hb * 3 / 2 }
func (p *presence) lagAfter() time.Duration    { return p.hb * 4 }
func (p *presence) forgetAfter() time.Duration { return max(20*p.hb, time.Minute) }

// peerKey is one incarnation of a node: its id and a random id made by its Broker.
type peerKey struct {
	ID  string `json:"id"`
	Inc string `json:"inc"`
}

// wire is a presence message between nodes.
type wire struct {
	Op     string           `json:"op"`
	From   peerKey          `json:"from"`
	Epoch  uint64           `json:"epoch,omitempty"`
	Back   bool             `json:"back,omitempty"` // sync: the asker had a view without the one asked
	View   []peerKey        `json:"view,omitempty"`
	Active bool             `json:"active,omitempty"`
	Ch     string           `json:"ch,omitempty"`
	M      *protocol.Member `json:"m,omitempty"`
	S      string           `json:"s,omitempty"`
	After  string           `json:"after,omitempty"`
	Limit  int              `json:"limit,omitempty"`
	Recs   []rec            `json:"recs,omitempty"`
	At     int64            `json:"at,omitempty"` // heartbeat: when it was sent (Unix ns), read by its sender only
}

// rec is a node's own members of one channel, in a sync: for the owner, or (Backup) for the
// backup of a channel the sender owns.
type rec struct {
	Ch     string            `json:"ch"`
	Backup bool              `json:"backup,omitempty"`
	Ms     []protocol.Member `json:"ms"`
}

// answer is a node's reply to a request.
type answer struct {
	Retry bool                    `json:"retry,omitempty"` // not the owner, or not rebuilt yet: ask again
	Flag  bool                    `json:"flag,omitempty"`  // occupied (join), vacated (leave)
	Ms    []protocol.Member       `json:"ms,omitempty"`
	More  bool                    `json:"more,omitempty"`
	Stats protocol.PresenceStats  `json:"stats"`
	Chs   []protocol.ChannelStats `json:"chs,omitempty"`
	From  peerKey                 `json:"from"`            // hello: who answers
	Peers []peerKey               `json:"peers,omitempty"` // hello: its view
}

// reaped is a member removed because its node died, for OnReap.
type reaped struct {
	ch      string
	m       protocol.Member
	vacated bool
}

type sessions = map[string]struct{}

// presence is the presence state of a Broker. mu guards everything but the reply table.
type presence struct {
	self peerKey
	hb   time.Duration

	mu        sync.Mutex
	closed    bool
	shut      atomic.Bool  // Close began: handlers do nothing
	gate      sync.RWMutex // held (read) by each handler under way; Close waits for them
	onReap    func(string, protocol.Member, bool)
	active    bool // takes part: heartbeats, owns channels
	activeMu  sync.Mutex
	activated atomic.Bool
	subs      []*natsgo.Subscription

	peers   map[string]*peer      // the other peers heard, by id
	view    []peerKey             // the live peers (this one too once active), by id
	epoch   uint64                // of the last view adopted (or resync)
	waiting map[peerKey]bool      // peers whose sync of epoch has not come; nil: complete
	moved   map[peerKey]bool      // waited-for peers that sent sync messages (of any epoch) since the last check
	askedAt map[peerKey]time.Time // when each waited-for peer was last asked, or last sent sync messages
	views   [][]peerKey           // the view of the last complete sync, then those adopted since
	seen    map[peerKey]map[string]sessions
	seenB   map[peerKey]map[string]sessions
	back    map[peerKey]bool   // peers asked to sync with Back, until one of their syncs is done
	backAt  map[peerKey]uint64 // the asker's epoch of the last sync with Back this node acted on

	local  map[string]map[string]protocol.Member             // this node's own members (its truth)
	owned  roster.Roster[peerKey]                            // the channels it owns, with the node of each entry
	byNode map[peerKey]map[string]sessions                   // owned's entries by node
	backup map[peerKey]map[string]map[string]protocol.Member // owners' own members of the channels this node backs
	hops   map[peerKey]uint64                                // how often a dead owner's copies were sent on

	// Incarnations dropped from the view (not heard for dropAfter, or replaced by a new
	// incarnation of their id), until they are heard again or forgetAfter has passed; with the
	// members this node reaped of each, so that a late message of a dead node (its join, its
	// backup copy, copies of its members sent on by another node) neither lists a ghost nor
	// makes a second OnReap.
	dead    map[peerKey]time.Time
	reapedM map[peerKey]map[string]sessions
	viewCh  chan struct{} // closed when the view changes, then replaced

	dirty   map[string]uint64 // channels whose owner may be wrong about this node's members
	gen     uint64
	pushing bool

	failRecs atomic.Int32 // tests only (export_test.go): how many sync records fail to publish
	stalled  atomic.Bool  // tests only (export_test.go): no heartbeats, as in a stalled process
	out      outbox       // messages to other nodes' subjects, published by sendLoop

	wasDown    bool
	reconnects uint64
	lastTick   time.Time
	hbSub      *natsgo.Subscription
	nodeSub    *natsgo.Subscription
	nodeLag    backlog // of nodeSub, sampled by the loop

	// The heartbeat connection: heartbeats are published and received on it, nothing else, so
	// that they never wait behind a large sync on the main connection (in nats.go's writer, the
	// server's queue to a peer, the peer's reader). Set once, when the node takes part (before
	// activated); a Broker given its connection (NewWithConn) has no other: hbc is then nc.
	hbc      atomic.Pointer[natsgo.Conn]
	hbOwned  bool          // hbc is the Broker's own: Close closes it (under mu)
	hbClosed chan struct{} // closed by hbc's ClosedHandler, when hbOwned

	// When each peer was last heard. Its own lock, so that a heartbeat is noted at once even
	// while mu is held long (a sync of many members).
	hmu     sync.Mutex
	heardAt map[peerKey]time.Time
	// When this node's own heartbeats last came back, and when one last came back late (more
	// than half a heartbeat after it was sent): the way of the peers' heartbeats (the server,
	// this node's reader) was behind then.
	echoAt, slowEchoAt time.Time

	// Replies to this node's requests: <inbox>.<token>.
	inbox   string
	rmu     sync.Mutex
	pending map[string]chan *natsgo.Msg
	next    uint64
}

type peer struct {
	key peerKey
}

func newPresence(id string, hb time.Duration) *presence {
	return &presence{
		self:    peerKey{ID: id, Inc: strings.TrimPrefix(natsgo.NewInbox(), natsgo.InboxPrefix)},
		hb:      hb,
		peers:   map[string]*peer{},
		heardAt: map[peerKey]time.Time{},
		local:   map[string]map[string]protocol.Member{},
		byNode:  map[peerKey]map[string]sessions{},
		backup:  map[peerKey]map[string]map[string]protocol.Member{},
		pending: map[string]chan *natsgo.Msg{},
		out:     outbox{wake: make(chan struct{}, 1)},
		viewCh:  make(chan struct{}),
	}
}

func (b *Broker) hbSubject() string    { return b.cfg.Prefix + ".presence.hb" }
func (b *Broker) helloSubject() string { return b.cfg.Prefix + ".presence.hello" }
func (b *Broker) nodeSubject(k peerKey) string {
	return b.cfg.Prefix + ".presence.node." + transports.SafeName(k.ID) + "." + k.Inc
}

// weight is the rendezvous hash of (id, channel): FNV-1a, then a 64-bit finalizer.
func weight(id, ch string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * 1099511628211
	}
	h = (h ^ 0) * 1099511628211
	for i := 0; i < len(ch); i++ {
		h = (h ^ uint64(ch[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// rank returns the owner and the backup of ch in view (ok false: empty view; backup zero: alone).
func rank(view []peerKey, ch string) (owner, backup peerKey, ok bool) {
	var w1, w2 uint64
	n := 0
	for _, k := range view {
		w := weight(k.ID, ch)
		switch {
		case n == 0 || w > w1 || w == w1 && k.ID > owner.ID:
			if n > 0 {
				backup, w2 = owner, w1
			}
			owner, w1 = k, w
		case n == 1 || w > w2 || w == w2 && k.ID > backup.ID:
			backup, w2 = k, w
		}
		n++
	}
	return owner, backup, n > 0
}

func ownerOf(view []peerKey, ch string) peerKey {
	o, _, _ := rank(view, ch)
	return o
}

// --- The node's part: start, close, heartbeats, views ---

// startPresence subscribes to the heartbeats and the replies, and starts the loop (heartbeats,
// liveness) and the sender of the outbox. Called by Start with b.mu held, before started is set.
func (b *Broker) startPresence() error {
	p := b.pr
	p.inbox = natsgo.NewInbox()
	rs, err := b.nc.Subscribe(p.inbox+".*", b.onReply)
	if err != nil {
		return err
	}
	hs, err := b.nc.Subscribe(b.hbSubject(), b.handler(b.onHeartbeat))
	if err != nil {
		_ = rs.Unsubscribe()
		return err
	}
	p.mu.Lock()
	p.subs = append(p.subs, rs, hs)
	p.hbSub, p.lastTick = hs, time.Now()
	p.wasDown = b.nc.Status() != natsgo.CONNECTED
	p.reconnects = b.nc.Stats().Reconnects
	p.mu.Unlock()
	b.wg.Add(3)
	go b.presenceLoop()
	go b.beatLoop()
	go b.sendLoop()
	return nil
}

// afterStart takes part in presence when OnReap was set, else learns the peers (a node that only
// asks, as a service's).
func (b *Broker) afterStart(ctx context.Context) {
	b.pr.mu.Lock()
	reap := b.pr.onReap != nil
	b.pr.mu.Unlock()
	if reap {
		_ = b.activate(ctx)
		return
	}
	keys := b.hello(ctx, false)
	b.pr.mu.Lock()
	for _, k := range keys {
		b.pr.heard(k)
	}
	b.pr.computeView()
	b.pr.mu.Unlock()
}

// activate makes the node take part: it subscribes to its own subject and the hellos, asks who
// takes part (the peers add it to their view as they answer), adopts the view and beats.
func (b *Broker) activate(ctx context.Context) error {
	p := b.pr
	if p.activated.Load() {
		return nil
	}
	p.activeMu.Lock()
	defer p.activeMu.Unlock()
	if p.activated.Load() {
		return nil
	}
	if err := b.usable(); err != nil {
		return err
	}
	ns, err := b.nc.Subscribe(b.nodeSubject(p.self), b.handler(b.onNode))
	if err != nil {
		return b.unavailable("presence subscribe", err)
	}
	ns.SetPendingLimits(-1, 256<<20) // a sync of 10,000 members is 50 messages; a join storm many
	hs, err := b.nc.Subscribe(b.helloSubject(), b.handler(b.onHello))
	if err != nil {
		_ = ns.Unsubscribe()
		return b.unavailable("presence subscribe", err)
	}
	hc, hbs, hcClosed := b.heartbeatConn()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = ns.Unsubscribe()
		_ = hs.Unsubscribe()
		if hc != b.nc {
			closeConn(hc, hcClosed, b.cfg.Timeout)
		}
		return transports.ErrClosed
	}
	p.subs = append(p.subs, ns, hs)
	p.nodeSub = ns
	old := p.hbSub
	if hbs != nil { // the heartbeats come on the heartbeat connection now, not twice
		p.subs = slices.DeleteFunc(p.subs, func(s *natsgo.Subscription) bool { return s == old })
		p.subs = append(p.subs, hbs)
		p.hbSub = hbs
	}
	p.hbOwned, p.hbClosed = hc != b.nc, hcClosed
	p.hbc.Store(hc)
	p.mu.Unlock()
	if hbs != nil {
		_ = old.Unsubscribe()
	}
	if b.nc.Status() == natsgo.CONNECTED {
		_ = b.nc.FlushTimeout(b.cfg.Timeout) // the server has both subscriptions before the hello
	}
	keys := b.hello(ctx, true)
	p.mu.Lock()
	p.active = true
	p.hmu.Lock()
	p.echoAt = time.Now() // its first heartbeat is on its way
	p.hmu.Unlock()
	for _, k := range keys {
		p.heard(k)
	}
	reaps := p.viewChanged(b)
	b.beat()
	p.mu.Unlock()
	p.activated.Store(true)
	b.tell(reaps)
	return nil
}

// heartbeatConn makes the heartbeat connection of a node that starts to take part, and
// subscribes it to the heartbeats (the server has the subscription when it returns, if it is
// up). A Broker given its connection (NewWithConn) makes none, and one that cannot make it
// (nats.go refuses the options, or the subscription fails) logs why: it returns the main
// connection then, and no subscription (the main one's goes on).
func (b *Broker) heartbeatConn() (hc *natsgo.Conn, hbs *natsgo.Subscription, closed chan struct{}) {
	if !b.owned {
		return b.nc, nil, nil
	}
	closed = make(chan struct{})
	hc, err := natsgo.Connect(b.cfg.URL, append(b.hbOptions(closed), b.cfg.Options...)...)
	if err == nil {
		hbs, err = hc.Subscribe(b.hbSubject(), b.handler(b.onHeartbeat))
		if err != nil {
			closeConn(hc, closed, b.cfg.Timeout)
		}
	}
	if err != nil {
		b.logger.Warn("nats presence: no heartbeat connection, heartbeats share the main one", "error", err)
		return b.nc, nil, nil
	}
	if hc.Status() == natsgo.CONNECTED {
		_ = hc.FlushTimeout(b.cfg.Timeout)
	}
	return hc, hbs, closed
}

// closeHeartbeatConn closes the heartbeat connection if the Broker made it. Called by Close
// after closePresence, when no activate can make one any more.
func (b *Broker) closeHeartbeatConn() {
	p := b.pr
	p.mu.Lock()
	hc, owned, closed := p.hbc.Load(), p.hbOwned, p.hbClosed
	p.hbOwned = false
	p.mu.Unlock()
	if owned {
		closeConn(hc, closed, b.cfg.Timeout)
	}
}

// hello asks who takes part and returns those who answered: it waits until every peer that an
// answer names has answered, no one can (the server says no one listens), or min(Timeout,
// Heartbeat).
func (b *Broker) hello(ctx context.Context, active bool) []peerKey {
	p := b.pr
	if b.nc.Status() != natsgo.CONNECTED {
		return nil
	}
	token, replies := p.register(256)
	defer p.unregister(token)
	if err := b.publish(b.helloSubject(), p.inbox+"."+token, wire{Op: "hello", From: p.self, Active: active}); err != nil {
		return nil
	}
	wait := time.NewTimer(min(b.cfg.Timeout, p.hb))
	defer wait.Stop()
	heard, named := map[peerKey]bool{}, map[peerKey]bool{}
	for {
		select {
		case <-ctx.Done():
			return keysOf(heard)
		case <-b.ctx.Done():
			return nil
		case <-wait.C:
			return keysOf(heard)
		case m := <-replies:
			if noResponders(m) {
				return keysOf(heard)
			}
			var a answer
			if json.Unmarshal(m.Data, &a) != nil || a.From.ID == "" {
				continue
			}
			heard[a.From] = true
			for _, k := range a.Peers {
				if k != p.self {
					named[k] = true
				}
			}
			if len(heard) > 0 && subset(named, heard) {
				return keysOf(heard)
			}
		}
	}
}

func keysOf(m map[peerKey]bool) []peerKey {
	out := make([]peerKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func subset(a, b map[peerKey]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func noResponders(m *natsgo.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}

// handler wraps a subscription callback: nothing runs once Close began, and Close waits for
// what runs. It takes no lock that a handler waits on long (heartbeats are noted at once).
func (b *Broker) handler(fn func(*natsgo.Msg)) natsgo.MsgHandler {
	return func(m *natsgo.Msg) {
		p := b.pr
		p.gate.RLock()
		defer p.gate.RUnlock()
		if p.shut.Load() {
			return
		}
		fn(m)
	}
}

// closePresence ends the presence subscriptions and waits for their handlers. Called by Close
// after b.ctx is cancelled (which ends the loop and the waits of requests).
func (b *Broker) closePresence() {
	p := b.pr
	p.shut.Store(true)
	p.mu.Lock()
	p.closed = true
	subs := p.subs
	p.subs = nil
	p.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	p.gate.Lock() // the handlers under way are done
	p.gate.Unlock()
}

// beatLoop publishes a heartbeat every Heartbeat/2 while the node takes part and its
// connections are up, until Close. It takes no lock that anything holds long: a node busy
// under the presence lock (encoding a large sync, serving a page of large infos) still beats
// on time, and its peers judge it alive, which it is.
func (b *Broker) beatLoop() {
	defer b.wg.Done()
	p := b.pr
	t := time.NewTicker(p.hb / 2)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			// Not while the main connection is down: a node that cannot be asked anything is
			// not alive to its peers.
			if p.activated.Load() && !p.stalled.Load() && b.nc.Status() == natsgo.CONNECTED &&
				p.hbc.Load().Status() == natsgo.CONNECTED {
				b.beat()
			}
		}
	}
}

// presenceLoop judges the peers every Heartbeat/4, until Close.
func (b *Broker) presenceLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.pr.hb / 4)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.tick(tick%2 == 0)
		}
	}
}

// tick is one pass of the loop: after a reconnection the peers get 1.5 Heartbeats again and the
// node syncs its channels anew; a peer not heard for 1.5 Heartbeats is dropped (never while this
// node's own connection is down: then it hears no one, through no fault of theirs). Every other
// pass (half) asks again for the syncs that did not come and pushes the dirty channels.
func (b *Broker) tick(half bool) {
	p := b.pr
	up := b.nc.Status() == natsgo.CONNECTED
	rc := b.nc.Stats().Reconnects
	if hc := p.hbc.Load(); hc != nil && hc != b.nc { // it hears no heartbeat while that is down
		up = up && hc.Status() == natsgo.CONNECTED
		rc += hc.Stats().Reconnects
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	var reaps []reaped
	now := time.Now()
	if up && (p.wasDown || rc != p.reconnects) {
		p.hmu.Lock()
		for k := range p.heardAt {
			p.heardAt[k] = now
		}
		p.echoAt = now
		p.hmu.Unlock()
		if p.active {
			reaps = p.adopt(b, p.view)
		}
	}
	p.wasDown, p.reconnects = !up, rc
	// This node judges no one before 4 heartbeats of silence when it is behind itself: its loop
	// ran late (the process stalled), heartbeats wait to be handled, a message of the peers
	// (each says its sender lives) has waited half a heartbeat, or its own heartbeats came back
	// late (one took more than half a heartbeat in the last 1.5, or none came for a heartbeat:
	// the peers' heartbeats come the same way, through the server and this node's reader).
	// Messages that wait less, as at an owner during a join storm, are no lag: the bound stays
	// 1¾ heartbeats.
	lagging := now.Sub(p.lastTick) > p.hb/2
	if p.activated.Load() && p.echoLate(now) {
		lagging = true
	}
	if p.hbSub != nil {
		if n, _, err := p.hbSub.Pending(); err == nil && n > 0 {
			lagging = true
		}
	}
	queued := false // messages of the peers wait for this node's handler
	if p.nodeSub != nil {
		d, err1 := p.nodeSub.Delivered()
		n, _, err2 := p.nodeSub.Pending()
		if err1 == nil && err2 == nil && p.nodeLag.behind(d, int64(n)) {
			lagging = true
		}
		queued = err2 == nil && n > 0
	}
	p.lastTick = now
	for k, at := range p.dead {
		if now.Sub(at) > p.forgetAfter() {
			delete(p.dead, k)
			delete(p.reapedM, k)
		}
	}
	if up {
		changed := false
		p.hmu.Lock()
		for id, pe := range p.peers {
			if silent := now.Sub(p.heardAt[pe.key]); silent > p.dropAfter() && (!lagging || silent > p.lagAfter()) {
				delete(p.peers, id)
				delete(p.heardAt, pe.key)
				p.markDead(pe.key, now)
				changed = true
				b.logger.Warn("nats presence: peer not heard for 1.5 heartbeats, dropped", "node_id", id, "silent", silent.Round(time.Millisecond))
			}
		}
		p.hmu.Unlock()
		if changed {
			reaps = append(reaps, p.viewChanged(b)...)
		}
		if p.active && half && p.waiting != nil {
			for k := range p.waiting {
				if p.moved[k] { // its sync is under way (a large one takes a while): no second
					p.moved[k] = false
					p.askedAt[k] = now
					continue
				}
				if queued && now.Sub(p.askedAt[k]) < 2*p.hb {
					continue // what waits for the handler may be its sync (a loaded node)
				}
				b.askSync(k)
			}
		}
		if p.active && half && len(p.dirty) > 0 && !p.pushing {
			p.pushing = true
			b.wg.Add(1) // the loop's own count holds the group open
			go b.push()
		}
	}
	p.mu.Unlock()
	b.tell(reaps)
}

// backlog tells, from samples of a subscription taken every quarter heartbeat, whether a
// message waits for its handler since half a heartbeat or more: whether the handler has not yet
// been handed every message that was there two samples ago.
type backlog struct {
	samples [2]struct{ delivered, pending int64 } // the sample before the last, and the last
	n       int
}

// behind takes a sample (the messages handed to the handler so far, and those not yet handled,
// the one being handled included) and reports whether one of the messages there at the sample
// before the last still waits.
func (q *backlog) behind(delivered, pending int64) bool {
	old := q.samples[0]
	q.samples[0] = q.samples[1]
	q.samples[1].delivered, q.samples[1].pending = delivered, pending
	q.n++
	return q.n > 2 && delivered < old.delivered+old.pending
}

// beat publishes a heartbeat on the heartbeat connection.
func (b *Broker) beat() {
	data, err := json.Marshal(wire{Op: "hb", From: b.pr.self, At: time.Now().UnixNano()})
	if err == nil {
		err = b.pr.hbc.Load().Publish(b.hbSubject(), data)
	}
	if err != nil {
		b.logger.Debug("nats presence: heartbeat not sent", "error", err)
	}
}

func (b *Broker) publish(subject, reply string, w any) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	return b.nc.PublishMsg(&natsgo.Msg{Subject: subject, Reply: reply, Data: data})
}

func (b *Broker) respond(m *natsgo.Msg, a answer) {
	if m.Reply == "" {
		return
	}
	if err := b.publish(m.Reply, "", a); err != nil {
		b.logger.Debug("nats presence: answer not sent", "error", err)
	}
}

// tell gives reaped members to OnReap, outside p.mu.
func (b *Broker) tell(reaps []reaped) {
	if len(reaps) == 0 {
		return
	}
	b.pr.mu.Lock()
	fn, closed := b.pr.onReap, b.pr.closed
	b.pr.mu.Unlock()
	if fn == nil || closed {
		return
	}
	for _, r := range reaps {
		fn(r.ch, r.m, r.vacated)
	}
}

func (b *Broker) onHeartbeat(m *natsgo.Msg) {
	var w wire
	if json.Unmarshal(m.Data, &w) != nil || w.From.ID == "" {
		return
	}
	p := b.pr
	if w.From == p.self {
		p.echo(time.Unix(0, w.At), time.Now())
		return
	}
	if p.heardKnown(w.From) {
		return
	}
	p.mu.Lock()
	var reaps []reaped
	if p.heard(w.From) {
		reaps = p.viewChanged(b)
	}
	p.mu.Unlock()
	b.tell(reaps)
}

func (b *Broker) onHello(m *natsgo.Msg) {
	var w wire
	if json.Unmarshal(m.Data, &w) != nil || w.From.ID == "" || w.From == b.pr.self {
		return
	}
	p := b.pr
	p.mu.Lock()
	var reaps []reaped
	if w.Active && p.heard(w.From) {
		reaps = p.viewChanged(b)
	}
	a := answer{From: p.self, Peers: slices.Clone(p.view)}
	p.mu.Unlock()
	b.respond(m, a)
	b.tell(reaps)
}

// heard notes that k is alive and reports whether it is new (or a new incarnation). p.mu is held.
func (p *presence) heard(k peerKey) bool {
	if k.ID == p.self.ID {
		return false // this node's id: itself, or an earlier incarnation of it
	}
	p.hmu.Lock()
	defer p.hmu.Unlock()
	p.heardAt[k] = time.Now()
	pe := p.peers[k.ID]
	if pe != nil && pe.key == k {
		return false
	}
	if pe != nil {
		delete(p.heardAt, pe.key)
		p.markDead(pe.key, time.Now())
	}
	if _, ok := p.dead[k]; ok { // dropped, but it lived (it stalled): its members come back by sync
		delete(p.dead, k)
		delete(p.reapedM, k)
	}
	p.peers[k.ID] = &peer{key: k}
	return true
}

// markDead notes that k left the view as dead. p.mu is held.
func (p *presence) markDead(k peerKey, now time.Time) {
	if p.dead == nil {
		p.dead = map[peerKey]time.Time{}
	}
	p.dead[k] = now
}

// isDead reports whether k is an incarnation dropped from the view. p.mu is held.
func (p *presence) isDead(k peerKey) bool {
	_, ok := p.dead[k]
	return ok
}

// wasReaped reports whether this node reaped k's member session of ch. p.mu is held.
func (p *presence) wasReaped(k peerKey, ch, session string) bool {
	_, ok := p.reapedM[k][ch][session]
	return ok
}

// viewMoved tells the requests waiting for an owner that the view changed. p.mu is held.
func (p *presence) viewMoved() {
	close(p.viewCh)
	p.viewCh = make(chan struct{})
}

// echo notes that one of this node's own heartbeats, sent at sent, came back (now).
func (p *presence) echo(sent, now time.Time) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	p.echoAt = now
	if now.Sub(sent) > p.hb/2 {
		p.slowEchoAt = now
	}
}

// echoLate reports whether this node's own heartbeats came back late: one took more than half
// a heartbeat within the last 1.5 heartbeats, or none came for a heartbeat.
func (p *presence) echoLate(now time.Time) bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return now.Sub(p.echoAt) > p.hb || now.Sub(p.slowEchoAt) <= p.dropAfter()
}

// heardKnown notes a heartbeat of a peer already in p.peers, without p.mu, and reports whether
// it was one.
func (p *presence) heardKnown(k peerKey) bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if _, ok := p.heardAt[k]; !ok {
		return false
	}
	p.heardAt[k] = time.Now()
	return true
}

// computeView returns the live peers, this node too once active, by id. p.mu is held.
func (p *presence) computeView() []peerKey {
	v := make([]peerKey, 0, len(p.peers)+1)
	for _, pe := range p.peers {
		v = append(v, pe.key)
	}
	if p.active {
		v = append(v, p.self)
	}
	slices.SortFunc(v, func(a, b peerKey) int { return strings.Compare(a.ID, b.ID) })
	if !p.active && !slices.Equal(v, p.view) {
		p.view = v
		p.viewMoved()
	}
	return v
}

// viewChanged adopts the live peers as the view if they changed. p.mu is held.
func (p *presence) viewChanged(b *Broker) []reaped {
	v := p.computeView()
	if !p.active || slices.Equal(v, p.view) {
		return nil
	}
	return p.adopt(b, v)
}

// adopt makes v the view under a new epoch: the node drops the channels it no longer owns,
// records its own members in those it owns, and asks every other peer to sync. p.mu is held.
//
// A peer that was not in the view before gets its sync requests with Back (until it answers
// one): it may have kept this node in its own view all along (this node stalled, or its network
// was cut one way), and then holds a list of this node's members from before, which no view
// change of its own would renew. A resync (the same view again) sends no Back: it adds no one,
// so the syncs that Back starts start no more.
func (p *presence) adopt(b *Broker, v []peerKey) []reaped {
	p.epoch++
	if slices.Equal(v, p.view) {
		clear(p.back)
	}
	for k := range p.back {
		if !slices.Contains(v, k) {
			delete(p.back, k)
		}
	}
	for k := range p.backAt {
		if !slices.Contains(v, k) {
			delete(p.backAt, k)
		}
	}
	for _, k := range v {
		if k != p.self && !slices.Contains(p.view, k) {
			if p.back == nil {
				p.back = map[peerKey]bool{}
			}
			p.back[k] = true
		}
	}
	if !slices.Equal(v, p.view) {
		p.view = v
		p.viewMoved()
	}
	if p.views != nil {
		p.views = append(p.views, v)
	}
	for _, ch := range slices.Clone(p.owned.Names()) {
		if to := ownerOf(v, ch); to != p.self {
			p.dropChannel(b, ch, to)
		}
	}
	p.waiting = map[peerKey]bool{}
	p.moved = map[peerKey]bool{}
	p.askedAt = map[peerKey]time.Time{}
	p.seen = map[peerKey]map[string]sessions{}
	p.seenB = map[peerKey]map[string]sessions{}
	p.applyRecs(p.self, p.syncRecs(v, p.self))
	p.finishSync(p.self)
	for _, k := range v {
		if k != p.self {
			p.waiting[k] = true
			b.askSync(k)
		}
	}
	if len(p.waiting) == 0 {
		return p.complete(b)
	}
	// The channels this node kept (it owned them in every view since its last complete sync)
	// are whole here: the members of a dead node are reaped from them now, not after the sync.
	return p.reapDead(b, true)
}

func (b *Broker) askSync(k peerKey) {
	p := b.pr
	if p.askedAt != nil {
		p.askedAt[k] = time.Now()
	}
	w := wire{Op: "sync", From: p.self, Epoch: p.epoch, View: p.view, Back: p.back[k]}
	if err := b.toNode(b.nodeSubject(k), "", w, k.ID); err != nil {
		b.logger.Debug("nats presence: sync request not sent", "node_id", k.ID, "error", err)
	}
}

// dropChannel forgets ch, which to owns now. Copies of the other nodes' members go to it: a
// live node's come to it by sync, which replaces the copies, but a node that died (or dies
// before it synced with to) can only be reaped from them, since no one else knows them. p.mu is
// held.
func (p *presence) dropChannel(b *Broker, ch string, to peerKey) {
	var gone []roster.Entry[peerKey]
	p.owned.Each(ch, func(e roster.Entry[peerKey]) bool { gone = append(gone, e); return true })
	others := map[peerKey]map[string]protocol.Member{}
	for _, e := range gone {
		p.owned.Remove(ch, e.M.Session)
		p.unindex(e.X, ch, e.M.Session)
		if e.X != p.self && e.X != to {
			if others[e.X] == nil {
				others[e.X] = map[string]protocol.Member{}
			}
			others[e.X][e.M.Session] = e.M
		}
	}
	for k, ms := range others {
		b.sendCopies(to, k, ch, ms)
	}
}

// syncRecs are this node's own members that asker must have in view v: those of the channels
// asker owns, and (Backup) those of the channels this node owns whose backup asker is. p.mu is
// held.
func (p *presence) syncRecs(v []peerKey, asker peerKey) []rec {
	var out []rec
	for ch, mine := range p.local {
		owner, backup, _ := rank(v, ch)
		isBackup := owner == p.self && backup == asker && asker != p.self
		if owner != asker && !isBackup {
			continue
		}
		ms := make([]protocol.Member, 0, len(mine))
		for _, m := range mine {
			ms = append(ms, m)
		}
		out = append(out, rec{Ch: ch, Backup: isBackup, Ms: ms})
	}
	return out
}

// applyRecs records what from sent in a sync. p.mu is held.
func (p *presence) applyRecs(from peerKey, recs []rec) {
	for _, r := range recs {
		seen := &p.seen
		if r.Backup {
			seen = &p.seenB
		}
		if (*seen)[from] == nil {
			(*seen)[from] = map[string]sessions{}
		}
		if (*seen)[from][r.Ch] == nil {
			(*seen)[from][r.Ch] = sessions{}
		}
		for _, m := range r.Ms {
			(*seen)[from][r.Ch][m.Session] = struct{}{}
			if r.Backup {
				p.putBackup(from, r.Ch, m)
			} else if ownerOf(p.view, r.Ch) == p.self {
				p.put(from, r.Ch, m)
			}
		}
	}
}

// finishSync removes from's entries and backup copies that its sync did not send: leaves that
// were lost on the way. p.mu is held.
func (p *presence) finishSync(from peerKey) {
	for ch, ss := range p.byNode[from] {
		for s := range ss {
			if _, ok := p.seen[from][ch][s]; !ok {
				p.remove(ch, s)
			}
		}
	}
	for ch, ms := range p.backup[from] {
		for s := range ms {
			if _, ok := p.seenB[from][ch][s]; !ok {
				delete(ms, s)
			}
		}
		if len(ms) == 0 {
			delete(p.backup[from], ch)
		}
	}
	if len(p.backup[from]) == 0 {
		delete(p.backup, from)
	}
	delete(p.seen, from)
	delete(p.seenB, from)
}

// complete ends a sync: the node answers for every channel it owns, and reaps the members of
// the peers no longer in the view. p.mu is held.
func (p *presence) complete(b *Broker) []reaped {
	p.waiting, p.moved, p.askedAt, p.seen, p.seenB = nil, nil, nil, nil, nil
	p.views = [][]peerKey{p.view}
	return p.reapDead(b, false)
}

// reapDead removes the members of the peers not in the view from the channels this node owns,
// with the backup copies of a dead owner's own members of the channels it now owns; it returns
// them, for OnReap. The backup copies of a channel another node owns now (the dead owner came
// back with another incarnation, and owns the channel again) are sent to that node. With kept,
// during a sync, it reaps only in the channels this node has whole (servable), and leaves the
// backup copies (the channels they are of were gained: their other members are still coming)
// for the end of the sync. A member this node reaped already is not reaped again. p.mu is held.
func (p *presence) reapDead(b *Broker, kept bool) []reaped {
	live := map[peerKey]bool{}
	for _, k := range p.view {
		live[k] = true
	}
	for owner, chans := range p.backup {
		if live[owner] || kept {
			continue
		}
		for ch, ms := range chans {
			if to := ownerOf(p.view, ch); to != p.self {
				b.sendCopies(to, owner, ch, ms)
				continue
			}
			for _, m := range ms {
				if _, had := p.owned.Get(ch, m.Session); !had && !p.wasReaped(owner, ch, m.Session) {
					p.put(owner, ch, m)
				}
			}
		}
		delete(p.backup, owner)
		delete(p.hops, owner)
	}
	var out []reaped
	for k, chans := range p.byNode {
		if live[k] {
			continue
		}
		for _, ch := range slices.Sorted(maps.Keys(chans)) {
			if kept && !p.servable(ch) {
				continue
			}
			for _, s := range slices.Sorted(maps.Keys(chans[ch])) {
				if e, ok, vacated := p.owned.Remove(ch, s); ok {
					p.noteReaped(k, ch, s)
					out = append(out, reaped{ch: ch, m: e.M, vacated: vacated})
				}
				p.unindex(k, ch, s)
			}
		}
	}
	return out
}

// noteReaped records that this node reaped k's member session of ch. p.mu is held.
func (p *presence) noteReaped(k peerKey, ch, session string) {
	if p.reapedM == nil {
		p.reapedM = map[peerKey]map[string]sessions{}
	}
	if p.reapedM[k] == nil {
		p.reapedM[k] = map[string]sessions{}
	}
	if p.reapedM[k][ch] == nil {
		p.reapedM[k][ch] = sessions{}
	}
	p.reapedM[k][ch][session] = struct{}{}
	if _, ok := p.dead[k]; !ok {
		p.markDead(k, time.Now())
	}
}

// sendCopies sends copies of node's members of ch to the channel's owner now, to reap them if
// node turns out dead before it synced with that owner. p.mu is held.
func (b *Broker) sendCopies(to, node peerKey, ch string, ms map[string]protocol.Member) {
	r := rec{Ch: ch, Ms: make([]protocol.Member, 0, len(ms))}
	for _, m := range ms {
		r.Ms = append(r.Ms, m)
	}
	// Epoch counts the hops.
	w := wire{Op: "copies", From: b.pr.self, Epoch: b.pr.hops[node], View: []peerKey{node}, Recs: []rec{r}}
	if err := b.toNode(b.nodeSubject(to), "", w, to.ID); err != nil {
		b.logger.Debug("nats presence: copies not sent", "node_id", to.ID, "error", err)
	}
}

// put records m in ch for node k. p.mu is held.
func (p *presence) put(k peerKey, ch string, m protocol.Member) (occupied bool) {
	occupied, old, had := p.owned.Put(ch, roster.Entry[peerKey]{M: m, X: k})
	if had && old.X != k {
		p.unindex(old.X, ch, m.Session)
	}
	if p.byNode[k] == nil {
		p.byNode[k] = map[string]sessions{}
	}
	if p.byNode[k][ch] == nil {
		p.byNode[k][ch] = sessions{}
	}
	p.byNode[k][ch][m.Session] = struct{}{}
	return occupied
}

// remove takes session out of ch. p.mu is held.
func (p *presence) remove(ch, session string) (vacated bool) {
	e, ok, vacated := p.owned.Remove(ch, session)
	if ok {
		p.unindex(e.X, ch, session)
	}
	return vacated
}

func (p *presence) unindex(k peerKey, ch, session string) {
	if chans := p.byNode[k]; chans != nil {
		delete(chans[ch], session)
		if len(chans[ch]) == 0 {
			delete(chans, ch)
		}
		if len(chans) == 0 {
			delete(p.byNode, k)
		}
	}
}

func (p *presence) putBackup(owner peerKey, ch string, m protocol.Member) {
	if p.backup[owner] == nil {
		p.backup[owner] = map[string]map[string]protocol.Member{}
	}
	if p.backup[owner][ch] == nil {
		p.backup[owner][ch] = map[string]protocol.Member{}
	}
	p.backup[owner][ch][m.Session] = m
}

func (p *presence) removeBackup(owner peerKey, ch, session string) {
	if chans := p.backup[owner]; chans != nil {
		delete(chans[ch], session)
		if len(chans[ch]) == 0 {
			delete(chans, ch)
		}
		if len(chans) == 0 {
			delete(p.backup, owner)
		}
	}
}

// servable reports whether this node answers for ch now: it owns ch, and has all of it (its
// last sync is complete, or it owned ch in every view since the last complete one). p.mu is
// held.
func (p *presence) servable(ch string) bool {
	if !p.active || ownerOf(p.view, ch) != p.self {
		return false
	}
	if p.waiting == nil {
		return true
	}
	if p.views == nil {
		return false
	}
	for _, v := range p.views {
		if ownerOf(v, ch) != p.self {
			return false
		}
	}
	return true
}

// serve answers a request for a channel this node owns; budget bounds the bytes of a page of
// members. p.mu is held.
func (p *presence) serve(w wire, budget int) answer {
	switch w.Op {
	case "join":
		if w.M == nil {
			return answer{}
		}
		return answer{Flag: p.put(w.From, w.Ch, *w.M)}
	case "leave":
		return answer{Flag: p.remove(w.Ch, w.S)}
	case "members":
		ms, more := p.owned.Members(w.Ch, w.After, min(w.Limit, maxPage))
		size := 0
		for i, m := range ms { // a page of large infos is cut to what one message carries
			if size += memberSize(m); i > 0 && size > budget {
				return answer{Ms: ms[:i], More: true}
			}
		}
		return answer{Ms: ms, More: more}
	case "stats":
		return answer{Stats: p.owned.Stats(w.Ch)}
	case "push": // the sender's members of the channel, all of them: a join or leave of it failed
		keep := sessions{}
		for _, r := range w.Recs {
			for _, m := range r.Ms {
				keep[m.Session] = struct{}{}
				p.put(w.From, w.Ch, m)
			}
		}
		for s := range p.byNode[w.From][w.Ch] {
			if _, ok := keep[s]; !ok {
				p.remove(w.Ch, s)
			}
		}
	}
	return answer{}
}

// onNode handles what comes to this node's own subject.
func (b *Broker) onNode(m *natsgo.Msg) {
	var w wire
	if err := json.Unmarshal(m.Data, &w); err != nil {
		b.logger.Warn("nats presence: message dropped", "error", err)
		return
	}
	p := b.pr
	p.heardKnown(w.From) // any message of a peer says it lives (a long sync delays its heartbeats)
	p.mu.Lock()
	var reaps []reaped
	switch w.Op {
	case "join", "leave", "members", "stats", "push":
		var a answer
		switch {
		case (w.Op == "join" || w.Op == "push") && p.isDead(w.From):
			// Sent before its node was dropped (it died, or stalled: then it asks again once
			// it is heard, and is served): no ghost of a dead node.
			a = answer{Retry: true}
		case p.servable(w.Ch):
			a = p.serve(w, b.budget())
		default:
			a = answer{Retry: true}
		}
		p.mu.Unlock()
		b.respond(m, a)
		return
	case "channels":
		chs, more := p.owned.Channels(w.Ch, w.After, min(w.Limit, maxPage))
		p.mu.Unlock()
		b.respond(m, answer{Chs: chs, More: more})
		return
	case "sync":
		b.sendSync(w)
		if w.Back && p.active && slices.Contains(p.view, w.From) && w.Epoch > p.backAt[w.From] {
			// The asker dropped this node and took it back, while this node kept it: what this
			// node has of the asker's members may be from before (joins and leaves made
			// meanwhile went to another owner), and its view did not change. Sync anew, once per
			// such request; unless the asker's sync of this node's round has not come yet: the
			// asker sent this request before it (in order, on one connection, to this subject),
			// so it is newer than the asker's return (a node that starts, which both take in
			// at once, is synced once, not twice).
			if p.backAt == nil {
				p.backAt = map[peerKey]uint64{}
			}
			p.backAt[w.From] = w.Epoch
			if !p.waiting[w.From] {
				reaps = p.adopt(b, p.view)
			}
		}
	case "rec":
		if p.inRound(w) {
			p.applyRecs(w.From, w.Recs)
		}
		if p.waiting[w.From] { // its syncs are coming: the answer to this round is this one, or after it
			p.moved[w.From] = true
		}
	case "done":
		if p.waiting[w.From] {
			p.moved[w.From] = true
		}
		if p.inRound(w) {
			p.finishSync(w.From)
			delete(p.waiting, w.From)
			delete(p.back, w.From)
			if len(p.waiting) == 0 {
				reaps = p.complete(b)
			}
		}
	case "copies":
		// Copies of a node's members of channels this node owns now, from their owner before
		// (or a dead owner's backup): kept as backup copies unless the node has synced with this
		// one already (its sync is the truth), and reaped once the node is found dead (sent on,
		// a few times at most, while views differ).
		k := peerKey{}
		if len(w.View) == 1 {
			k = w.View[0]
		}
		synced := slices.Contains(p.view, k) && !p.waiting[k]
		if k.ID != "" && k != p.self && !synced && w.Epoch < maxCopyHops {
			for _, r := range w.Recs {
				for _, m := range r.Ms {
					p.putBackup(w.View[0], r.Ch, m)
				}
				if p.hops == nil {
					p.hops = map[peerKey]uint64{}
				}
				p.hops[w.View[0]] = max(p.hops[w.View[0]], w.Epoch+1)
			}
			if p.active && p.waiting == nil {
				reaps = p.reapDead(b, false)
			}
		}
	case "bjoin":
		if w.M != nil && !p.wasReaped(w.From, w.Ch, w.M.Session) {
			p.putBackup(w.From, w.Ch, *w.M)
			if p.isDead(w.From) && p.active && p.waiting == nil {
				// A dead owner's copy that came after its node was reaped here: reaped now
				// (at the end of the sync under way, else).
				reaps = p.reapDead(b, false)
			}
		}
	case "bleave":
		p.removeBackup(w.From, w.Ch, w.S)
	}
	p.mu.Unlock()
	b.tell(reaps)
}

func (p *presence) inRound(w wire) bool {
	return p.waiting != nil && w.Epoch == p.epoch && p.waiting[w.From]
}

// sendSync answers a sync request: this node's records for the asker, in chunks, then done,
// encoded under p.mu and queued as one job, so that no join or leave of this node falls
// between them; the outbox publishes them without the lock. When a record message cannot be
// published, the rest is not sent, done neither: the asker would drop every member it did not
// get; it asks again instead.
func (b *Broker) sendSync(w wire) {
	p := b.pr
	subject := b.nodeSubject(w.From)
	if p.out.syncing(subject, w.Epoch, p.hb) {
		return // the answer to this request is still on its way: not a second one
	}
	budget := b.budget()
	job := outJob{sync: true, to: w.From.ID, subject: subject, epoch: w.Epoch}
	add := func(m wire) bool {
		data, err := json.Marshal(m)
		if err != nil {
			b.logger.Warn("nats presence: sync not sent", "node_id", w.From.ID, "error", err)
			return false
		}
		job.msgs = append(job.msgs, &natsgo.Msg{Subject: subject, Data: data})
		return true
	}
	var batch []rec
	n, size := 0, 0
	ok := true
	flush := func() {
		if len(batch) > 0 && ok {
			ok = add(wire{Op: "rec", From: p.self, Epoch: w.Epoch, Recs: batch})
		}
		batch, n, size = nil, 0, 0
	}
	for _, r := range p.syncRecs(w.View, w.From) {
		batch = append(batch, rec{Ch: r.Ch, Backup: r.Backup})
		size += len(r.Ch) + 32
		for _, m := range r.Ms {
			if ms := memberSize(m); n > 0 && (n == syncChunk || size+ms > budget) {
				flush()
				batch, size = append(batch, rec{Ch: r.Ch, Backup: r.Backup}), len(r.Ch)+32
			}
			last := &batch[len(batch)-1]
			last.Ms = append(last.Ms, m)
			n, size = n+1, size+memberSize(m)
		}
	}
	flush()
	if ok && add(wire{Op: "done", From: p.self, Epoch: w.Epoch}) {
		b.queue(job)
	}
}

// budget is how many bytes of members one presence message may carry: half the server's
// payload limit (1 MB by default), so that the rest of the message fits.
func (b *Broker) budget() int {
	if mp := b.nc.MaxPayload(); mp > 0 {
		return int(mp / 2)
	}
	return 512 << 10
}

// memberSize bounds the bytes of m in JSON from above (encoding/json writes <, > and & as
// \u003c, \u003e and \u0026, even inside Info: six bytes for one), so that a sync message or a
// page cut by it stays under the server's payload limit.
func memberSize(m protocol.Member) int {
	return jsonSize(m.User) + jsonSize(m.Session) + jsonSize(m.Node) + jsonSize(string(m.Info)) + 48
}

// jsonSize bounds the bytes of s written as JSON (as a string, or s itself when it is JSON).
func jsonSize(s string) int {
	if !utf8.ValidString(s) {
		return 6 * len(s) // each bad byte becomes \ufffd
	}
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '<', c == '>', c == '&', c < 0x20:
			n += 5
		case c == '"', c == '\\':
			n++
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&0xfe == 0xa8: // U+2028, U+2029
			n += 3
		}
	}
	return n
}

// markDirty notes that ch's owner may be wrong about this node's members. p.mu is held.
func (p *presence) markDirty(ch string) {
	if p.dirty == nil {
		p.dirty = map[string]uint64{}
	}
	p.gen++
	p.dirty[ch] = p.gen
}

// push sends this node's members of each dirty channel to its owner, which replaces this node's
// entries there with them. Started by the loop, one at a time; Close ends it.
func (b *Broker) push() {
	defer b.wg.Done()
	p := b.pr
	p.mu.Lock()
	todo := make(map[string]uint64, len(p.dirty))
	for ch, gen := range p.dirty {
		todo[ch] = gen
	}
	p.mu.Unlock()
	for ch, gen := range todo {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Timeout)
		_, err := b.ask(ctx, wire{Op: "push", Ch: ch}, func(w *wire, _ int) { // what it has now, each time
			r := rec{Ch: ch, Ms: []protocol.Member{}}
			for _, m := range p.local[ch] {
				r.Ms = append(r.Ms, m)
			}
			w.Recs = []rec{r}
		})
		cancel()
		if err == nil {
			p.mu.Lock()
			if p.dirty[ch] == gen {
				delete(p.dirty, ch)
			}
			p.mu.Unlock()
		}
	}
	p.mu.Lock()
	p.pushing = false
	p.mu.Unlock()
}

// --- Requests ---

func (p *presence) register(buf int) (string, chan *natsgo.Msg) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	p.next++
	token := strconv.FormatUint(p.next, 36)
	c := make(chan *natsgo.Msg, buf)
	p.pending[token] = c
	return token, c
}

func (p *presence) unregister(token string) {
	p.rmu.Lock()
	delete(p.pending, token)
	p.rmu.Unlock()
}

// onReply hands a reply to the request waiting for it.
func (b *Broker) onReply(m *natsgo.Msg) {
	p := b.pr
	token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	p.rmu.Lock()
	c := p.pending[token]
	p.rmu.Unlock()
	if c != nil {
		select {
		case c <- m:
		default:
		}
	}
}

var errNoResponders = errors.New("no responders")

// await waits for the reply of token.
func (b *Broker) await(ctx context.Context, token string, c chan *natsgo.Msg) (answer, error) {
	defer b.pr.unregister(token)
	return b.awaitKeep(ctx, c, nil)
}

// errViewMoved: the view changed while a request waited.
var errViewMoved = errors.New("the view changed")

// awaitKeep waits for a reply on c, until ctx is done or moved is closed (nil: never).
func (b *Broker) awaitKeep(ctx context.Context, c chan *natsgo.Msg, moved <-chan struct{}) (answer, error) {
	select {
	case <-ctx.Done():
		return answer{}, ctx.Err()
	case <-b.ctx.Done():
		return answer{}, transports.ErrClosed
	case <-moved:
		return answer{}, errViewMoved
	case m := <-c:
		if noResponders(m) {
			return answer{}, errNoResponders
		}
		var a answer
		if err := json.Unmarshal(m.Data, &a); err != nil {
			return answer{}, err
		}
		return a, nil
	}
}

// errOwnerGone: the node asked is no longer the channel's owner in this node's view (it died,
// or the view changed) and has not answered: ask the owner now.
var errOwnerGone = errors.New("no longer the owner, no answer")

// awaitOwner waits for the answer of token from owner, the owner of ch, as long as owner stays
// ch's owner in this node's view (a node that died answers nothing: once it is dropped from the
// view, the request goes at once to the new owner).
func (b *Broker) awaitOwner(ctx context.Context, token string, c chan *natsgo.Msg, ch string, owner peerKey) (answer, error) {
	p := b.pr
	defer p.unregister(token)
	for {
		p.mu.Lock()
		still, moved := ownerOf(p.view, ch) == owner, p.viewCh
		p.mu.Unlock()
		if !still {
			return answer{}, errOwnerGone
		}
		a, err := b.awaitKeep(ctx, c, moved)
		if !errors.Is(err, errViewMoved) {
			return a, err
		}
	}
}

// opCtx bounds a presence call by Config.Timeout when ctx has no deadline.
func (b *Broker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.cfg.Timeout)
}

// ask sends w about channel w.Ch to the channel's owner (itself: answered in place) and waits
// for the answer, asking again (the owner as this node's view has it now) while the owner says
// retry, or is gone, until ctx is done. each runs under p.mu before each attempt is sent, so that
// a change of this node's own members (made with attempt 0) and its request to the owner are in
// the same order as its syncs.
func (b *Broker) ask(ctx context.Context, w wire, each func(w *wire, attempt int)) (answer, error) {
	p := b.pr
	w.From = p.self
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	delay := time.Millisecond
	var last error
	for attempt := 0; ; attempt++ {
		if b.nc.Status() != natsgo.CONNECTED {
			return answer{}, fmt.Errorf("%w: nats connection is %s", transports.ErrUnavailable, b.nc.Status())
		}
		p.mu.Lock()
		if each != nil {
			each(&w, attempt)
		}
		owner, backup, ok := rank(p.view, w.Ch)
		switch {
		case !ok:
			last = errors.New("no presence node known yet")
			p.mu.Unlock()
		case owner == p.self:
			if p.servable(w.Ch) {
				a := p.serve(w, b.budget())
				b.toBackup(w, backup)
				p.mu.Unlock()
				return a, nil
			}
			last = errors.New("this node is rebuilding the channel")
			p.mu.Unlock()
		default:
			token, c := p.register(1)
			err := b.toNode(b.nodeSubject(owner), p.inbox+"."+token, w, owner.ID)
			p.mu.Unlock()
			if err != nil {
				p.unregister(token)
				return answer{}, b.unavailable("presence "+w.Op, err)
			}
			a, err := b.awaitOwner(ctx, token, c, w.Ch, owner)
			switch {
			case errors.Is(err, transports.ErrClosed):
				return answer{}, err
			case err == nil && !a.Retry:
				return a, nil
			case err == nil:
				last = fmt.Errorf("node %s is not ready for the channel", owner.ID)
			default:
				last = fmt.Errorf("node %s: %w", owner.ID, err)
			}
		}
		select {
		case <-ctx.Done():
			return answer{}, fmt.Errorf("%w: nats presence %s %q: %w", transports.ErrUnavailable, w.Op, w.Ch, last)
		case <-b.ctx.Done():
			return answer{}, transports.ErrClosed
		case <-time.After(delay):
		}
		delay = min(2*delay, p.hb/16) // a new owner answers once synced: ask again soon
	}
}

// toBackup copies a join or leave of this node's own member, in a channel it owns, to the
// channel's backup, which gives it to OnReap if this node dies. p.mu is held.
func (b *Broker) toBackup(w wire, backup peerKey) {
	if backup.ID == "" || w.Op != "join" && w.Op != "leave" {
		return
	}
	op := "b" + w.Op
	if err := b.toNode(b.nodeSubject(backup), "", wire{Op: op, From: w.From, Ch: w.Ch, M: w.M, S: w.S}, backup.ID); err != nil {
		b.logger.Debug("nats presence: backup not sent", "error", err)
	}
}

// --- transports.Presence ---

// presenceReady fails before Start and after Close.
func (b *Broker) presenceReady(ctx context.Context) error {
	if err := b.usable(); err != nil {
		return err
	}
	return ctx.Err()
}

// Join implements transports.Presence: one request to the channel's owner (none when this node
// owns it, then a message to the channel's backup). The first Join makes the node take part.
func (b *Broker) Join(ctx context.Context, channel string, m protocol.Member) (bool, error) {
	if err := b.presenceReady(ctx); err != nil {
		return false, err
	}
	if err := b.activate(ctx); err != nil {
		return false, err
	}
	p := b.pr
	var old protocol.Member
	var had bool
	a, err := b.ask(ctx, wire{Op: "join", Ch: channel, M: &m}, func(_ *wire, attempt int) {
		if attempt > 0 {
			return
		}
		mine := p.local[channel]
		if mine == nil {
			mine = map[string]protocol.Member{}
			p.local[channel] = mine
		}
		old, had = mine[m.Session]
		mine[m.Session] = m
	})
	if err != nil {
		p.mu.Lock()
		if mine := p.local[channel]; mine != nil {
			if had {
				mine[m.Session] = old
			} else {
				delete(mine, m.Session)
				if len(mine) == 0 {
					delete(p.local, channel)
				}
			}
		}
		p.markDirty(channel) // the owner may have recorded it all the same
		p.mu.Unlock()
		return false, err
	}
	return a.Flag, nil
}

// Leave implements transports.Presence: one request to the channel's owner. A leave that fails
// is taken out of this node's own members all the same, and the node pushes its members of the
// channel to the owner until one push succeeds (or a sync does it): the owner drops the entry
// then, silently.
func (b *Broker) Leave(ctx context.Context, channel, session string) (bool, error) {
	if err := b.usable(); err != nil { // closed or not started: nothing is left (the others reap)
		return false, err
	}
	p := b.pr
	// forget takes session out of this node's own members; p.mu is held. It runs before the
	// first request, and on every error path (a request never sent: the connection down, ctx
	// done), so that the next push drops the entry at the owner whatever happened.
	forget := func() {
		if mine := p.local[channel]; mine != nil {
			delete(mine, session)
			if len(mine) == 0 {
				delete(p.local, channel)
			}
		}
	}
	a, err := b.ask(ctx, wire{Op: "leave", Ch: channel, S: session}, func(_ *wire, attempt int) {
		if attempt == 0 {
			forget()
		}
	})
	if err != nil {
		p.mu.Lock()
		forget()
		p.markDirty(channel)
		p.mu.Unlock()
		return false, err
	}
	return a.Flag, nil
}

// Members implements transports.Presence: one request to the channel's owner, which pages its
// sorted index (O(log members + limit)); at most 1,000 members per call.
func (b *Broker) Members(ctx context.Context, channel, after string, limit int) ([]protocol.Member, bool, error) {
	if err := b.presenceReady(ctx); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, nil
	}
	a, err := b.ask(ctx, wire{Op: "members", Ch: channel, After: after, Limit: min(limit, maxPage)}, nil)
	if err != nil {
		return nil, false, err
	}
	return a.Ms, a.More, nil
}

// Stats implements transports.Presence: one request to the channel's owner.
func (b *Broker) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	if err := b.presenceReady(ctx); err != nil {
		return protocol.PresenceStats{}, err
	}
	a, err := b.ask(ctx, wire{Op: "stats", Ch: channel}, nil)
	if err != nil {
		return protocol.PresenceStats{}, err
	}
	return a.Stats, nil
}

// Channels implements transports.Presence by scatter-gather: every peer of the view answers
// with the channels it owns (at most limit, at most 1,000, after after, with the prefix), and
// the answers are merged. It fails when a peer does not answer (one that died and is not yet
// dropped from the view: its channels would be missing).
func (b *Broker) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, bool, error) {
	if err := b.presenceReady(ctx); err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, nil
	}
	limit = min(limit, maxPage)
	if b.nc.Status() != natsgo.CONNECTED {
		return nil, false, fmt.Errorf("%w: nats connection is %s", transports.ErrUnavailable, b.nc.Status())
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	p := b.pr
	w := wire{Op: "channels", From: p.self, Ch: prefix, After: after, Limit: limit}
	type call struct {
		peer  peerKey
		token string
		c     chan *natsgo.Msg
	}
	var calls []call
	var all []protocol.ChannelStats
	more := false
	p.mu.Lock()
	for _, k := range p.view {
		if k == p.self {
			chs, m := p.owned.Channels(prefix, after, limit)
			all, more = append(all, chs...), more || m
			continue
		}
		token, c := p.register(1)
		calls = append(calls, call{k, token, c})
		if err := b.toNode(b.nodeSubject(k), p.inbox+"."+token, w, k.ID); err != nil {
			p.mu.Unlock()
			for _, c := range calls {
				p.unregister(c.token)
			}
			return nil, false, b.unavailable("presence channels", err)
		}
	}
	p.mu.Unlock()
	var failed error
	for _, c := range calls {
		a, err := b.await(ctx, c.token, c.c)
		if err != nil {
			failed = cmpOr(failed, fmt.Errorf("node %s: %w", c.peer.ID, err))
			continue
		}
		all, more = append(all, a.Chs...), more || a.More
	}
	if errors.Is(failed, transports.ErrClosed) {
		return nil, false, transports.ErrClosed
	}
	if failed != nil {
		return nil, false, fmt.Errorf("%w: nats presence channels: %w", transports.ErrUnavailable, failed)
	}
	slices.SortFunc(all, func(a, b protocol.ChannelStats) int { return strings.Compare(a.Channel, b.Channel) })
	all = slices.CompactFunc(all, func(a, b protocol.ChannelStats) bool { return a.Channel == b.Channel })
	if len(all) > limit {
		return all[:limit], true, nil
	}
	return all, more, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// OnReap implements transports.Presence. Set before Start, it makes Start take part in presence
// at once (a gateway node with presence channels does so); set after, it takes part now.
func (b *Broker) OnReap(fn func(channel string, m protocol.Member, vacated bool)) {
	b.pr.mu.Lock()
	b.pr.onReap = fn
	b.pr.mu.Unlock()
	if fn != nil && b.usable() == nil {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Timeout)
		defer cancel()
		_ = b.activate(ctx)
	}
}
