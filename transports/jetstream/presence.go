package jetstream

// Presence on a JetStream KV bucket, SafeName(P)_presence. Keys (C = SafeName(channel),
// S = SafeName(session), U = SafeName(user), N = SafeName(node id)):
//
//	m.C.S   a member: JSON memberRecord (the member, its node's lease id and lease epoch)
//	n.N.C.S the node's index of what it recorded (empty value): what a reaper removes
//	c.C     a channel's counts, "connections users"; absent or 0 when the channel is empty
//	u.C.U   how many connections the named user has in the channel
//	l.N     the node's lease: its epoch, rewritten every half heartbeat ("r"+epoch while reaped)
//
// Counts change by compare-and-set on their key (Create for the first, Update with the revision
// read), so concurrent joins and leaves on several nodes see each transition 0->1 and 1->0 once.
// A node combines its concurrent changes of one channel's counts into one compare-and-set at a
// time (presencecounts.go).
// docs/brokers/jetstream.md describes the costs and the guarantees.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgateway/gateway/protocol"
	"github.com/wsgateway/gateway/transports"
)

var _ transports.Presence = (*Broker)(nil)

// memberRecord is the value of a member key.
type memberRecord struct {
	protocol.Member
	Owner string `json:"owner"` // the lease id of the node that recorded it
	Epoch string `json:"epoch"` // the owner's lease epoch when it recorded it
	// Pending: the owner is still changing the counts for this record (a new member, or a new
	// user). A reaper leaves a pending record to the owner at its first claim of the owner's lease
	// (the owner lives, its Join completes), and removes it with its counts at a claim again (the
	// owner is dead, or still stuck).
	Pending bool `json:"pending,omitempty"`
}

// presence is the Broker's presence state.
type presence struct {
	mu     sync.Mutex
	kv     jetstream.KeyValue                    // nil until the bucket was provisioned
	epoch  string                                // the current lease epoch; new when the lease was lost
	rev    uint64                                // revision of our lease key; 0: no lease yet
	local  map[string]map[string]protocol.Member // what this node joined: channel -> session -> member
	onReap func(channel string, m protocol.Member, vacated bool)

	// A member's writes by Join, Leave, the re-recorder and the node's own clean-up are ordered
	// by the stripe of its channel and session, so that a re-recording does not bring back a
	// member that left meanwhile. Many, so that the members of a join storm seldom share one: a
	// Join waits for its stripe within its ctx (with 64 stripes, 5,000 joins at once queued 78
	// deep on each and most timed out waiting).
	stripes [4096]sync.Mutex

	// writers bounds the Joins and Leaves writing to the bucket at once (maxWriters); the others
	// wait their turn in the order they came. Thousands at once would share the server's time,
	// each round trip waiting behind all the others', and time out together.
	writers chan struct{}

	countMu sync.Mutex
	counts  map[string]*countQueue // channel -> its count changes in flight and waiting (presencecounts.go)

	gone      map[string]map[string]struct{} // left here, but the bucket could not be told yet
	rerecord  chan struct{}                  // wakes the re-recorder
	retryGone chan struct{}                  // wakes the re-recorder for gone
	seen      map[string]leaseSeen           // the reaper's; only reapLoop uses it
	swept     time.Time                      // the reaper's: when it last removed old delete markers
	lastPass  time.Time                      // the reaper's: when it last listed the leases
	active    atomic.Bool                    // the node takes part in presence: see renewLoop
	activated chan struct{}                  // closed when active is set
	paused    atomic.Bool                    // set by tests: the node neither renews nor reaps (it hangs)
	step      atomic.Pointer[func(string)]   // set by tests: called at the steps of record (recordStep)
	reaped    atomic.Pointer[func(string)]   // set by tests: called with the node when a claim's reaping is done
}

// recordStep calls the test hook, if any, at a step of record: "recorded" once the pending
// member key is written, "user" once the user counts are, "counted" once the channel's are.
func (p *presence) recordStep(step string) {
	if f := p.step.Load(); f != nil {
		(*f)(step)
	}
}

// maxWriters is how many Joins and Leaves of a node write to the bucket at once.
const maxWriters = 128

// write waits for a turn to write, within ctx; done ends it.
func (p *presence) write(ctx context.Context) (done func(), err error) {
	select {
	case p.writers <- struct{}{}:
		return func() { <-p.writers }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stripe is the lock of a member's writes.
func (p *presence) stripe(channel, session string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(channel))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(session))
	return &p.stripes[h.Sum32()%uint32(len(p.stripes))]
}

// leaseSeen is what the reaper last saw of another node's lease: its revision, and when (on
// this node's clock) it first saw that revision.
type leaseSeen struct {
	rev   uint64
	since time.Time
}

// randomID is a node id or a lease epoch: 16 random bytes in hex.
func randomID() string {
	var p [16]byte
	_, _ = rand.Read(p[:])
	return hex.EncodeToString(p[:])
}

// unmarkGone forgets that session left channel unannounced (it joined again, or the bucket was
// told), with the channel's entry once it is empty; p.mu is held.
func (p *presence) unmarkGone(channel, session string) {
	delete(p.gone[channel], session)
	if len(p.gone[channel]) == 0 {
		delete(p.gone, channel)
	}
}

func (b *Broker) bucketName() string { return transports.SafeName(b.cfg.Prefix) + "_presence" }

func (b *Broker) bucket() (jetstream.KeyValue, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	b.pr.mu.Lock()
	kv := b.pr.kv
	b.pr.mu.Unlock()
	if kv == nil {
		return nil, fmt.Errorf("jetstream: %w: presence bucket not provisioned yet", transports.ErrUnavailable)
	}
	return kv, nil
}

// ensureBucket creates the bucket (or opens it when it exists).
func (b *Broker) ensureBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.openBucket(ctx, b.bucketName(), "presence")
	if err != nil {
		return nil, err
	}
	b.pr.mu.Lock()
	b.pr.kv = kv
	b.pr.mu.Unlock()
	return kv, nil
}

func chanKey(c string) string { return "c." + transports.SafeName(c) }
func memberKey(c, s string) string {
	return "m." + transports.SafeName(c) + "." + transports.SafeName(s)
}
func userKey(c, u string) string  { return "u." + transports.SafeName(c) + "." + transports.SafeName(u) }
func leaseKey(node string) string { return "l." + transports.SafeName(node) }
func indexKey(node, c, s string) string {
	return "n." + transports.SafeName(node) + "." + transports.SafeName(c) + "." + transports.SafeName(s)
}

// unsafeName inverts transports.SafeName.
func unsafeName(s string) (string, bool) {
	if s == "_" {
		return "", true
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '_' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		out = append(out, byte(v))
		i += 2
	}
	return string(out), true
}

// update applies f to the value of key by compare-and-set until it sticks: f gets the current
// value (nil when absent) and returns the new one, or nil to delete the key.
func update(ctx context.Context, kv jetstream.KeyValue, key string, f func(old []byte) []byte) error {
	_, err := updateFrom(ctx, kv, key, nil, f)
	return err
}

// kvState is a key's value and revision as last seen; revision 0 when absent.
type kvState struct {
	value []byte
	rev   uint64
}

// updateFrom is update starting from guess, the key's state as the caller last saw it (nil: read
// it first), which saves the read when it is still right: the compare-and-set checks it. It
// returns the state it left the key in.
func updateFrom(ctx context.Context, kv jetstream.KeyValue, key string, guess *kvState, f func(old []byte) []byte) (kvState, error) {
	for {
		var cur kvState
		guessed := guess != nil
		if guessed {
			cur, guess = *guess, nil
		} else {
			e, err := kv.Get(ctx, key)
			switch {
			case err == nil:
				cur = kvState{value: e.Value(), rev: e.Revision()}
			case !errors.Is(err, jetstream.ErrKeyNotFound):
				return kvState{}, err
			}
		}
		nv := f(cur.value)
		var rev uint64
		var err error
		switch {
		case nv == nil && cur.rev == 0:
			if guessed {
				continue // nothing to write: only a read tells that the key is still absent
			}
			return kvState{}, nil
		case nv == nil:
			err = kv.Delete(ctx, key, jetstream.LastRevision(cur.rev))
		case cur.rev == 0:
			rev, err = kv.Create(ctx, key, nv)
		default:
			rev, err = kv.Update(ctx, key, nv, cur.rev)
		}
		switch {
		case err == nil && nv == nil:
			return kvState{}, nil
		case err == nil:
			return kvState{value: nv, rev: rev}, nil
		case !(errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)):
			return kvState{}, err
		case ctx.Err() != nil:
			return kvState{}, ctx.Err()
		}
	}
}

func parseCounts(v []byte) (conns, users int) {
	a, c, _ := strings.Cut(string(v), " ")
	conns, _ = strconv.Atoi(a)
	users, _ = strconv.Atoi(c)
	return conns, users
}

// addUser changes the number of connections of user in channel by d and reports whether the
// user was new to it (d > 0) or left it (d < 0). An anonymous member is a user of its own.
func addUser(ctx context.Context, kv jetstream.KeyValue, channel, user string, d int) (changed bool, err error) {
	if user == "" {
		return true, nil
	}
	if d > 0 {
		// Most often the user is new to the channel: one Create, without reading first.
		if _, err := kv.Create(ctx, userKey(channel, user), []byte(strconv.Itoa(d))); err == nil {
			return true, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, err
		}
	}
	err = update(ctx, kv, userKey(channel, user), func(old []byte) []byte {
		n, _ := strconv.Atoi(string(old))
		changed = (d > 0 && n <= 0) || (d < 0 && n+d <= 0)
		if n += d; n <= 0 {
			return nil
		}
		return []byte(strconv.Itoa(n))
	})
	return changed, err
}

// presenceCtx bounds a presence call by ctx, Close and PublishTimeout.
func presenceCtx(ctx context.Context, b *Broker) (context.Context, context.CancelFunc) {
	return boundCtx(ctx, b, b.cfg.PublishTimeout)
}

// listTimeout bounds a call that lists keys (Members, Channels): their number is not bounded.
func (b *Broker) listTimeout() time.Duration { return 4 * b.cfg.PublishTimeout }

func boundCtx(ctx context.Context, b *Broker, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, d)
	stop := context.AfterFunc(b.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// Join implements transports.Presence: three KV writes (index, member, user count; two for an
// anonymous member) and its share of a compare-and-set of the channel's counts
// (presencecounts.go), once it has its turn to write (at most maxWriters at once).
func (b *Broker) Join(ctx context.Context, channel string, m protocol.Member) (bool, error) {
	kv, err := b.bucket()
	if err != nil {
		return false, err
	}
	ctx, cancel := presenceCtx(ctx, b)
	defer cancel()
	b.activate()
	mu := b.pr.stripe(channel, m.Session)
	mu.Lock()
	defer mu.Unlock()
	done, err := b.pr.write(ctx)
	if err != nil {
		return false, unavailable("presence join", err)
	}
	defer done()
	// The local record first, so that a re-recording under way sees the member (and its clean-up
	// of older epochs leaves it); undone when the write fails.
	b.pr.mu.Lock()
	prev, had := b.pr.local[channel][m.Session]
	if b.pr.local[channel] == nil {
		b.pr.local[channel] = map[string]protocol.Member{}
	}
	b.pr.local[channel][m.Session] = m
	b.pr.unmarkGone(channel, m.Session)
	epoch := b.pr.epoch
	b.pr.mu.Unlock()
	occupied, err := b.record(ctx, kv, channel, m, epoch)
	for err == nil {
		// A lease lost meanwhile: write it again under the new epoch.
		b.pr.mu.Lock()
		now := b.pr.epoch
		b.pr.mu.Unlock()
		if now == epoch {
			break
		}
		epoch = now
		_, err = b.record(ctx, kv, channel, m, epoch)
	}
	if err != nil {
		b.pr.mu.Lock()
		if had {
			b.pr.local[channel][m.Session] = prev
		} else if cur, ok := b.pr.local[channel][m.Session]; ok && cur.Session == m.Session {
			delete(b.pr.local[channel], m.Session)
			if len(b.pr.local[channel]) == 0 {
				delete(b.pr.local, channel)
			}
		}
		b.pr.mu.Unlock()
		return false, unavailable("presence join", err)
	}
	return occupied, nil
}

// record writes m into channel under epoch: Join, and the re-recording after a lost lease.
//
// A record whose counts change (a new member, or a new user) is written pending, then the
// counts, then the record again without the mark (a compare-and-set on the revision written). A
// reaper (the node's lease ran out while it lived) leaves a pending record at its claim, so it
// removes the member only once its counts are written, and the counts stay exact (a reaper that
// changed the counts before this node did would lose its decrement of a user key not written yet,
// or of a channel count at 0). A pending record still there when the lease is claimed again (1.5
// heartbeats later: the node died while recording) is removed with its counts.
func (b *Broker) record(ctx context.Context, kv jetstream.KeyValue, channel string, m protocol.Member, epoch string) (occupied bool, err error) {
	val, err := json.Marshal(memberRecord{Member: m, Owner: b.id, Epoch: epoch})
	if err != nil {
		return false, err
	}
	pendingVal, err := json.Marshal(memberRecord{Member: m, Owner: b.id, Epoch: epoch, Pending: true})
	if err != nil {
		return false, err
	}
	// The index first: a member the node recorded is always found by a reaper of the node.
	if _, err := kv.Put(ctx, indexKey(b.id, channel, m.Session), nil); err != nil {
		return false, err
	}
	key := memberKey(channel, m.Session)
	var rev uint64 // of the pending record written
	for {
		if rev, err = kv.Create(ctx, key, pendingVal); err == nil {
			break
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, err
		}
		// Recorded already: replace it, moving the user count if the user changed.
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // left meanwhile: create it
		}
		if err != nil {
			return false, err
		}
		var old memberRecord
		_ = json.Unmarshal(e.Value(), &old)
		if old.User == m.User {
			// The counts stay: written without the mark.
			if _, err := kv.Update(ctx, key, val, e.Revision()); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			} else if err != nil {
				return false, err
			}
			return false, nil
		}
		if rev, err = kv.Update(ctx, key, pendingVal, e.Revision()); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		} else if err != nil {
			return false, err
		}
		// Another user: the user counts move.
		b.pr.recordStep("recorded")
		left, err := addUser(ctx, kv, channel, old.User, -1)
		if err != nil {
			return false, err
		}
		joined, err := addUser(ctx, kv, channel, m.User, 1)
		if err != nil {
			return false, err
		}
		b.pr.recordStep("user")
		if _, _, err = b.addCounts(ctx, kv, channel, 0, boolInt(joined)-boolInt(left)); err != nil {
			return false, err
		}
		b.pr.recordStep("counted")
		return false, b.settle(ctx, kv, channel, m, key, val, rev)
	}
	b.pr.recordStep("recorded")
	newUser, err := addUser(ctx, kv, channel, m.User, 1)
	if err != nil {
		return false, err
	}
	b.pr.recordStep("user")
	occupied, _, err = b.addCounts(ctx, kv, channel, 1, boolInt(newUser))
	if err != nil {
		return false, err
	}
	b.pr.recordStep("counted")
	return occupied, b.settle(ctx, kv, channel, m, key, val, rev)
}

// settle clears the pending mark of m's record, written at rev, once its counts were changed.
// The record is gone when a reaper's second claim of the lease removed it (with its counts: the
// node hung for 3 heartbeats or so while recording); the node records it again when it renews
// its lost lease.
func (b *Broker) settle(ctx context.Context, kv jetstream.KeyValue, channel string, m protocol.Member, key string, val []byte, rev uint64) error {
	_, err := kv.Update(ctx, key, val, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Only a reaper changes a member's record while its node writes it (the stripe orders the
		// node's own writes).
		b.log.Warn("jetstream: presence member reaped while it was recorded, its counts may be off by one", "channel", channel, "session", m.Session)
		return nil
	}
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Leave implements transports.Presence: a read and a compare-and-delete of the member, then the
// index and the two counts.
func (b *Broker) Leave(ctx context.Context, channel, session string) (bool, error) {
	kv, err := b.bucket()
	if err != nil {
		return false, err
	}
	ctx, cancel := presenceCtx(ctx, b)
	defer cancel()
	mu := b.pr.stripe(channel, session)
	mu.Lock()
	defer mu.Unlock()
	b.pr.mu.Lock()
	delete(b.pr.local[channel], session)
	if len(b.pr.local[channel]) == 0 {
		delete(b.pr.local, channel)
	}
	b.pr.mu.Unlock()
	done, err := b.pr.write(ctx)
	var vacated bool
	if err == nil {
		vacated, _, err = b.remove(ctx, kv, channel, session, nil, false)
		done()
	}
	if err != nil {
		// The node's truth is that the member left: the re-recorder removes it from the bucket
		// after the next renewal (without OnReap: this Leave reported the error).
		b.pr.mu.Lock()
		if b.pr.gone[channel] == nil {
			b.pr.gone[channel] = map[string]struct{}{}
		}
		b.pr.gone[channel][session] = struct{}{}
		b.pr.mu.Unlock()
		return false, unavailable("presence leave", err)
	}
	return vacated, nil
}

// errPending is remove's answer for a pending record it was told to leave.
var errPending = errors.New("jetstream: presence member still being recorded")

// remove deletes the member session of channel if match accepts its record (nil: any), with a
// compare-and-delete so that of concurrent removers one does it; then its index key and counts.
// With leavePending (a reaper's first claim of another node's lease), a pending record is left
// (errPending): its node is writing its counts (record).
func (b *Broker) remove(ctx context.Context, kv jetstream.KeyValue, channel, session string, match func(channel string, r memberRecord) bool, leavePending bool) (vacated bool, rec *memberRecord, err error) {
	key := memberKey(channel, session)
	for {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil, nil
		}
		if err != nil {
			return false, nil, err
		}
		var r memberRecord
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return false, nil, fmt.Errorf("member %s: %w", key, err)
		}
		if match != nil && !match(channel, r) {
			return false, nil, nil
		}
		if leavePending && r.Pending {
			return false, nil, errPending
		}
		if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Changed meanwhile: read it again (re-recorded under a new epoch, match no longer
			// takes it; its pending mark cleared by its node, it is still to be removed).
			continue
		} else if err != nil {
			return false, nil, err
		}
		if r.Owner == b.id {
			// Another node's index is left to its reaper, which skips what is gone.
			if err := kv.Delete(ctx, indexKey(r.Owner, channel, session)); err != nil {
				return false, nil, err
			}
		}
		lastUser, err := addUser(ctx, kv, channel, r.User, -1)
		if err != nil {
			return false, nil, err
		}
		_, vacated, err = b.addCounts(ctx, kv, channel, -1, -boolInt(lastUser))
		return vacated, &r, err
	}
}

// Members implements transports.Presence. A page lists the channel's member keys (headers
// only, O(members) small messages and O(members) memory for the session ids), sorts them, and
// reads the values of the page's members (limit reads, 16 at a time).
func (b *Broker) Members(ctx context.Context, channel, after string, limit int) ([]protocol.Member, bool, error) {
	kv, err := b.bucket()
	if err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, nil
	}
	ctx, cancel := boundCtx(ctx, b, b.listTimeout())
	defer cancel()
	pfx := "m." + transports.SafeName(channel) + "."
	names, err := b.listKeys(ctx, kv, pfx+"*", pfx, true, func(s string) bool { return s > after })
	if err != nil {
		return nil, false, unavailable("presence members", err)
	}
	more := len(names) > limit
	if more {
		names = names[:limit]
	}
	recs := make([]*memberRecord, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, s := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			e, err := kv.Get(ctx, memberKey(channel, s))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return // left since the listing
			}
			if err != nil {
				errs[i] = err
				return
			}
			var r memberRecord
			if errs[i] = json.Unmarshal(e.Value(), &r); errs[i] == nil {
				recs[i] = &r
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, false, unavailable("presence members", err)
	}
	out := make([]protocol.Member, 0, len(names))
	for _, r := range recs {
		if r != nil {
			out = append(out, r.Member)
		}
	}
	return out, more, nil
}

// Stats implements transports.Presence: one read of the channel's counts.
func (b *Broker) Stats(ctx context.Context, channel string) (protocol.PresenceStats, error) {
	kv, err := b.bucket()
	if err != nil {
		return protocol.PresenceStats{}, err
	}
	ctx, cancel := presenceCtx(ctx, b)
	defer cancel()
	e, err := kv.Get(ctx, chanKey(channel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return protocol.PresenceStats{}, nil
	}
	if err != nil {
		return protocol.PresenceStats{}, unavailable("presence stats", err)
	}
	c, u := parseCounts(e.Value())
	return protocol.PresenceStats{Connections: c, Users: u}, nil
}

// Channels implements transports.Presence: it lists every channel key (O(channels)), keeps
// those with the prefix after after, and reads the counts of a page.
func (b *Broker) Channels(ctx context.Context, prefix, after string, limit int) ([]protocol.ChannelStats, bool, error) {
	kv, err := b.bucket()
	if err != nil {
		return nil, false, err
	}
	if limit <= 0 {
		return nil, false, nil
	}
	ctx, cancel := boundCtx(ctx, b, b.listTimeout())
	defer cancel()
	names, err := b.listKeys(ctx, kv, "c.*", "c.", true, func(s string) bool { return strings.HasPrefix(s, prefix) && s > after })
	if err != nil {
		return nil, false, unavailable("presence channels", err)
	}
	var out []protocol.ChannelStats
	for _, name := range names {
		if len(out) == limit {
			return out, true, nil
		}
		e, err := kv.Get(ctx, chanKey(name))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, false, unavailable("presence channels", err)
		}
		c, u := parseCounts(e.Value())
		if c > 0 {
			out = append(out, protocol.ChannelStats{Channel: name, PresenceStats: protocol.PresenceStats{Connections: c, Users: u}})
		}
	}
	return out, false, nil
}

// OnReap implements transports.Presence.
func (b *Broker) OnReap(f func(channel string, m protocol.Member, vacated bool)) {
	b.pr.mu.Lock()
	b.pr.onReap = f
	b.pr.mu.Unlock()
	b.activate()
}

// renewLoop renews the node's lease every half Heartbeat (a lease is reaped when it did not
// change for leaseTTL: a renewal may be a whole heartbeat late). When the lease was lost
// (reaped, deleted, or the bucket lost) renew takes a new epoch and has the re-recorder write
// the node's members again.
//
// It writes nothing until the node takes part in presence (activate): a Broker that only
// publishes and subscribes (a service's) has no lease, reaps nothing and cleans nothing, even when
// it was given the node id of a gateway node.
func (b *Broker) renewLoop() {
	defer b.wg.Done()
	hb := b.cfg.Presence.Heartbeat
	t := time.NewTimer(hb / 2)
	defer t.Stop()
	activated := b.pr.activated
	for {
		wait := hb / 2
		if b.pr.active.Load() && !b.pr.paused.Load() && !b.renew() {
			wait = hb / 4 // not renewed (disconnected, or the server failed): try again soon
		}
		t.Reset(wait)
		select {
		case <-b.ctx.Done():
			return
		case <-activated:
			activated = nil // once
		case <-t.C:
		}
	}
}

// activate makes the node take part in presence (OnReap, or a first Join): its lease is written
// at once, and its reaper runs.
func (b *Broker) activate() {
	if !b.pr.active.Swap(true) {
		close(b.pr.activated)
	}
}

// leaseTTL is how long, in heartbeats, a lease's revision must stay unchanged, as seen by a
// reaper, before the reaper claims it: at the 6th pass after the one that first saw it.
const leaseTTL = 1.5

// leaseExpired reports whether a lease whose revision this node first saw at since, and has
// seen unchanged since, is to be claimed at now. Passes are a quarter heartbeat apart, and each reads the clock
// after listing the leases, which takes its time: the eighth of a heartbeat of tolerance keeps
// a pass that reads it a little early from moving the claim to the next pass. A live node
// renewing every half heartbeat may thus be late by about a heartbeat (its next renewal must
// be seen by the claiming pass, leaseTTL after the pass that saw the previous one).
func leaseExpired(now, since time.Time, hb time.Duration) bool {
	return now.Sub(since) >= time.Duration(leaseTTL*float64(hb))-hb/8
}

// reapLoop looks for expired leases of other nodes every quarter Heartbeat (a reaping pass): a
// node's members are removed at most a pass (to see its last renewal) and leaseTTL after it,
// 1.75 heartbeats, plus the reaping's round trips.
func (b *Broker) reapLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.Presence.Heartbeat / 4)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			if b.pr.active.Load() && !b.pr.paused.Load() {
				b.reapPass()
			}
		}
	}
}

// renew rewrites the lease with a compare-and-set on its last revision, and reports whether it
// did. A mismatch (a reaper claimed it, or it is gone) or a lost bucket starts a new epoch and a
// re-recording.
func (b *Broker) renew() bool {
	if !b.nc.IsConnected() {
		return false
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
	defer cancel()
	b.pr.mu.Lock()
	kv, epoch, rev := b.pr.kv, b.pr.epoch, b.pr.rev
	b.pr.mu.Unlock()
	if kv == nil {
		var err error
		if kv, err = b.ensureBucket(ctx); err != nil {
			b.log.Warn("jetstream: presence bucket not ready, will retry", "error", err)
			return false
		}
	}
	var err error
	var nrev uint64
	if rev == 0 {
		// A new lease (Start, or the old one lost): Put, which also takes over the lease of an
		// earlier process with the same node id; that one's members are cleaned below.
		nrev, err = kv.Put(ctx, leaseKey(b.id), []byte(epoch))
	} else {
		nrev, err = kv.Update(ctx, leaseKey(b.id), []byte(epoch), rev)
	}
	switch {
	case err == nil:
		b.pr.mu.Lock()
		b.pr.rev = nrev
		b.pr.mu.Unlock()
		if rev == 0 {
			b.wakeRerecord()
		}
		b.pr.mu.Lock()
		pending := len(b.pr.gone) > 0
		b.pr.mu.Unlock()
		if pending {
			select {
			case b.pr.retryGone <- struct{}{}:
			default:
			}
		}
		return true
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		b.log.Warn("jetstream: presence lease lost, recording the node's members again", "node", b.id)
	default:
		if _, gerr := b.js.KeyValue(ctx, b.bucketName()); !errors.Is(gerr, jetstream.ErrBucketNotFound) {
			b.log.Warn("jetstream: cannot renew the presence lease", "error", err)
			return false
		}
		b.log.Warn("jetstream: presence bucket is gone, creating it again", "bucket", b.bucketName())
		if _, err := b.ensureBucket(ctx); err != nil {
			b.log.Warn("jetstream: cannot create the presence bucket", "error", err)
			b.newEpoch()
			return false
		}
	}
	b.newEpoch()
	return b.renew()
}

// newEpoch forgets the lease; the next renewal writes one with a new epoch.
func (b *Broker) newEpoch() {
	b.pr.mu.Lock()
	b.pr.epoch, b.pr.rev = randomID(), 0
	b.pr.mu.Unlock()
}

func (b *Broker) wakeRerecord() {
	select {
	case b.pr.rerecord <- struct{}{}:
	default:
	}
}

// rerecordLoop writes the node's members again under its current epoch whenever a new lease was
// written, then removes what the node recorded under earlier epochs (an earlier process with the
// same id, or its own members a reaper did not get to), reporting those through OnReap.
func (b *Broker) rerecordLoop() {
	defer b.wg.Done()
	var retry <-chan time.Time
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.pr.rerecord:
		case <-retry:
		case <-b.pr.retryGone:
			b.removeGone()
			continue
		}
		retry = nil
		if err := b.rerecord(); err != nil && b.ctx.Err() == nil {
			b.log.Warn("jetstream: recording the node's presence again failed, will retry", "error", err)
			retry = time.After(b.cfg.Presence.Heartbeat / 2)
		}
	}
}

func (b *Broker) rerecord() error {
	b.pr.mu.Lock()
	kv, epoch := b.pr.kv, b.pr.epoch
	type entry struct {
		channel string
		m       protocol.Member
	}
	var all []entry
	for ch, ms := range b.pr.local {
		for _, m := range ms {
			all = append(all, entry{ch, m})
		}
	}
	b.pr.mu.Unlock()
	for _, e := range all {
		ctx, cancel := presenceCtx(context.Background(), b)
		mu := b.pr.stripe(e.channel, e.m.Session)
		mu.Lock()
		b.pr.mu.Lock()
		m, still := b.pr.local[e.channel][e.m.Session]
		b.pr.mu.Unlock()
		var err error
		if still { // not left meanwhile
			_, err = b.record(ctx, kv, e.channel, m, epoch)
		}
		mu.Unlock()
		cancel()
		if err != nil {
			return err
		}
	}
	// What the node recorded under older epochs and holds no more (left while the lease was
	// lost, or an earlier process's with the same id) is removed, through OnReap.
	_, err := b.reapNode(kv, b.id, false, func(channel string, r memberRecord) bool {
		if r.Epoch == epoch {
			return false
		}
		b.pr.mu.Lock()
		_, held := b.pr.local[channel][r.Session]
		b.pr.mu.Unlock()
		return !held
	})
	return err
}

// removeGone removes from the bucket the members whose Leave failed, unless they joined again.
func (b *Broker) removeGone() {
	b.pr.mu.Lock()
	kv := b.pr.kv
	type entry struct{ channel, session string }
	var all []entry
	for ch, ss := range b.pr.gone {
		for s := range ss {
			all = append(all, entry{ch, s})
		}
	}
	b.pr.mu.Unlock()
	mine := func(_ string, r memberRecord) bool { return r.Owner == b.id }
	for _, e := range all {
		mu := b.pr.stripe(e.channel, e.session)
		mu.Lock()
		b.pr.mu.Lock()
		_, still := b.pr.gone[e.channel][e.session]
		b.pr.mu.Unlock()
		var err error
		if still {
			ctx, cancel := presenceCtx(context.Background(), b)
			_, _, err = b.remove(ctx, kv, e.channel, e.session, mine, false)
			cancel()
		}
		if err == nil {
			b.pr.mu.Lock()
			b.pr.unmarkGone(e.channel, e.session)
			b.pr.mu.Unlock()
		}
		mu.Unlock()
		if err != nil {
			return // the next renewal tries again
		}
	}
}

// reapPass reads every lease; a lease of another node whose revision did not change for leaseTTL
// heartbeats (as seen by this node) is claimed by a compare-and-set, and its node's members are
// removed. Of several reapers one wins the claim; one that dies while reaping leaves a claim that
// stops changing, which is claimed again.
func (b *Broker) reapPass() {
	b.pr.mu.Lock()
	kv := b.pr.kv
	b.pr.mu.Unlock()
	if kv == nil || !b.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.PublishTimeout)
	defer cancel()
	// Not exact: a lease that a listing misses because it was rewritten meanwhile is a live
	// node's (or one being claimed); missing it only restarts its time in b.pr.seen. The pass
	// runs every quarter heartbeat on every node, and leases are rewritten all the time.
	nodes, err := b.listKeys(ctx, kv, "l.*", "l.", false, func(string) bool { return true })
	if err != nil {
		b.log.Debug("jetstream: presence reaping pass: cannot list the leases", "error", err)
		return
	}
	now := time.Now()
	if now.Sub(b.pr.lastPass) > b.cfg.Presence.Heartbeat/2 {
		// This node did not look for a while (it was cut off from the server, the server was
		// down, or a reaping took long): the leases it saw may not have been renewable meanwhile.
		// Their time starts again now, so that an outage reaps no one.
		clear(b.pr.seen)
	}
	b.pr.lastPass = now
	if len(nodes) > 0 && nodes[0] == b.id && now.Sub(b.pr.swept) >= sweepEvery*b.cfg.Presence.Heartbeat {
		// One node, the first by id, sweeps (its lease is listed: it is alive).
		b.pr.swept = now
		sctx, scancel := boundCtx(b.ctx, b, b.listTimeout())
		err := b.sweep(sctx, kv, now.Add(-sweepEvery*b.cfg.Presence.Heartbeat))
		scancel()
		if err != nil && b.ctx.Err() == nil {
			b.log.Warn("jetstream: removing old presence delete markers failed", "error", err)
		}
	}
	alive := map[string]bool{}
	for _, node := range nodes {
		if node == b.id {
			continue
		}
		alive[node] = true
		e, err := kv.Get(ctx, leaseKey(node))
		if err != nil {
			continue
		}
		s, ok := b.pr.seen[node]
		if !ok || s.rev != e.Revision() {
			b.pr.seen[node] = leaseSeen{rev: e.Revision(), since: now}
			continue
		}
		if !leaseExpired(now, s.since, b.cfg.Presence.Heartbeat) {
			continue
		}
		epoch := strings.TrimPrefix(string(e.Value()), "r")
		claim, err := kv.Update(ctx, leaseKey(node), []byte("r"+epoch), e.Revision())
		if err != nil {
			continue // another reaper won, or the node came back
		}
		b.log.Info("jetstream: presence lease expired, removing the node's members", "node", node)
		// A claim again (the value is a claim already: the node still did not renew, or a reaper
		// died while reaping) also removes the members the node was still recording.
		again := strings.HasPrefix(string(e.Value()), "r")
		left, err := b.reapNode(kv, node, !again, func(_ string, r memberRecord) bool { return r.Epoch == epoch })
		if err != nil {
			b.log.Warn("jetstream: reaping a node's presence failed; another pass will", "node", node, "error", err)
			continue
		}
		if f := b.pr.reaped.Load(); f != nil {
			(*f)(node)
		}
		if left > 0 {
			// The claim stays: it stops changing and is claimed again (1.5 heartbeats), unless the
			// node renews (it lives, and its Joins complete).
			b.log.Info("jetstream: presence members still being recorded by an expired node, left until its lease is claimed again", "node", node, "members", left)
			continue
		}
		// The pass's ctx may be spent by a long reaping. Should the delete fail, the claim stops
		// changing and is claimed again, with nothing left to remove.
		dctx, dcancel := presenceCtx(context.Background(), b)
		_ = kv.Delete(dctx, leaseKey(node), jetstream.LastRevision(claim))
		dcancel()
		delete(b.pr.seen, node)
	}
	for node := range b.pr.seen {
		if !alive[node] {
			delete(b.pr.seen, node)
		}
	}
}

// sweepEvery is how often, in heartbeats, old delete markers are removed, and how old they are.
const sweepEvery = 10

// sweep removes the delete markers written before limit. A deleted key keeps a marker in the
// bucket, which listings read (a channel where sessions come and go would list every session it
// ever had); each is purged up to its own revision, so that a key written again since is kept.
// Its cost is a headers-only read of the whole bucket and a purge per marker, every sweepEvery
// heartbeats on one node.
func (b *Broker) sweep(ctx context.Context, kv jetstream.KeyValue, limit time.Time) error {
	// Not exact: a marker it misses is removed by a later sweep (the bucket's leases are
	// rewritten all the time, so an exact listing of it would mostly look for what it missed).
	all, err := b.listKVAs(ctx, kv, ">", false, true, false)
	if err != nil {
		return err
	}
	var old []kvEntry
	for _, e := range all {
		if e.deleted && e.created.Before(limit) {
			old = append(old, e)
		}
	}
	if len(old) == 0 {
		return ctx.Err()
	}
	st, err := b.js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return err
	}
	for _, e := range old {
		err := st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+kv.Bucket()+"."+e.key), jetstream.WithPurgeSequence(e.rev+1))
		if err != nil {
			return err
		}
	}
	return nil
}

// reapNode removes the members in node's index whose record match accepts, and the index keys of
// members that are gone, calling OnReap for each member it removed. With leavePending it leaves
// the pending records (errPending) and reports how many.
func (b *Broker) reapNode(kv jetstream.KeyValue, node string, leavePending bool, match func(channel string, r memberRecord) bool) (left int, err error) {
	ctx, cancel := boundCtx(context.Background(), b, b.listTimeout())
	pfx := "n." + transports.SafeName(node) + "."
	entries, err := b.listKV(ctx, kv, pfx+">", false, false)
	cancel()
	if err != nil {
		return 0, err
	}
	b.pr.mu.Lock()
	onReap := b.pr.onReap
	b.pr.mu.Unlock()
	for _, e := range entries {
		k := e.key
		c, s, ok := strings.Cut(strings.TrimPrefix(k, pfx), ".")
		channel, ok1 := unsafeName(c)
		session, ok2 := unsafeName(s)
		if !ok || !ok1 || !ok2 {
			continue
		}
		ctx, cancel := presenceCtx(context.Background(), b)
		err := b.reapOne(ctx, kv, k, node, channel, session, leavePending, match, onReap)
		cancel()
		if errors.Is(err, errPending) {
			left++
			continue
		}
		if err != nil {
			return left, err
		}
	}
	return left, nil
}

func (b *Broker) reapOne(ctx context.Context, kv jetstream.KeyValue, key, node, channel, session string, leavePending bool, match func(channel string, r memberRecord) bool, onReap func(string, protocol.Member, bool)) error {
	if node == b.id {
		mu := b.pr.stripe(channel, session)
		mu.Lock()
		defer mu.Unlock()
	}
	// The index key's revision first: if the node writes it again meanwhile (it re-records),
	// the compare-and-delete below leaves it.
	ie, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	owned := func(ch string, r memberRecord) bool { return r.Owner == node && match(ch, r) }
	vacated, rec, err := b.remove(ctx, kv, channel, session, owned, leavePending)
	if err != nil {
		return err
	}
	if rec != nil && onReap != nil {
		onReap(channel, rec.Member, vacated)
	}
	if rec == nil {
		// Not removed: keep the index key while the node still owns the member.
		e, err := kv.Get(ctx, memberKey(channel, session))
		if err == nil {
			var r memberRecord
			if json.Unmarshal(e.Value(), &r) == nil && r.Owner == node {
				return nil
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	err = kv.Delete(ctx, key, jetstream.LastRevision(ie.Revision()))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return err
}
