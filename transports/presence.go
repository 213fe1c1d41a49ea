package transports

import (
	"context"
	"time"

	"github.com/wsgateway/gateway/protocol"
)

// Presence is implemented by brokers that keep, across every node that shares the broker, who is
// in which channel: the connections (members) that subscribed to it, with their user and the
// node that holds them. Each broker keeps it the way it does best (memory: in the process;
// redis: hashes and sorted sets with expiry; jetstream: a KV bucket; ...); the conformance suite
// in transporttest (RunPresence) holds every implementation to the same contract.
//
// Ownership and liveness: a node records only its own connections (Member.Node is the node's
// id, the same for every member it joins). The broker keeps a lease per node that it renews
// while it is started (twice per PresenceConfig.Heartbeat); the members of a node whose lease
// ran out (1.5 heartbeats without renewal: the node died or lost its broker; a live node's
// renewal may thus be a whole heartbeat late) are removed by the next reaping pass, every
// quarter heartbeat, and the function given to OnReap is called for each of them on exactly one
// node of the cluster. So a node that stops loses its members within 1.75 heartbeats of its
// stop, plus the reaping's round trips, on memory, redis, jetstream (1.5 heartbeats from the
// pass that saw its last renewal) and kafka (from the moment a reaper read its last heartbeat);
// transporttest.RunReapBound holds them to 2 (ReapBound); core NATS within 1.75 heartbeats of
// the death, plus a sync where the dead node owned the channel (docs/brokers/nats.md). A node whose
// lease ran out while it was alive (a network cut), or whose members the broker lost (a server
// restart without persistence), has them recorded again when it is heard again: the broker's
// presence keeps its own record of what the node joined and left through it (the node's truth)
// and records it again by itself, so the gateway does nothing and no ghost comes back.
//
// Every method is safe for concurrent use and bounded by ctx. Before Start, and after Close,
// they fail as the broker's other methods do (ErrNotStarted, ErrClosed).
type Presence interface {
	// Join records m in channel. occupied is true when the channel had no member in the whole
	// cluster before (so that one node, and only one, announces channel_occupied). Joining a
	// session that is recorded already replaces its entry and reports occupied false.
	Join(ctx context.Context, channel string, m protocol.Member) (occupied bool, err error)

	// Leave removes the member with session id session from channel. vacated is true when it
	// was the channel's last member in the cluster. Leaving a session that is not recorded does
	// nothing and reports vacated false.
	//
	// A Leave that returns an error other than ErrNotStarted and ErrClosed has all the same
	// removed the member from the node's own record (the node's truth): the broker removes it
	// from the cluster's record later (memory: at once; redis and jetstream: after the node's
	// next renewal; kafka: the reconcile after its next heartbeat; nats: the node's next push
	// of its members to the channel's owner) and reports nothing then, neither to the caller nor
	// to OnReap. The caller announces the leave when Leave returns, error or not; whether it
	// vacated the channel is not known after an error. After ErrNotStarted or ErrClosed nothing
	// was removed: the node is going away, and its members are reaped by another node.
	Leave(ctx context.Context, channel, session string) (vacated bool, err error)

	// Members returns at most limit members of channel, ordered by session id, those after the
	// session id after ("" from the start); more is true when there are members after the last
	// one returned. A page costs O(limit), not O(members), wherever the broker allows it.
	Members(ctx context.Context, channel, after string, limit int) (members []protocol.Member, more bool, err error)

	// Stats returns the number of members (connections) of channel and of distinct users among
	// them; an anonymous member (User "") counts as a user of its own.
	Stats(ctx context.Context, channel string) (protocol.PresenceStats, error)

	// Channels returns at most limit channels that have members, whose name starts with prefix,
	// ordered by name, those after after; with their stats; more as for Members.
	Channels(ctx context.Context, prefix, after string, limit int) (channels []protocol.ChannelStats, more bool, err error)

	// OnReap sets the function called for each member removed because its node's lease ran out,
	// once in the cluster (on one node), with vacated as for Leave. Set it before Start; it is
	// called on a goroutine of the broker's and must not block for long.
	OnReap(func(channel string, m protocol.Member, vacated bool))
}

// PresenceConfig are the settings of a broker's presence.
type PresenceConfig struct {
	// Heartbeat is the presence heartbeat: a node renews its lease twice per heartbeat. A node
	// that stops (SIGKILL) loses its members within 1.75 heartbeats plus the reaping's round
	// trips on memory, redis, jetstream and kafka (Presence; core NATS 1.75 and a sync where the
	// dead node owned the channel, docs/brokers/nats.md).
	// Default DefaultPresenceHeartbeat.
	Heartbeat time.Duration
}

// DefaultPresenceHeartbeat is the default PresenceConfig.Heartbeat.
const DefaultPresenceHeartbeat = 5 * time.Second
