// Package roster is the in-memory index of presence that brokers keeping members in the process
// share (memory, and the nodes' own views on core NATS and Kafka): per channel its members by
// session id, with what the broker attaches to each entry (T), sorted for paging, and its user
// counts; the channels sorted by name. A Roster is not safe for concurrent use: its broker
// guards it with a lock of its own.
package roster

import (
	"sort"
	"strings"

	"github.com/wsgateway/gateway/protocol"
)

// Roster is the members of every channel of one namespace. The zero value is empty and ready.
type Roster[T any] struct {
	channels map[string]*channel[T]
	names    []string // the channels' names, sorted
}

// Entry is a member and what its broker keeps with it.
type Entry[T any] struct {
	M protocol.Member
	X T
}

type channel[T any] struct {
	members map[string]Entry[T] // by session id
	order   []string            // session ids, sorted
	users   map[string]int      // members per (non-empty) user id
	anon    int                 // members without a user id
}

// Put records e in ch and reports whether ch had no member before (occupied). An entry with
// e's session that was there is replaced and returned as old (had true).
func (r *Roster[T]) Put(ch string, e Entry[T]) (occupied bool, old Entry[T], had bool) {
	if r.channels == nil {
		r.channels = map[string]*channel[T]{}
	}
	c := r.channels[ch]
	if c == nil {
		occupied = true
		c = &channel[T]{members: map[string]Entry[T]{}, users: map[string]int{}}
		r.channels[ch] = c
		r.names = insert(r.names, ch)
	}
	if old, had = c.members[e.M.Session]; had {
		c.forgetUser(old.M.User)
	} else {
		c.order = insert(c.order, e.M.Session)
	}
	c.members[e.M.Session] = e
	if e.M.User == "" {
		c.anon++
	} else {
		c.users[e.M.User]++
	}
	return occupied, old, had
}

// Get returns the entry of session in ch.
func (r *Roster[T]) Get(ch, session string) (Entry[T], bool) {
	c := r.channels[ch]
	if c == nil {
		return Entry[T]{}, false
	}
	e, ok := c.members[session]
	return e, ok
}

// Remove takes session out of ch and returns its entry (ok false when it was not there);
// vacated is true when it was ch's last member.
func (r *Roster[T]) Remove(ch, session string) (e Entry[T], ok, vacated bool) {
	c := r.channels[ch]
	if c == nil {
		return e, false, false
	}
	if e, ok = c.members[session]; !ok {
		return e, false, false
	}
	delete(c.members, session)
	c.forgetUser(e.M.User)
	c.order = remove(c.order, session)
	if len(c.members) > 0 {
		return e, true, false
	}
	delete(r.channels, ch)
	r.names = remove(r.names, ch)
	return e, true, true
}

// Members returns at most limit members of ch after the session id after, ordered by session id,
// and whether there are more: O(log members + limit).
func (r *Roster[T]) Members(ch, after string, limit int) ([]protocol.Member, bool) {
	c := r.channels[ch]
	if c == nil || limit <= 0 {
		return nil, false
	}
	i := sort.SearchStrings(c.order, after)
	if i < len(c.order) && c.order[i] == after && after != "" {
		i++
	}
	end := min(i+limit, len(c.order))
	out := make([]protocol.Member, 0, end-i)
	for _, id := range c.order[i:end] {
		out = append(out, c.members[id].M)
	}
	return out, end < len(c.order)
}

// Each calls fn for every entry of ch, in session order, until fn returns false. fn must not
// change the roster.
func (r *Roster[T]) Each(ch string, fn func(Entry[T]) bool) {
	c := r.channels[ch]
	if c == nil {
		return
	}
	for _, id := range c.order {
		if !fn(c.members[id]) {
			return
		}
	}
}

// Stats returns ch's counts: members, and distinct users (an anonymous member counts as one).
func (r *Roster[T]) Stats(ch string) protocol.PresenceStats {
	c := r.channels[ch]
	if c == nil {
		return protocol.PresenceStats{}
	}
	return protocol.PresenceStats{Connections: len(c.members), Users: len(c.users) + c.anon}
}

// Channels returns at most limit channels whose name starts with prefix, after after, ordered
// by name, with their stats, and whether there are more: O(log channels + limit).
func (r *Roster[T]) Channels(prefix, after string, limit int) ([]protocol.ChannelStats, bool) {
	from := prefix
	if after >= from {
		from = after + "\x00" // the first name after after
	}
	var out []protocol.ChannelStats
	for i := sort.SearchStrings(r.names, from); i < len(r.names) && strings.HasPrefix(r.names[i], prefix); i++ {
		if len(out) == limit {
			return out, true
		}
		out = append(out, protocol.ChannelStats{Channel: r.names[i], PresenceStats: r.Stats(r.names[i])})
	}
	return out, false
}

// Names returns the channels that have members, sorted. The slice is the roster's: read it
// before the roster changes.
func (r *Roster[T]) Names() []string { return r.names }

func (c *channel[T]) forgetUser(user string) {
	if user == "" {
		c.anon--
		return
	}
	if c.users[user]--; c.users[user] <= 0 {
		delete(c.users, user)
	}
}

func insert(s []string, v string) []string {
	i := sort.SearchStrings(s, v)
	s = append(s, "")
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

func remove(s []string, v string) []string {
	if i := sort.SearchStrings(s, v); i < len(s) && s[i] == v {
		return append(s[:i], s[i+1:]...)
	}
	return s
}
