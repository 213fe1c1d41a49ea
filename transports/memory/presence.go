package memory

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
	"github.com/wsgateway/gateway/transports/internal/roster"
)

// Presence on the in-process broker: the Broker is the cluster, each Node one gateway node.
//
// The Broker keeps, per topic prefix (a cluster's namespace), the members of every channel and a
// lease per Node that recorded members. A Node renews its lease twice per heartbeat from a goroutine
// that starts with its first Join (the memory Node works without Start, so presence needs no
// Start either) and stops with Node.Close; each renewal makes it run 1.5 heartbeats (leaseTTL),
// so a renewal may come a whole heartbeat late. One reaper per Broker, started with the first
// lease and stopped by Broker.Close, looks every quarter heartbeat for leases that ran out: it
// removes their Node's members and calls OnReap once per member, on one open Node of the same
// prefix that set OnReap (none: the members are just removed). A Node that stops is reaped
// within 1.75 heartbeats (leaseTTL after its last renewal, plus a pass).
//
// Each Node also keeps its own record of what it joined (the node's truth). When its lease ran
// out while it lived (its renewal stalled), the Node's next renewal or Join finds the lease gone
// and records its members again, so they come back without the gateway doing anything and
// without ghosts (what it left is not in its record).

// presence is the presence state of one Broker. Its own lock, pmu, guards everything in it and
// every Node's local record; it is never held together with b.mu or a topic's lock.
type presence struct {
	pmu    sync.Mutex
	spaces map[string]*space // by topic prefix
	reaper *reaper
}

// space is one prefix's presence: one cluster's.
type space struct {
	members  roster.Roster[*Node]                          // with the node that recorded each
	leases   map[*Node]lease                               // the nodes that recorded members, with their lease
	watchers map[*Node]func(string, protocol.Member, bool) // open nodes that set OnReap
}

// lease is a node's right to its members: it runs out at expires unless renewed.
type lease struct{ expires time.Time }

// reaper is the Broker's goroutine that removes the members of expired leases.
type reaper struct {
	done    chan struct{}
	stopped chan struct{}
}

// leaseTTL is how long, in heartbeats, a renewal keeps a lease.
const leaseTTL = 1.5

// heartbeat is the broker's presence heartbeat.
func (b *Broker) heartbeat() time.Duration {
	if hb := b.cfg.Presence.Heartbeat; hb > 0 {
		return hb
	}
	return transports.DefaultPresenceHeartbeat
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// space returns the space of prefix, making it. p.pmu is held.
func (p *presence) space(prefix string) *space {
	if p.spaces == nil {
		p.spaces = map[string]*space{}
	}
	s := p.spaces[prefix]
	if s == nil {
		s = &space{leases: map[*Node]lease{},
			watchers: map[*Node]func(string, protocol.Member, bool){}}
		p.spaces[prefix] = s
	}
	return s
}

// check fails as the node's other methods do: ErrClosed once the node or the broker closed.
func (n *Node) check(ctx context.Context) error {
	if n.closed() || n.broker.isClosed() {
		return transports.ErrClosed
	}
	return ctx.Err()
}

// Join implements transports.Presence. The first Join of a Node starts its lease renewal.
func (n *Node) Join(ctx context.Context, channel string, m protocol.Member) (bool, error) {
	if err := n.check(ctx); err != nil {
		return false, err
	}
	b := n.broker
	p := &b.presence
	p.pmu.Lock()
	s := p.space(n.prefix)
	n.heard(s)
	if n.local == nil {
		n.local = map[string]map[string]protocol.Member{}
	}
	mine := n.local[channel]
	if mine == nil {
		mine = map[string]protocol.Member{}
		n.local[channel] = mine
	}
	mine[m.Session] = m
	occupied := s.record(channel, m, n)
	p.pmu.Unlock()
	n.startRenewal()
	b.startReaper()
	return occupied, nil
}

// Leave implements transports.Presence. It never waits, so it does not fail on a done ctx:
// it fails only once closed, having removed nothing.
func (n *Node) Leave(_ context.Context, channel, session string) (bool, error) {
	if err := n.check(context.Background()); err != nil {
		return false, err
	}
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if mine := n.local[channel]; mine != nil {
		delete(mine, session)
		if len(mine) == 0 {
			delete(n.local, channel)
		}
	}
	_, _, vacated := p.space(n.prefix).members.Remove(channel, session)
	return vacated, nil
}

// Members implements transports.Presence. A page costs O(log members + limit).
func (n *Node) Members(ctx context.Context, channel, after string, limit int) ([]protocol.Member, bool, error) {
	if err := n.check(ctx); err != nil {
		return nil, false, err
	}
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	ms, more := p.space(n.prefix).members.Members(channel, after, limit)
	return ms, more, nil
}

// Stats implements transports.Presence.
func (n *Node) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	if err := n.check(ctx); err != nil {
		return protocol.PresenceStats{}, err
	}
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	return p.space(n.prefix).members.Stats(channel), nil
}

// Channels implements transports.Presence. A page costs O(log channels + limit).
func (n *Node) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, bool, error) {
	if err := n.check(ctx); err != nil {
		return nil, false, err
	}
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	cs, more := p.space(n.prefix).members.Channels(prefix, after, limit)
	return cs, more, nil
}

// OnReap implements transports.Presence. The function is called on the Broker's reaper
// goroutine, for members of nodes of this Node's prefix, while this Node is open.
func (n *Node) OnReap(fn func(channel string, m protocol.Member, vacated bool)) {
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if n.closed() {
		return
	}
	s := p.space(n.prefix)
	if fn == nil {
		delete(s.watchers, n)
		return
	}
	s.watchers[n] = fn
}

// heard renews n's lease; when n had none (never, or it ran out and its members were reaped),
// it records again every member of n's local record. p.pmu is held.
func (n *Node) heard(s *space) {
	_, had := s.leases[n]
	s.leases[n] = lease{expires: n.broker.now().Add(time.Duration(leaseTTL * float64(n.broker.heartbeat())))}
	if had {
		return
	}
	for channel, mine := range n.local {
		for _, m := range mine {
			s.record(channel, m, n)
		}
	}
}

// startRenewal starts the goroutine that renews n's lease, unless it runs. The
// node owns it: Close stops it and waits for it.
func (n *Node) startRenewal() {
	n.renewOnce.Do(func() {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			// Twice per heartbeat: a renewal late by up to a heartbeat (a loaded machine)
			// still finds its lease (leaseTTL).
			t := time.NewTicker(n.broker.heartbeat() / 2)
			defer t.Stop()
			for {
				select {
				case <-n.done:
					return
				case <-t.C:
					if n.paused.Load() {
						continue
					}
					p := &n.broker.presence
					p.pmu.Lock()
					n.heard(p.space(n.prefix))
					p.pmu.Unlock()
				}
			}
		}()
	})
}

// forget takes n out of the presence: it calls OnReap no more. Its lease stays, to run out
// (Close is not a leave: a node closed without leaving has its members reaped).
func (n *Node) forget() {
	p := &n.broker.presence
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if s := p.spaces[n.prefix]; s != nil {
		delete(s.watchers, n)
	}
}

// record puts m in channel for owner and reports whether the channel was empty. p.pmu is held.
func (s *space) record(channel string, m protocol.Member, owner *Node) bool {
	occupied, old, had := s.members.Put(channel, roster.Entry[*Node]{M: m, X: owner})
	if had && old.X != owner && old.X.local != nil {
		delete(old.X.local[channel], m.Session) // the session moved: one owner only
		if len(old.X.local[channel]) == 0 {
			delete(old.X.local, channel)
		}
	}
	return occupied
}

// startReaper starts the reaper unless it runs or the broker is closed.
func (b *Broker) startReaper() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.reaperOn {
		return
	}
	b.reaperOn = true
	r := &reaper{done: make(chan struct{}), stopped: make(chan struct{})}
	p := &b.presence
	p.pmu.Lock()
	p.reaper = r
	p.pmu.Unlock()
	go b.runReaper(r)
}

func (b *Broker) runReaper(r *reaper) {
	defer close(r.stopped)
	t := time.NewTicker(b.heartbeat() / 4) // a reaping pass every quarter heartbeat
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
			b.reap()
		}
	}
}

// reaped is a member removed with its node's lease, and the function to tell.
type reaped struct {
	channel string
	m       protocol.Member
	vacated bool
	tell    func(string, protocol.Member, bool)
}

// reap removes the members of every lease that ran out and calls OnReap for each, outside the
// lock, on one open node of the prefix.
func (b *Broker) reap() {
	now := b.now()
	p := &b.presence
	var out []reaped
	p.pmu.Lock()
	for _, s := range p.spaces {
		var tell func(string, protocol.Member, bool)
		for w, fn := range s.watchers {
			if l, ok := s.leases[w]; !ok || !l.expires.Before(now) { // a node about to be reaped tells no one
				tell = fn
				break
			}
		}
		for n, l := range s.leases {
			if !l.expires.Before(now) {
				continue
			}
			delete(s.leases, n)
			for channel, mine := range n.local {
				gone := make([]string, 0, len(mine))
				for id := range mine {
					if e, ok := s.members.Get(channel, id); ok && e.X == n {
						gone = append(gone, id)
					}
				}
				sort.Strings(gone)
				for _, id := range gone {
					e, _, vacated := s.members.Remove(channel, id)
					m := e.M
					if tell != nil {
						out = append(out, reaped{channel: channel, m: m, vacated: vacated, tell: tell})
					}
				}
			}
		}
	}
	p.pmu.Unlock()
	for _, r := range out {
		r.tell(r.channel, r.m, r.vacated)
	}
}

// stopReaper ends the reaper and waits for it. Called by Broker.Close.
func (b *Broker) stopReaper() {
	p := &b.presence
	p.pmu.Lock()
	r := p.reaper
	p.reaper = nil
	p.spaces = nil
	p.pmu.Unlock()
	if r != nil {
		close(r.done)
		<-r.stopped
	}
}
