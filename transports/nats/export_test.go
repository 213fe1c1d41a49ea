package nats

import (
	"encoding/json"
	"slices"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/wsgateway/gateway/protocol"
)

// Owner returns which of the node ids owns channel, as every node of that view computes it.
func Owner(ids []string, channel string) string {
	v := make([]peerKey, len(ids))
	for i, id := range ids {
		v[i] = peerKey{ID: id}
	}
	return ownerOf(v, channel).ID
}

// Incarnation is the random part of the node's presence subject.
func (b *Broker) Incarnation() string { return b.pr.self.Inc }

// NodeID is the node's id in presence.
func (b *Broker) NodeID() string { return b.pr.self.ID }

// LoseLeave takes session out of this node's own members of channel as a Leave does, but its
// request to the owner is lost: the owner still lists it, until the node's push.
func (b *Broker) LoseLeave(channel, session string) {
	p := b.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.local[channel], session)
	if len(p.local[channel]) == 0 {
		delete(p.local, channel)
	}
	p.markDirty(channel)
}

// Stall holds the node's presence lock and stops its heartbeats (its loops and handlers stop,
// as in a stalled process) until the returned func is called.
func (b *Broker) Stall() (resume func()) {
	b.pr.mu.Lock()
	b.pr.stalled.Store(true)
	return func() {
		b.pr.stalled.Store(false)
		b.pr.mu.Unlock()
	}
}

// Busy holds the node's presence lock, as a long piece of work under it does (encoding a large
// sync), until the returned func is called; its heartbeats go on.
func (b *Broker) Busy() (done func()) {
	b.pr.mu.Lock()
	return b.pr.mu.Unlock
}

// HeardAt is when the node last heard the peer of id (zero: not in its peers).
func (b *Broker) HeardAt(id string) time.Time {
	p := b.pr
	p.hmu.Lock()
	defer p.hmu.Unlock()
	for k, at := range p.heardAt {
		if k.ID == id {
			return at
		}
	}
	return time.Time{}
}

// Resync makes the node start a sync round of its view anew, as after a reconnection.
func (b *Broker) Resync() {
	p := b.pr
	p.mu.Lock()
	reaps := p.adopt(b, p.view)
	p.mu.Unlock()
	b.tell(reaps)
}

// Epoch is the epoch of the node's last round.
func (b *Broker) Epoch() uint64 {
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	return b.pr.epoch
}

// InjectBackSync hands the node a sync request with Back, as if the node of id and incarnation
// inc had sent it at its epoch (it had dropped this node, and took it back).
func (b *Broker) InjectBackSync(id, inc string, epoch uint64) {
	p := b.pr
	p.mu.Lock()
	view := slices.Clone(p.view)
	p.mu.Unlock()
	data, err := json.Marshal(wire{Op: "sync", From: peerKey{ID: id, Inc: inc}, Epoch: epoch, View: view, Back: true})
	if err != nil {
		panic(err)
	}
	b.handler(b.onNode)(&natsgo.Msg{Subject: b.nodeSubject(p.self), Data: data})
}

// ViewIDs is the ids of the node's view.
func (b *Broker) ViewIDs() []string {
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	out := make([]string, 0, len(b.pr.view))
	for _, k := range b.pr.view {
		out = append(out, k.ID)
	}
	return out
}

// FailSyncRecs makes the next n sync record messages this node sends fail to publish, as a
// publish fails when the connection drops or its buffer is full.
func (b *Broker) FailSyncRecs(n int32) { b.pr.failRecs.Store(n) }

// SyncFaultsLeft is how many of the failures FailSyncRecs asked for are still to come.
func (b *Broker) SyncFaultsLeft() int32 { return b.pr.failRecs.Load() }

// Synced reports whether the node's last sync round is complete.
func (b *Broker) Synced() bool {
	b.pr.mu.Lock()
	defer b.pr.mu.Unlock()
	return b.pr.waiting == nil
}

// Inject hands the node a message on its own presence subject as if the node of id and
// incarnation inc had sent it: a "join" (a request, unanswered here) or a "bjoin" (a backup
// copy) of m in channel. It is how a message of a dead node that comes late is played.
func (b *Broker) Inject(op, id, inc, channel string, m protocol.Member) {
	data, err := json.Marshal(wire{Op: op, From: peerKey{ID: id, Inc: inc}, Ch: channel, M: &m})
	if err != nil {
		panic(err)
	}
	b.handler(b.onNode)(&natsgo.Msg{Subject: b.nodeSubject(b.pr.self), Data: data})
}

// AfterPub makes Publish call f between writing its PUBs and sending its PING.
func (b *Broker) AfterPub(f func()) { b.afterPub = f }
